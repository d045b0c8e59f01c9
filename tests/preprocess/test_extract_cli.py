"""Cohort extraction from a manifest (DICOM and NIfTI cases), ``spinedx extract`` CLI and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicomfixtures import write_image_series
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cohort import CaseRecord, load_manifest
from spinedx.io import Image, read_image
from spinedx.preprocess import CHANNEL_NAMES, ExtractConfig, extract_case, extract_cohort

from .phantom import centered_origin, sample

SHIFT = (0.0, 3.0, 2.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _save_nifti(img: Image, path) -> None:
    # NIfTI is RAS; the array axes (k, i, j) go to file axes (j, i, k).
    nib.save(nib.Nifti1Image(img.array.transpose(2, 1, 0).astype(np.int16), LPS_TO_RAS @ img.affine), path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Five patients: DICOM pair moved by SHIFT (ok), NIfTI pair (ok, one edge slice), and three bad rows."""
    root = tmp_path_factory.mktemp("cohort")
    sh2, sp2 = (9, 110, 90), (0.8, 0.8, 4.0)
    t2 = sample(sh2, sp2, centered_origin(sh2, sp2))
    sh1, sp1 = (8, 90, 70), (1.0, 1.1, 4.4)
    t1 = sample(sh1, sp1, centered_origin(sh1, sp1, offset=(1.0, 0, 0)), contrast="t1", shift=SHIFT)
    # One patient, one exam: T1 and T2 share PatientID, StudyInstanceUID and FrameOfReferenceUID (pair check).
    exam = {"study_uid": "1.2.826.0.1.3680043.8.498.77", "frame_uid": "1.2.826.0.1.3680043.8.498.78"}
    write_image_series(root / "P001" / "t2", t2, series_description="T2 SAG", shuffle=True, **exam)
    write_image_series(root / "P001" / "t1", t1, series_description="T1 SAG", series_number=2,
                       repetition_time=500.0, echo_time=15.0, **exam)
    t1_still = sample(sh1, sp1, centered_origin(sh1, sp1, offset=(1.0, 0, 0)), contrast="t1")
    (root / "P002").mkdir()
    _save_nifti(t2, root / "P002" / "t2.nii.gz")
    _save_nifti(t1_still, root / "P002" / "t1.nii.gz")
    far = Image(t1_still.array, t1_still.affine.copy())
    far.affine[:3, 3] += (0.0, 0.0, 250.0)
    _save_nifti(far, root / "P002" / "t1_far.nii.gz")
    ctr = t2.physical_to_index(np.zeros((1, 3)))[0]
    box = f"{int(ctr[0] - 20)},{int(ctr[1] - 16)},{int(ctr[0] + 20)},{int(ctr[1] + 16)}"
    rows = [
        "patient_id,label,t1,t2,lesion_slices,box",
        f'P001,malignant,P001/t1,P001/t2,3;4;5,"{box}"',
        f'P002,benign,P002/t1.nii.gz,P002/t2.nii.gz,0;1,"{box}"',
        'P003,malignant,P002/t1.nii.gz,P002/t2.nii.gz,4,"80,20,120,60"',
        f'P004,benign,P002/t1_far.nii.gz,P002/t2.nii.gz,4,"{box}"',
        f'P005,benign,P002/t1.nii.gz,P002/t2.nii.gz,4;9,"{box}"',
    ]
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    good = "\n".join(rows[:3]) + "\n"
    (root / "good.csv").write_text(good)
    return root


def test_dicom_pair_registration_recovers_translation(cohort):
    case = load_manifest(cohort / "cohort.csv").cases[0]
    assert case.patient_id == "P001"
    cp = extract_case(case)
    rec = cp.registration
    assert rec.accepted, rec.reason
    assert np.linalg.norm(np.asarray(rec.translation_mm) - SHIFT) < 1.0
    assert cp.x.shape == (3, 6, 64, 64) and cp.label == 1


def test_extract_case_missing_image_names_patient():
    case = CaseRecord(patient_id="P9", label="benign", t1=None, t2=None, lesion_slices=(3,), box=(0, 0, 4, 4))
    with pytest.raises(Exception, match="P9.*t1, t2"):
        extract_case(case)


