"""DICOM results: the SR, the heatmap Parametric Map and the Secondary Captures validate, read back to the same values
with two readers (highdicom, dcmtk's dsrdump / pydicom), reference the right stored T2 images and copy only the
identifiers; the SR has the shape a PACS viewer (OHIF v3) shows legibly, and states the prediction's decision."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomfixtures import write_series

from spinedx.errors import SpinedxError
from spinedx.explain import DEFAULT_METHOD, METHODS, method_caption
from spinedx.interop import dciodvfy, read_sr, write_dicom_results
from spinedx.interop.geometry import locate_box, orientation_letters, stored_planes
from spinedx.interop.identity import COPIED_KEYWORDS
from spinedx.io import read_image

from .resultcontent import make_content


@pytest.fixture(scope="module")
def written(case: dict, module_tmp: Path) -> tuple:
    content = make_content(case["slices"], case["box"])
    out = module_tmp
    res = write_dicom_results(None, case["t1"], case["t2"], out, content=content)
    return content, res


def test_objects_validate_with_dciodvfy(written: tuple) -> None:
    _, res = written
    assert len(res.overlays) == 3 and res.pmap is not None
    assert res.files == [res.sr, res.pmap, *res.overlays]
    for path in res.files:
        v = dciodvfy(path)
        assert v.errors == [], (path.name, v.errors)
    assert dciodvfy(res.sr).iod == "Comprehensive3DSR"
    assert dciodvfy(res.pmap).iod == "ParametricMap"
    assert dciodvfy(res.overlays[0]).iod == "SCImage"
    # the only warnings: the (declared) private coding scheme on the SR; on the map, highdicom's Image Type value 4
    # QUANTITY, a term dicom3tools' dictionary does not list
    assert all("99SPINEDX" in w for w in dciodvfy(res.sr).warnings)
    assert all("<QUANTITY>" in w for w in dciodvfy(res.pmap).warnings)


def test_sr_reads_back_with_highdicom(written: tuple, case: dict) -> None:
    content, res = written
    s = read_sr(res.sr)
    assert s.n_groups == len(content.slice_index) == 3
    assert s.probability == pytest.approx(content.probability, rel=1e-15)  # stored in %, FD beside the DS
    assert s.probability_uncalibrated is None  # this content states no calibration
    assert s.spread == {"Fold-model SD": pytest.approx(float(np.std(content.per_model)), rel=1e-12)}
    assert s.decision == "malignant" and s.classification == ("21594007", "SCT", "Malignant")
    assert s.finding_type == s.classification and s.refer_reasons == []
    assert s.comments == ["spinedx: MALIGNANT", "trained on a synthetic cohort; research use only"]
    assert s.algorithm["name"] == content.algorithm.name and s.algorithm["version"] == "0.1.0"
    assert s.model_hash == "ab" * 32
    assert "research use only, not for clinical decisions" in s.algorithm["parameters"]
    assert [uid for uid, _, _ in s.regions] == res.referenced
    x0, y0, x1, y1 = case["box"]
    for _, frame, poly in s.regions:
        assert frame is None
        np.testing.assert_array_equal(poly, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    src = pydicom.dcmread(next(Path(case["t2"]).iterdir()), stop_before_pixels=True)
    assert s.study_instance_uid == src.StudyInstanceUID and s.patient_id == src.PatientID
    sr = pydicom.dcmread(res.sr)
    assert sr.SeriesInstanceUID not in {src.SeriesInstanceUID}
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert "research use only" in sr.SeriesDescription
    assert s.predecessors == [] and "PredecessorDocumentsSequence" not in sr


def test_sr_reads_back_with_dsrdump(written: tuple) -> None:
    """dcmtk's SR reader (a second implementation) finds the same probability, decision and boxes."""
    content, res = written
    out = subprocess.run(["dsrdump", "+Pc", "+Pl", "+Pu", str(res.sr)], capture_output=True, text=True,
                         check=True).stdout
    nums = re.findall(r'NUM:\(111047,DCM,"Probability of cancer"\)="([^"]+)" \(%,UCUM,"Percent"\)', out)
    assert len(nums) == len(content.slice_index) == out.count("Probability of cancer")  # once per group, no other
    assert [float(v) for v in nums] == pytest.approx([100 * content.probability] * 3, abs=1e-12)
    assert out.count('NUM:(FOLDSD,99SPINEDX,"Fold-model SD")') == 3
    assert out.count('(278201002,SCT,"Classification (attribute)")=(21594007,SCT,"Malignant")') == 3
    assert out.count('(121071,DCM,"Finding")=(21594007,SCT,"Malignant")') == 3
    assert out.count('TEXT:(121106,DCM,"Comment")="spinedx: MALIGNANT"') == 3
    x0, y0, x1, y1 = content.box
    poly = f"(POLYLINE,{x0}/{y0},{x1}/{y0},{x1}/{y1},{x0}/{y1},{x0}/{y0})"
    refs = re.findall(r'<inferred from SCOORD:\(260753009,SCT,"Source"\)=(\S+)>\s+'
                      r'<selected from IMAGE:[^=]+=\(MR image,"([^"]+)"\)', out)
    # each group's probability is inferred from every lesion box, its own slice's first
    a, b, c = res.referenced
    assert refs == [(poly, uid) for uid in (a, b, c, b, a, c, c, a, b)]
    assert "research use only, not for clinical decisions" in out and "Comprehensive 3D SR" in out


