"""T1 and T2 of a row must be two series of one patient with the right weighting (issue 8, case 1).

Each wrong pair used to exit 0 with plausible patches whose T1 channels correlate r = 0.03-0.10 with the
right ones; now it is a clean error naming the patient, unless the override says otherwise.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from dicomfixtures import write_image_series
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cohort import load_manifest
from spinedx.errors import PreprocessError
from spinedx.io import Image, read_image
from spinedx.preprocess import ExtractConfig, extract_case, extract_cohort
from spinedx.preprocess.pairing import check_pair

from .phantom import centered_origin, sample

EXAM = {"study_uid": "1.2.826.0.1.3680043.8.498.501", "frame_uid": "1.2.826.0.1.3680043.8.498.502"}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Patient A (T1 500/15, T2 3200/90, one exam) and patient B's T1, as small DICOM series; A's T2 as NIfTI."""
    root = tmp_path_factory.mktemp("pairs")
    sh, sp = (7, 40, 36), (1.6, 1.6, 4.0)
    t2 = sample(sh, sp, centered_origin(sh, sp))
    t1 = sample(sh, sp, centered_origin(sh, sp), contrast="t1")
    write_image_series(root / "A" / "t2", t2, series_description="SAG T2", patient_id="A", **EXAM)
    write_image_series(root / "A" / "t1", t1, series_description="SAG T1", patient_id="A", repetition_time=500.0,
                       echo_time=15.0, series_number=2, **EXAM)
    write_image_series(root / "B" / "t1", t1, series_description="SAG T1", patient_id="B", repetition_time=500.0,
                       echo_time=15.0)
    write_image_series(root / "A" / "t1_other_exam", t1, series_description="SAG T1", patient_id="A",
                       repetition_time=500.0, echo_time=15.0)
    nib.save(nib.Nifti1Image(t2.array.transpose(2, 1, 0).astype(np.int16), LPS_TO_RAS @ t2.affine),
             root / "A" / "t2.nii.gz")
    shutil.copy(root / "A" / "t2.nii.gz", root / "A" / "t2_copy.nii.gz")
    c = t2.physical_to_index(np.zeros((1, 3)))[0]
    box = f'"{int(c[0]) - 8},{int(c[1]) - 8},{int(c[0]) + 8},{int(c[1]) + 8}"'
    return root, box


def _manifest(root, box, t1: str, t2: str = "A/t2", name: str = "cohort.csv") -> str:
    (root / name).write_text(f"patient_id,label,t1,t2,lesion_slices,box\nA,benign,{t1},{t2},3,{box}\n")
    return str(root / name)


def _cli(*args: str):
    return CliRunner().invoke(app, ["extract", *args, "--no-register", "--no-progress"])


@pytest.mark.parametrize("t1,t2,expected", [
    ("A/t2", "A/t2", "same series (SeriesInstanceUID"),            # the T1 column points at the T2 series
    ("A/t2.nii.gz", "A/t2.nii.gz", "same file or folder"),         # the same NIfTI file twice
    ("A/t2_copy.nii.gz", "A/t2.nii.gz", "identical voxels"),       # a copy of the T2 file
    ("B/t1", "A/t2", "different patients (PatientID 'B' vs 'A')"),  # another patient's T1
    ("A/t2", "A/t1", "as T1 has TE 90 ms and TR 3200 ms, the one given as T2 TE 15 ms and TR 500 ms"),  # swapped
])
def test_wrong_pair_is_one_clean_error_naming_the_patient(pairs, tmp_path, t1, t2, expected):
    root, box = pairs
    res = _cli(_manifest(root, box, t1, t2), "--out", str(tmp_path / "out"))
    assert res.exit_code == 2, res.output
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert err[0].startswith("error: A: ") and expected in err[0] and "--pair-check warn" in err[0], err
    assert "Traceback" not in res.output and not (tmp_path / "out" / "patches.npz").exists()


def test_swapped_pair_names_both_times_and_extract_case_refuses_it(pairs):
    """extract_case is what spinedx predict calls: the check applies there too."""
    root, box = pairs
    case = load_manifest(_manifest(root, box, "A/t2", "A/t1", "swapped.csv")).cases[0]
    with pytest.raises(PreprocessError) as exc:
        extract_case(case, ExtractConfig(register=False))
    msg = exc.value.one_line()
    assert msg.startswith("A: ") and "TE 90 ms" in msg and "TR 3200 ms" in msg and "swapped" in msg
    assert msg.count("T1-weighted images have the shorter TE and TR") == 1


def test_override_warn_records_the_problem_and_off_skips_the_check(pairs, tmp_path):
    root, box = pairs
    manifest = _manifest(root, box, "A/t2", "A/t1", "swapped2.csv")
    res = _cli(manifest, "--out", str(tmp_path / "warn"), "--pair-check", "warn")
    assert res.exit_code == 0, res.output
    assert "warning: A: accepted with --pair-check warn: the series given as T1 has TE 90 ms" in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]) == 1
    doc = json.loads((tmp_path / "warn" / "extract.json").read_text())
    assert doc["config"]["pair_check"] == "warn" and doc["pair_check"] == "warn"
    assert doc["patients"][0]["pair_check"]["problems"] and doc["warnings"][0].startswith("A: accepted with")
    res = _cli(manifest, "--out", str(tmp_path / "off"), "--pair-check", "off")
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "off" / "extract.json").read_text())["patients"][0]["pair_check"]
    assert rec["mode"] == "off" and rec["checked"] == [] and len(rec["not_checked"]) == 5
    res = _cli(manifest, "--out", str(tmp_path / "x"), "--pair-check", "maybe")
    assert res.exit_code == 2 and "--pair-check must be one of strict, warn, off" in res.stderr


def test_other_study_and_frame_of_reference_are_allowed_but_recorded(pairs, tmp_path):
    root, box = pairs
    res = _cli(_manifest(root, box, "A/t1_other_exam", "A/t2", "other_exam.csv"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2 and "different studies" in warnings[0] and "frames of reference" in warnings[1]
    doc = json.loads((tmp_path / "o" / "extract.json").read_text())
    rec = doc["patients"][0]["pair_check"]
    assert rec["problems"] == [] and len(rec["warnings"]) == 2 and "registration" in rec["warnings"][0]
    assert len(doc["warnings"]) == 2


def test_right_pair_passes_every_check(pairs):
    root, box = pairs
    t1, t2 = read_image(root / "A" / "t1"), read_image(root / "A" / "t2")
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "EchoTime", "RepetitionTime",
                "PhotometricInterpretation"):
        assert t1.meta[key] not in (None, ""), key
    rec = check_pair(t1, t2, patient_id="A")
    assert rec.problems == [] and rec.warnings == [] and rec.not_checked == []
    # mixed formats: the header checks cannot be made and say why
    nifti = read_image(root / "A" / "t2.nii.gz")
    rec = check_pair(t1, nifti, patient_id="A")
    assert rec.checked == ["same series"] and all("t2 is nifti" in n for n in rec.not_checked)
    # an image given twice is refused even without any header
    with pytest.raises(PreprocessError, match="identical voxels"):
        check_pair(Image(nifti.array.copy(), nifti.affine), nifti, patient_id="A")
    res = extract_cohort(_manifest(root, box, "A/t1", "A/t2", "good.csv"), root / "good_out",
                         ExtractConfig(register=False), progress=False)
    assert res.ok == ["A"] and res.warnings == []