def test_cli_extract_writes_patches_and_reports_bad_patients(cohort, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["extract", str(cohort / "cohort.csv"), "--out", str(out), "--no-progress"])
    assert res.exit_code == 2, res.output
    err_lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 3 and all(ln.startswith("error: ") for ln in err_lines)
    assert "P003" in err_lines[0] and "outside the T2 image" in err_lines[0]
    assert "P004" in err_lines[1] and "do not overlap" in err_lines[1]
    assert "P005" in err_lines[2] and "out of range" in err_lines[2]
    assert "Traceback" not in res.output
    assert "2 patient(s), 5 sample(s) (2 benign, 3 malignant); 3 failed" in res.stdout

    with np.load(out / "patches.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["label", "patient_id", "slice_index", "synthetic", "x"]  # no lesion_mask column
        x, pid, sl, lab = z["x"], z["patient_id"], z["slice_index"], z["label"]
        assert z["synthetic"].shape == () and z["synthetic"].dtype == bool and not z["synthetic"]
    assert x.shape == (5, 6, 64, 64) and x.dtype == np.float32 and np.isfinite(x).all()
    assert pid.dtype.kind == "U" and pid.tolist() == ["P001"] * 3 + ["P002"] * 2
    assert sl.dtype == np.int64 and sl.tolist() == [3, 4, 5, 0, 1]
    assert lab.dtype == np.int64 and lab.tolist() == [1, 1, 1, 0, 0]
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0.0, atol=1e-4)

    doc = json.loads((out / "extract.json").read_text())
    assert doc["channel_names"] == list(CHANNEL_NAMES)
    assert doc["config"]["register"] is True and doc["config"]["patch_size"] == 64
    assert "torch" in doc["provenance"]["versions"] and "SimpleITK" in doc["provenance"]["versions"]
    assert doc["counts"] == {"patients": 5, "ok": 2, "failed": 3, "samples": 5,
                             "samples_per_class": {"benign": 2, "malignant": 3}}
    assert [p["patient_id"] for p in doc["patients"]] == ["P001", "P002"]
    assert doc["patients"][1]["edge_replicated"] == [{"slice": 0, "replaced": ["s-1"]}]
    assert doc["patients"][0]["registration"]["accepted"] is True
    assert doc["synthetic"] is False and doc["pair_check"] == "strict" and doc["warnings"] == []
    # DICOM pair: every belonging check made; NIfTI pair: only the same-file/voxel check, the others listed
    p1, p2 = (p["pair_check"] for p in doc["patients"])
    assert p1["checked"] == ["same series", "PatientID", "weighting (EchoTime, RepetitionTime)", "StudyInstanceUID",
                             "FrameOfReferenceUID"] and p1["not_checked"] == []
    assert p2["checked"] == ["same series"] and len(p2["not_checked"]) == 4
    assert all("no DICOM header" in n for n in p2["not_checked"])
    from spinedx.provenance import sha256_file

    assert doc["patches_sha256"] == sha256_file(out / "patches.npz")
    assert [s["patient_id"] for s in doc["skipped"]] == ["P003", "P004", "P005"]
    assert "do not overlap" in doc["skipped"][1]["reason"]


@pytest.mark.slow
def test_workers_give_the_same_patches_with_registration(cohort, tmp_path):
    one = extract_cohort(cohort / "good.csv", tmp_path / "one", ExtractConfig(), workers=1, progress=False)
    two = extract_cohort(cohort / "good.csv", tmp_path / "two", ExtractConfig(), workers=2, progress=False)
    assert one.ok == two.ok == ["P001", "P002"] and not one.failed
    with np.load(one.patches_path) as a, np.load(two.patches_path) as b:
        np.testing.assert_allclose(a["x"], b["x"], atol=1e-4)
        assert a["patient_id"].tolist() == b["patient_id"].tolist()
    doc = json.loads(two.json_path.read_text())
    reg = doc["patients"][0]["registration"]
    assert reg["performed"] and reg["accepted"] and reg["metric_after"] < reg["metric_before"]
    assert np.linalg.norm(np.asarray(reg["translation_mm"]) - SHIFT) < 1.0
    assert doc["registration_summary"]["performed"] == 2