def test_sr_is_legible_in_a_viewer(written: tuple) -> None:
    """What OHIF v3 prints (tests/interop/test_ohif.py shows it in the viewer): per group one probability in %,
    every concept with a meaning, the region under the first NUM, at most 5 printed lines (OHIF's limit)."""
    content, res = written
    sr = pydicom.dcmread(res.sr)
    groups = sr.ContentSequence[-1].ContentSequence  # Imaging Measurements
    trackings: list[str] = []
    for g in groups:
        items = g.ContentSequence
        nums = [it for it in items if it.ValueType == "NUM"]
        assert [n.ConceptNameCodeSequence[0].CodeMeaning for n in nums] == ["Probability of cancer", "Fold-model SD"]
        assert {n.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for n in nums} == {"%"}
        assert not any(it.ValueType == "SCOORD" for it in items)  # no top-level region: its first NUM holds it
        assert nums[0].ContentSequence[0].ValueType == "SCOORD"
        assert nums[0].ContentSequence[0].RelationshipType == "INFERRED FROM"
        comments = [it for it in items
                    if it.ValueType == "TEXT" and it.ConceptNameCodeSequence[0].CodeValue == "121106"]
        assert len(nums) + len(comments) <= 5
        tracking = next(it.TextValue for it in items if it.ConceptNameCodeSequence[0].CodeValue == "112039")
        assert tracking.startswith("Cornerstone3DTools@^0.1.0:RectangleROI spinedx lesion, T2 slice ")
        trackings.append(tracking)
    # the slices numbered from 1, as viewers (and the workstation) number them
    ones = ", ".join(str(k + 1) for k in content.slice_index)
    assert trackings == [f"Cornerstone3DTools@^0.1.0:RectangleROI spinedx lesion, T2 slice {k + 1} (lesion slices "
                         f"{ones})" for k in content.slice_index]

    def codes_in(ds: pydicom.Dataset) -> list:
        out = []
        for el in ds:
            if el.VR == "SQ":
                for item in el.value:
                    if "CodeValue" in item:
                        out.append(item)
                    out += codes_in(item)
        return out

    assert all(str(c.get("CodeMeaning", "")).strip() for c in codes_in(sr))


def test_refer_decision_in_the_sr(tmp_path: Path, case: dict) -> None:
    """A referral is stated as an indeterminate finding with its reasons, in codes and in words; the calibrated
    probability is the one stated, the uncalibrated one is named apart."""
    from spinedx.interop.content import Decision

    decision = Decision("refer", 0.62, 0.5, probability_uncalibrated=0.58,
                        refer_reasons=("outside_training_data", "models_disagree"), conformal_set=("benign",
                                                                                                  "malignant"),
                        alpha=0.1, synthetic=True)
    content = make_content(case["slices"][:2], case["box"], decision=decision, heat=False)
    res = write_dicom_results(None, case["t1"], case["t2"], tmp_path, content=content)
    s = read_sr(res.sr)
    assert s.decision == "refer" and s.classification == ("280416009", "SCT", "Indeterminate result")
    assert s.probability == 0.62 and s.probability_uncalibrated == 0.58
    assert [r[0] for r in s.refer_reasons] == ["OOD", "DISAGREE"]
    assert s.comments[0] == ("spinedx: INDETERMINATE, refer (outside the training data; the fold models "
                             "disagree)")
    assert s.comments[1] == "trained on a synthetic cohort; research use only"
    assert dciodvfy(res.sr).errors == []
    out = subprocess.run(["dsrdump", "+Pc", str(res.sr)], capture_output=True, text=True, check=True).stdout
    uncal = re.findall(r'NUM:\(PUNCAL,99SPINEDX,"Uncalibrated probability"\)="([^"]+)" \(%,UCUM,"Percent"\)', out)
    assert [float(v) for v in uncal] == pytest.approx([58.0, 58.0], abs=1e-12)
    assert out.count("Probability of cancer") == 2


