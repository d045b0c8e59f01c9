"""select_series: the sagittal T1W/T2W choice over header attributes, every refusal with its reason."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pydicom
import pytest

from spinedx.studyindex import SelectionOptions, SeriesHeader, plane_of, weighting_from_timing
from spinedx.studyindex import select_t1_t2_series as select_series

SAG = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
AX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
COR = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

T1 = SeriesHeader("1.1", 3, "SAG T1 SE", "MR", SAG, 15.0, 400.0, None, ("SE",), ("NONE",), (),
                  ("ORIGINAL", "PRIMARY", "OTHER"), "", 13, 13, "9.9")
T2 = SeriesHeader("1.2", 4, "SAG T2 FSE", "MR", SAG, 90.0, 3200.0, None, ("SE",), ("SK",), (),
                  ("ORIGINAL", "PRIMARY", "OTHER"), "", 13, 13, "9.9")


def _verdict(sel, uid):
    return next(v for v in sel.verdicts if v.series_uid == uid)


def test_paper_pair_is_chosen() -> None:
    sel = select_series([T2, T1])
    assert sel.status == "ok"
    assert sel.t1 is T1 and sel.t2 is T2
    assert [v.series_number for v in sel.verdicts] == [3, 4]
    assert _verdict(sel, "1.1").chosen and _verdict(sel, "1.2").chosen


@pytest.mark.parametrize(("series", "reason"), [
    (replace(T2, series_uid="x", series_number=1, description="LOC", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
              n_instances=3, n_frames=3), "localiser (ImageType LOCALIZER)"),
    (replace(T2, series_uid="x", series_number=1, description="3-plane loc"), "localiser (description"),
    (replace(T2, series_uid="x", description="SAG STIR", scanning_sequence=("IR",), inversion_time=150.0,
              echo_time=60.0, repetition_time=3500.0), "fat-suppressed"),
    (replace(T2, series_uid="x", description="SAG T2 FS", scan_options=("FS",)), "ScanOptions FS"),
    (replace(T2, series_uid="x", description="AX T2", orientation=AX), "axial plane, not sagittal"),
    (replace(T2, series_uid="x", description="COR T2", orientation=COR), "coronal plane, not sagittal"),
    (replace(T1, series_uid="x", description="SAG T1 +C", contrast_agent="Gadovist"), "ContrastBolusAgent 'Gadovist'"),
    (replace(T1, series_uid="x", description="SAG T1 POST"), "contrast-enhanced (description"),
    (replace(T2, series_uid="x", description="SAG T2 MPR", image_type=("DERIVED", "SECONDARY", "MPR")), "derived"),
    (replace(T2, series_uid="x", modality="CT"), "not an MR image series (Modality CT) (--allow-modality CT"),
    (replace(T2, series_uid="x", modality="SEG"), "not an image series (Modality SEG)"),
    (replace(T2, series_uid="x", modality="", sop_class_uid="1.2.840.10008.5.1.4.1.1.2"),
     "not an MR image series (no Modality; SOP class CT Image Storage)"),
    (replace(T2, series_uid="x", n_instances=2, n_frames=2), "2 image(s)"),
    (replace(T2, series_uid="x", description="SAG T1"), "says T1W; check the series"),
    (replace(T2, series_uid="x", description="SAG PD", echo_time=30.0, repetition_time=2500.0), "PD weighting"),
])
def test_refused_series_say_why(series: SeriesHeader, reason: str) -> None:
    sel = select_series([T1, T2, series])
    assert sel.status == "ok", sel.to_dict()
    assert sel.t1 is T1 and sel.t2 is T2
    v = _verdict(sel, "x")
    assert not v.chosen and v.rank is None
    assert any(reason in r for r in v.reasons), v.reasons


def test_two_equal_candidates_are_ambiguous_not_guessed() -> None:
    again = replace(T2, series_uid="1.3", series_number=7)
    sel = select_series([T1, T2, again])
    assert sel.status == "ambiguous"
    assert sel.t2 is None and sel.t1 is T1
    assert sel.ambiguous == {"t2": ["1.2", "1.3"]}
    assert all("ambiguous" in " ".join(_verdict(sel, u).reasons) for u in ("1.2", "1.3"))


def test_stronger_evidence_wins_over_description_only() -> None:
    vague = replace(T2, series_uid="1.3", series_number=7, description="sag spine")  # TE/TR only
    sel = select_series([T1, T2, vague])
    assert sel.status == "ok" and sel.t2 is T2
    assert any("better T2W candidate" in r for r in _verdict(sel, "1.3").reasons)


def test_allowed_fat_sat_is_used_only_when_nothing_better() -> None:
    stir = replace(T2, series_uid="1.5", description="SAG STIR", scanning_sequence=("IR",), inversion_time=150.0)
    assert select_series([T1, stir]).status == "incomplete"
    opts = SelectionOptions(allow_fat_suppressed=True)
    assert select_series([T1, stir], opts).t2 is stir
    assert select_series([T1, T2, stir], opts).t2 is T2


def test_allow_modality_accepts_that_image_modality_only() -> None:
    ct1, ct2 = replace(T1, modality="CT"), replace(T2, modality="CT")
    assert select_series([ct1, ct2]).status == "incomplete"
    sel = select_series([ct1, ct2], SelectionOptions(allow_modality=("ct",)))
    assert sel.status == "ok" and sel.t1 is ct1
    assert "Modality CT: accepted (--allow-modality CT)" in _verdict(sel, "1.1").reasons
    with pytest.raises(ValueError, match="SEG objects are not images"):
        SelectionOptions(allow_modality=("SEG",))
    with pytest.raises(ValueError, match="not a DICOM modality code"):
        SelectionOptions(allow_modality=("C T",))
    assert SelectionOptions(allow_modality=("mr", "CT", "ct")).allow_modality == ("CT",)


def test_missing_role_is_incomplete() -> None:
    sel = select_series([T2])
    assert sel.status == "incomplete" and sel.missing == ["t1"]
    assert "T1W: none" in sel.summary()


def test_headers_without_timing_use_the_description() -> None:
    # QIDO-RS series results carry no TE/TR and no orientation
    t1 = replace(T1, orientation=None, echo_time=None, repetition_time=None)
    t2 = replace(T2, orientation=None, echo_time=None, repetition_time=None)
    sel = select_series([t1, t2])
    assert sel.status == "ok"
    assert any("from the description only" in r for r in _verdict(sel, "1.1").reasons)
    assert any("plane sagittal from the description" in r for r in _verdict(sel, "1.1").reasons)


def test_plane_and_weighting_rules() -> None:
    assert plane_of(SAG) == "sagittal" and plane_of(AX) == "axial" and plane_of(COR) == "coronal"
    assert plane_of(None) is None
    assert weighting_from_timing(T1) == "T1" and weighting_from_timing(T2) == "T2"
    flair = replace(T1, scanning_sequence=("IR",), inversion_time=860.0, echo_time=9.0, repetition_time=2200.0)
    assert weighting_from_timing(flair) == "T1"
    assert weighting_from_timing(replace(T1, echo_time=None)) is None


def test_different_frames_of_reference_are_noted() -> None:
    sel = select_series([T1, replace(T2, frame_of_reference_uid="8.8")])
    assert sel.status == "ok" and "FrameOfReferenceUID" in sel.notes[0]


def test_header_from_dataset_and_from_dicom_json_agree(synth_cohort) -> None:
    path = next((synth_cohort / "dicom").rglob("T2/IM0001.dcm"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    a = SeriesHeader.from_dataset(ds, n_instances=13)
    b = SeriesHeader.from_json(ds.to_json_dict(), n_instances=13)
    assert a == b
    assert a.description.startswith("SAG T2 FSE") and a.echo_time == 90.0 and a.repetition_time == 3200.0
    assert plane_of(a.orientation) == "sagittal" and a.sequence_variant == ("SK",)


def test_header_from_qido_series_result() -> None:
    qido = {"0020000E": {"vr": "UI", "Value": ["1.2.3"]}, "00200011": {"vr": "IS", "Value": [5]},
            "0008103E": {"vr": "LO", "Value": ["t2_tse_sag"]}, "00080060": {"vr": "CS", "Value": ["MR"]},
            "00201209": {"vr": "IS", "Value": [15]}}
    h = SeriesHeader.from_json(qido)
    assert (h.series_uid, h.series_number, h.n_instances, h.orientation) == ("1.2.3", 5, 15, None)
    sel = select_series([h])
    assert sel.verdicts[0].role == "t2" and sel.missing == ["t1"]


def test_enhanced_mr_functional_groups() -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription, ds.NumberOfFrames = "5.5", "MR", "sag t2", 15
    shared = Dataset()
    po, echo, timing = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = list(SAG)
    echo.EffectiveEchoTime = 100.0
    timing.RepetitionTime = 3000.0
    shared.PlaneOrientationSequence = Sequence([po])
    shared.MREchoSequence = Sequence([echo])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    h = SeriesHeader.from_dataset(ds)
    assert (h.echo_time, h.repetition_time, h.n_frames) == (100.0, 3000.0, 15)
    assert h == SeriesHeader.from_json(ds.to_json_dict(), n_instances=1)


def test_import_pulls_in_neither_torch_nor_simpleitk() -> None:
    code = "import sys, spinedx.studyindex as s; print('torch' in sys.modules, 'SimpleITK' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