def test_cli_all_good_exit_zero_and_bad_manifest(cohort, tmp_path):
    res = CliRunner().invoke(app, ["extract", str(cohort / "good.csv"), "--out", str(tmp_path / "o"),
                                   "--no-register", "--no-progress"])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,label,t1,t2,lesion_slices,box\nP1,maybe,a,b,1,\"0,0,4,4\"\n")
    res = CliRunner().invoke(app, ["extract", str(bad), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "label" in res.stderr and "Traceback" not in res.output


def test_benchmark_runs_on_a_given_cohort(cohort, capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "extract.py"
    spec = importlib.util.spec_from_file_location("bench_extract", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--cohort", str(cohort / "good.csv"), "--repeat", "1", "--register-patients", "1"]) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1].split()
    assert last[:2] == ["RESULT", "extract_ratio"] and float(last[2]) > 0
    assert "I/O floor" in out and "s/patient" in out


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory):
    """A 3-patient spinedx.synth cohort (DICOM on the canonical grid, lesion masks, synthetic = 1)."""
    from spinedx.synth import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("syn") / "c", n_patients=3, n_malignant=1, seed=1, progress=False)


@pytest.mark.slow
def test_registration_moves_the_box_to_the_lesion_on_synthetic_t1(synth_cohort, tmp_path):
    """spinedx.synth moves the patient rigidly between T2 and T1; synth.json has the lesion centre in both."""
    res = extract_cohort(synth_cohort, tmp_path / "out", ExtractConfig(), progress=False)
    assert not res.failed
    truth = json.loads((synth_cohort.parent / "synth.json").read_text())["patients"]
    for p in json.loads(res.json_path.read_text())["patients"]:
        c2, c1 = np.asarray(truth[p["patient_id"]]["centre_t2"]), np.asarray(truth[p["patient_id"]]["centre_t1"])
        m = np.asarray(p["registration"]["matrix"])
        assert p["registration"]["accepted"]
        err_geo = np.linalg.norm(c2 - c1)
        err_reg = np.linalg.norm(m[:3, :3] @ c2 + m[:3, 3] - c1)
        assert err_reg < err_geo and err_reg < 2.5, (p["patient_id"], err_geo, err_reg)


@pytest.mark.slow
def test_synthetic_cohort_patches_unchanged_by_reorientation_with_masks_and_mark(synth_cohort, tmp_path,
                                                                               monkeypatch):
    """The synthetic series are stored on the canonical grid: reorientation changes no byte of their patches."""
    import spinedx.io.read as io_read

    res = extract_cohort(synth_cohort, tmp_path / "canon", ExtractConfig(register=False), progress=False)
    assert res.ok == ["SYN0001", "SYN0002", "SYN0003"] and res.synthetic and res.warnings == []
    doc = json.loads(res.json_path.read_text())
    assert doc["synthetic"] is True
    for p in doc["patients"]:
        for name in ("t1", "t2"):
            assert p["images"][name]["reorientation"] == {
                "source_axes_xyz": [0, 1, 2], "flipped_xyz": [False, False, False],
                "source_shape_zyx": p["images"][name]["shape_zyx"]}
    # the same extraction with reorientation switched off (the reader's acquisition order, as before issue 8)
    monkeypatch.setattr(io_read, "to_canonical", lambda img: img)
    raw = extract_cohort(synth_cohort, tmp_path / "raw", ExtractConfig(register=False), progress=False)
    with np.load(res.patches_path, allow_pickle=False) as a, np.load(raw.patches_path, allow_pickle=False) as b:
        assert a["x"].tobytes() == b["x"].tobytes()
        assert a["synthetic"].shape == () and bool(a["synthetic"]) is True
        mask, x, sl, pid = a["mask"], a["x"], a["slice_index"], a["patient_id"]
    # the lesion mask of slice s on the crop grid: values 0..1, the lesion inside the patch
    assert mask.shape == (len(x), 64, 64) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    cohort = load_manifest(synth_cohort)
    for k in range(len(x)):
        case = cohort[str(pid[k])]
        m3 = read_image(case.lesion_mask)
        if m3.array[int(sl[k])].any():  # a lesion slice that shows the lesion
            assert mask[k].max() == 1.0 and mask[k].mean() > 0.01
    assert sum(mask[k].any() for k in range(len(x))) >= len(x) // 2


def test_lesion_mask_must_lie_on_the_t2_grid(cohort, tmp_path):
    """A mask written on another grid, or holding other values than 0/1, is refused naming the patient."""
    t2 = read_image(cohort / "P002" / "t2.nii.gz")
    m = np.zeros(t2.shape, np.uint8)
    m[3:6, 40:60, 30:50] = 1
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    shifted = t2.affine.copy()
    shifted[:3, 3] += (0.0, 1.0, 0.0)
    for name, data, aff in (("ok", m, t2.affine), ("shifted", m, shifted), ("labels", m * 3, t2.affine)):
        nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), lps_to_ras @ aff), tmp_path / f"{name}.nii.gz")
    ctr = t2.physical_to_index(np.zeros((1, 3)))[0]
    box = f'"{int(ctr[0] - 20)},{int(ctr[1] - 16)},{int(ctr[0] + 20)},{int(ctr[1] + 16)}"'
    rows = ["patient_id,label,t1,t2,lesion_slices,box,lesion_mask"]
    for name in ("ok", "shifted", "labels"):
        rows.append(f"{name},benign,{cohort}/P002/t1.nii.gz,{cohort}/P002/t2.nii.gz,4,{box},{tmp_path}/{name}.nii.gz")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    res = extract_cohort(tmp_path / "m.csv", tmp_path / "out", ExtractConfig(register=False), progress=False)
    assert res.ok == ["ok"]
    reasons = dict(res.failed)
    assert "not on the T2 grid" in reasons["shifted"] and "1 mm" in reasons["shifted"]
    assert "holds values other than 0 and 1 (e.g. [3.0])" in reasons["labels"]
    with np.load(res.patches_path) as z:
        mask = z["mask"][0]
    grid_mask = m[4].astype(np.float32)
    assert mask.max() == 1.0 and 0.0 < mask.mean() < 1.0 and grid_mask.any()