def test_overlays_read_back(written: tuple, case: dict) -> None:
    content, res = written
    t2 = read_image(case["t2"])
    for _k, path, uid in zip(content.slice_index, res.overlays, res.referenced, strict=True):
        ds = pydicom.dcmread(path)
        img = hd.imread(path)
        np.testing.assert_array_equal(ds.pixel_array, img.get_frame(1))
        assert ds.pixel_array.shape == (*t2.shape[1:], 3)
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.SeriesInstanceUID == res.overlay_series_uid != res.sr_series_uid
        assert ds.StudyInstanceUID == res.study_instance_uid
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == uid
        assert ds.BodyPartExamined == "SPINE" and ds.BurnedInAnnotation == "YES"
        assert list(ds.PatientOrientation) == [orientation_letters(t2.direction[:, 0]),
                                               orientation_letters(t2.direction[:, 1])]
        assert "research use only" in ds.ImageComments
        # the heatmap's method (here the default) is named in the series and in each image's derivation
        assert ds.SeriesDescription == f"spinedx {METHODS[DEFAULT_METHOD].label} overlays (research use only)"
        assert ds.DerivationDescription.startswith(method_caption(DEFAULT_METHOD))
        assert method_caption(DEFAULT_METHOD) in ds.ImageComments
        # the box outline is drawn on the slice's own grid
        x0, y0, _, y1 = content.box
        assert tuple(ds.pixel_array[(y0 + y1) // 2, x0]) == (0, 255, 0)
        # the slice numbered as viewers number it, from 1
        assert f"over T2 slice {_k + 1} (numbered from 1)," in ds.DerivationDescription
        # the burned-in text: white letters on a black band at the top left, the heat and box untouched by it
        band = ds.pixel_array[:12, :40]
        assert (band == 0).all(axis=2).mean() > 0.3 and (band == 255).all(axis=2).any()


def test_overlay_heat_is_the_explain_renderer(written: tuple, case: dict) -> None:
    """Inside the box, away from the text, a capture's pixels are the windowed T2 slice with the slice's heat blended
    exactly as the PNG overlays blend it (spinedx.explain.render)."""
    from spinedx.explain.render import blend_heat, window
    from spinedx.interop.sc import heat_on_slice

    content, res = written
    t2 = read_image(case["t2"])
    x0, y0, x1, y1 = content.box
    for i, (k, path) in enumerate(zip(content.slice_index, res.overlays, strict=True)):
        want = blend_heat(window(t2.array[k]), heat_on_slice(content.heatmaps[i], t2, content.box, content.margin))
        got = pydicom.dcmread(path).pixel_array
        np.testing.assert_array_equal(got[y0 + 1:y1 - 1, x0 + 1:x1 - 1], want[y0 + 1:y1 - 1, x0 + 1:x1 - 1])


def test_only_identifiers_are_copied(written: tuple, case: dict) -> None:
    """No attribute of the source is repeated unless it is a patient/study identifier (or a fixed value that
    happens to be shared, such as the character set)."""
    _, res = written
    src = pydicom.dcmread(next(Path(case["t2"]).iterdir()), stop_before_pixels=True)
    # the overlay and the map are the slice's own pixel grid, so its size and (unsigned) representation coincide;
    # the map lies in the T2's frame of reference and is, like the T2, one grey sample per pixel (MONOCHROME2)
    allowed = set(COPIED_KEYWORDS) | {"BodyPartExamined", "Rows", "Columns", "PixelRepresentation",
                                      "FrameOfReferenceUID", "SamplesPerPixel", "PhotometricInterpretation"}
    for path in res.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        copied = {e.keyword for e in ds if e.keyword in src and e.keyword and e.VR != "SQ"
                  and ds[e.keyword].value == src[e.keyword].value and e.value not in ("", None)}
        assert copied <= allowed, (path.name, copied - allowed)
        for kw in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "PatientSex"):
            assert ds[kw].value == src[kw].value
        for kw in ("PatientAge", "InstitutionName", "StudyDescription", "ProtocolName"):
            assert kw not in ds


def _distinct_volume(shape: tuple[int, int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape).astype(np.int16) % 30000


@pytest.mark.parametrize("row_dir,col_dir,slice_sign,reorientation", [
    ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0), 1, ([0, 1, 2], [False, False, False])),  # stored as displayed
    ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), -1, ([0, 1, 2], [False, True, True])),  # rows and slices flipped
    ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0), 1, ([1, 0, 2], [False, False, True])),  # transposed, slices flipped
])
def test_box_references_the_stored_image_holding_it(tmp_path: Path, row_dir: tuple, col_dir: tuple, slice_sign: int,
                                                    reorientation: tuple) -> None:
    """Whatever the stored row/slice order, the referenced file and SCOORD box hold the voxels of the canonical box."""
    vol = _distinct_volume((5, 40, 30))
    normal = np.cross(row_dir, col_dir)
    files = write_series(tmp_path / "t2", vol, spacing=(1.0, 1.0, 4.0), row_dir=row_dir, col_dir=col_dir,
                         slice_dir=tuple(slice_sign * normal), origin=(-8.0, -10.0, 20.0))
    img = read_image(tmp_path / "t2")
    rec = img.meta["reorientation"]
    assert (rec["source_axes_xyz"], rec["flipped_xyz"]) == reorientation  # the case really is reoriented
    planes = stored_planes(img)
    box = (5, 7, 17, 21)
    for k in range(img.n_slices):
        pb = locate_box(img, planes, box, k)
        assert pb.distance_mm < 1e-6
        stored = pydicom.dcmread(pb.plane.path).pixel_array
        c0, r0 = np.floor(pb.corners.min(axis=0) + 1e-9).astype(int)
        c1, r1 = np.ceil(pb.corners.max(axis=0) - 1e-9).astype(int)
        expect = img.array[k, box[1]:box[3], box[0]:box[2]]
        got = stored[r0:r1, c0:c1]
        assert got.size == expect.size
        np.testing.assert_array_equal(np.sort(got.ravel()), np.sort(expect.ravel().astype(got.dtype)))
    assert len(files) == 5


def test_non_dicom_inputs_are_refused(tmp_path: Path, case: dict) -> None:
    img = read_image(case["t2"])
    img.meta = {"format": "nifti"}
    with pytest.raises(SpinedxError, match="DICOM input"):
        write_dicom_results(None, img, img, tmp_path, content=make_content(case["slices"], case["box"]))
    assert not (tmp_path / "dicom").exists()


def test_series_of_two_studies_are_refused(tmp_path: Path, synth_study: Path, case: dict) -> None:
    other = synth_study / "dicom" / "SYN0002" / "T1"
    with pytest.raises(SpinedxError, match="different PatientID"):
        write_dicom_results(None, other, case["t2"], tmp_path, content=make_content(case["slices"], case["box"]))
    assert not (tmp_path / "dicom").exists()


def test_benign_call_and_no_heatmaps(tmp_path: Path, case: dict) -> None:
    content = make_content(case["slices"][:1], case["box"], probability=0.2, per_model=(0.1, 0.3), heat=False)
    res = write_dicom_results(None, case["t1"], case["t2"], tmp_path, content=content)
    assert res.overlays == [] and res.overlay_series_uid is None and res.pmap is None and res.files == [res.sr]
    s = read_sr(res.sr)
    assert s.classification == ("30807003", "SCT", "Benign") and s.probability == 0.2 and s.decision == "benign"
    assert s.comments[0] == "spinedx: BENIGN"
    assert dciodvfy(res.sr).errors == []


@pytest.mark.slow
def test_prediction_writes_dicom_results(tiny_run: Path, case: dict, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """predict_case with DICOM inputs writes OUT/dicom/ in the same step, and it reads back to the prediction;
    its Secondary Captures name the method spinedx.explain.DEFAULT_METHOD chose (changed here to show they follow)."""
    import json

    import spinedx.explain
    import spinedx.io
    from spinedx.interop import model_fingerprint
    from spinedx.predict import predict_case

    monkeypatch.setattr(spinedx.explain, "DEFAULT_METHOD", "gradcam-layer3")
    reads: list[Path] = []
    real_read = spinedx.io.read_image
    monkeypatch.setattr(spinedx.io, "read_image", lambda path, *a, **k: (reads.append(Path(path)),
                                                                         real_read(path, *a, **k))[1])
    pred = predict_case(tiny_run, case["t1"], case["t2"], case["slices"], case["box"], tmp_path / "out")
    assert sorted(reads) == sorted([Path(case["t1"]), Path(case["t2"])])  # each series read once, for both outputs
    res = pred.dicom
    assert res is not None and res.folder == tmp_path / "out" / "dicom" and res.sr.is_file()
    doc = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert doc["dicom_results"]["sr"] == "dicom/sr.dcm" and doc["dicom_results"]["sr_series_uid"] == res.sr_series_uid
    s = read_sr(res.sr)
    # the decision and probability come from prediction.json through one mapping (content.decision_of): before
    # issue 20's fields exist, the call and the patient probability
    assert s.probability == pytest.approx(doc.get("probability", doc["patient_probability"]), rel=1e-15)
    assert s.decision == doc.get("decision", doc["call"])
    assert s.spread["Fold-model SD"] == pytest.approx(float(np.std(pred.per_model)), rel=1e-12)
    assert s.model_hash == model_fingerprint(tiny_run)
    assert doc["dicom_results"]["pmap"] == "dicom/heatmap_pmap.dcm" and res.pmap is not None
    assert doc["dicom_results"]["sr_sop_instance_uid"] == pydicom.dcmread(res.sr).SOPInstanceUID
    assert len(res.overlays) == len(pred.slice_index)
    for path in res.overlays:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SeriesDescription == "spinedx Grad-CAM layer3 overlays (research use only)"
        assert ds.DerivationDescription.startswith(method_caption("gradcam-layer3"))
    assert all(dciodvfy(p).errors == [] for p in res.files)


def test_nifti_inputs_give_no_dicom_results(tmp_path: Path, case: dict) -> None:
    import SimpleITK as sitk

    from spinedx.interop import write_dicom_results_if_dicom

    sitk.WriteImage(read_image(case["t2"]).to_sitk(), str(tmp_path / "t2.nii.gz"))
    assert write_dicom_results_if_dicom(None, tmp_path / "t2.nii.gz", case["t2"], tmp_path) is None
    assert not (tmp_path / "dicom").exists()


def test_enhanced_multiframe_source_references_frames(tmp_path: Path) -> None:
    """An Enhanced MR file (frames stored in reverse slice order): each region names its file and frame."""
    from dicomfixtures import write_multiframe

    vol = _distinct_volume((4, 32, 24), seed=3)
    path = write_multiframe(tmp_path / "mf" / "t2.dcm", vol, spacing=(1.0, 1.0, 4.0), origin=(-6.0, -10.0, 20.0))
    img = read_image(path)
    box = (4, 6, 14, 20)
    content = make_content((1, 2), box)
    res = write_dicom_results(None, img, img, tmp_path / "out", content=content)
    s = read_sr(res.sr)
    # this fixture writes no FrameOfReferenceUID: no map (a viewer could not place it), said in the results
    assert res.pmap is None and "no FrameOfReferenceUID" in str(res.pmap_note) and len(res.overlays) == 2
    stored = pydicom.dcmread(path).pixel_array
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    for k, (ref_uid, frame, poly) in zip(content.slice_index, s.regions, strict=True):
        assert ref_uid == uid and frame is not None
        (c0, r0), (c1, r1) = poly.min(axis=0).astype(int), poly.max(axis=0).astype(int)
        np.testing.assert_array_equal(np.sort(stored[frame - 1, r0:r1, c0:c1].ravel()),
                                      np.sort(img.array[k, box[1]:box[3], box[0]:box[2]].ravel().astype(np.int16)))
    assert all(dciodvfy(p).errors == [] for p in res.files)


def test_file_list_and_geometry_must_agree(tmp_path: Path) -> None:
    """A reader file list that disagrees with the geometry is refused, not written into a report."""
    vol = _distinct_volume((4, 20, 16))
    write_series(tmp_path / "t2", vol, spacing=(1.0, 1.0, 4.0))
    img = read_image(tmp_path / "t2")
    assert img.meta["files"] and len(img.meta["files"]) == img.n_slices
    img.meta["files"] = img.meta["files"][::-1]
    with pytest.raises(SpinedxError, match="the reader lists"):
        locate_box(img, stored_planes(img), (2, 2, 8, 8), 0)
