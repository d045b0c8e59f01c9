"""Rendered synthetic cohort: manifest, DICOM validity, geometry, determinism, preview."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from spinedx.cohort import load_manifest
from spinedx.features import FEATURE_COLUMNS, READER_COLUMNS
from spinedx.io import read_image
from spinedx.synth import generate_cohort, sample_study_table
from spinedx.synth.cohort import MANIFEST_COLUMNS, plan_patient
from spinedx.synth.dicomwriter import SYNTHETIC_NOTE
from spinedx.synth.phantom import evaluate
from spinedx.synth.seeds import EVALUATION_SEED, TUNING_SEEDS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "c"
    generate_cohort(out, n_patients=2, n_malignant=1, seed=0, preview=True, progress=False)
    return out


def _digest(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "synth.json" and p.suffix != ".png")
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_manifest_valid(cohort: Path) -> None:
    df = pd.read_csv(cohort / "cohort.csv", dtype=str)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert set(df.label) == {"benign", "malignant"}
    truth = sample_study_table(2, 1, seed=0)
    pd.testing.assert_frame_equal(
        df[["patient_id", "label", *FEATURE_COLUMNS, *READER_COLUMNS]].astype(str),
        truth[["patient_id", "label", *FEATURE_COLUMNS, *READER_COLUMNS]].astype(str),
    )
    assert (df.synthetic == "1").all()  # every row says it is a simulated patient
    assert list(df.lesion_mask) == [f"dicom/{p}/lesion_mask.nii.gz" for p in df.patient_id]
    c = load_manifest(cohort / "cohort.csv")  # the project's loader accepts it
    for case in c:
        assert len(case.lesion_slices) == 3 and np.all(np.diff(case.lesion_slices) == 1)
        x0, y0, x1, y1 = case.box
        assert x1 - x0 == y1 - y0 and 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
        assert 40 < x1 - x0 < 160  # a vertebral body (25-45 mm) plus margin at 0.586 mm/pixel
        t1 = sorted(cohort.glob(f"dicom/{case.patient_id}/T1/IM*.dcm"))
        t2 = sorted(cohort.glob(f"dicom/{case.patient_id}/T2/IM*.dcm"))
        assert 11 <= len(t2) <= 15 and len(t1) == len(t2)


def test_dicom_headers(cohort: Path) -> None:
    for series, tr, te, matrix in (("T1", 400, 15, [320, 0, 0, 192]), ("T2", 3200, 90, [448, 0, 0, 224])):
        ds = pydicom.dcmread(next((cohort / "dicom/SYN0001" / series).glob("*.dcm")))
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert (ds.Rows, ds.Columns) == (512, 512)
        assert float(ds.RepetitionTime) == tr and float(ds.EchoTime) == te
        assert list(ds.AcquisitionMatrix) == matrix
        assert float(ds.PixelSpacing[0]) * 512 == pytest.approx(300, abs=0.01)
        assert float(ds.SliceThickness) == 4 and float(ds.SpacingBetweenSlices) == 4
        assert float(ds.MagneticFieldStrength) == 1.5
        assert ds.PatientID == "SYN0001" and ds.StudyDate == "20200101"
        assert ds.SOPInstanceUID.startswith("2.25.")
        # every file says it is a phantom, in what a viewer shows first
        assert str(ds.PatientName) == "SYNTHETIC^SYN0001"
        assert ds.ImageComments == SYNTHETIC_NOTE == "SYNTHETIC PHANTOM - NOT A PATIENT"
        assert ds.SeriesDescription.endswith("SYNTHETIC") and "synthetic" in ds.StudyDescription


def test_synth_json_marks_synthetic_and_tuning(cohort: Path, tmp_path: Path) -> None:
    doc = json.loads((cohort / "synth.json").read_text())
    assert doc["synthetic"] is True
    assert doc["tuning_seeds"] == sorted(TUNING_SEEDS) and 0 in doc["tuning_seeds"]
    assert doc["seed_used_for_tuning"] is True  # the fixture uses seed 0, a tuning seed
    assert doc["evaluation_seed"] == EVALUATION_SEED and EVALUATION_SEED not in TUNING_SEEDS
    assert all(p["lesion_voxels"] > 0 for p in doc["patients"].values())


def test_lesion_mask_in_t2_geometry(cohort: Path) -> None:
    """The mask reads back (spinedx.io) on exactly the T2 grid and affine, as uint8 0/1 in the fractured body."""
    import nibabel as nib

    df = pd.read_csv(cohort / "cohort.csv")
    side = json.loads((cohort / "synth.json").read_text())["patients"]
    for _, row in df.iterrows():
        t2 = read_image(cohort / row.t2)
        mask = read_image(cohort / row.lesion_mask)
        assert nib.load(cohort / row.lesion_mask).get_data_dtype() == np.uint8
        assert mask.shape == t2.shape
        np.testing.assert_allclose(mask.affine, t2.affine, atol=1e-4)
        m = mask.array > 0.5
        assert set(np.unique(mask.array)) == {0.0, 1.0}
        assert m.sum() == side[row.patient_id]["lesion_voxels"]
        # the mask lies at the fractured body: on the middle lesion slice, around the manifest's box
        k = [int(v) for v in row.lesion_slices.split(";")][1]
        x0, y0, x1, y1 = (int(v) for v in row.box.split(","))
        assert m[k].sum() > 50
        ii, jj = np.nonzero(m[k])
        assert x0 <= jj.mean() < x1 and y0 <= ii.mean() < y1
        # most of the mask's voxels on that slice are inside the box (epidural/paraspinal mass may leave it)
        inside = (jj >= x0) & (jj < x1) & (ii >= y0) & (ii < y1)
        assert inside.mean() > 0.5

def test_dciodvfy_no_errors(cohort: Path) -> None:
    for series in ("T1", "T2"):
        for f in sorted((cohort / "dicom/SYN0002" / series).glob("*.dcm"))[:2]:
            res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60, check=False)
            text = res.stdout + res.stderr
            assert "MRImage" in text
            errors = [ln for ln in text.splitlines() if ln.startswith("Error")]
            assert not errors, f"{f}: {errors}"


def test_dcm2niix_converts(cohort: Path, tmp_path: Path) -> None:
    for series in ("T1", "T2"):
        res = subprocess.run(
            ["dcm2niix", "-z", "n", "-o", str(tmp_path), "-f", series, str(cohort / "dicom/SYN0001" / series)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        nii = tmp_path / f"{series}.nii"
        assert nii.is_file()
        import nibabel as nib

        img = nib.load(nii)
        n = len(list((cohort / "dicom/SYN0001" / series).glob("*.dcm")))
        assert img.shape == (512, 512, n)
        assert np.allclose(img.header.get_zooms(), (300 / 512, 300 / 512, 4.0), atol=1e-3)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_geometry_box_and_both_series(cohort: Path) -> None:
    """The known fractured body lands where the manifest says on T2 and, through the written
    physical geometry (and the simulated motion), where the phantom puts it on T1."""
    df = pd.read_csv(cohort / "cohort.csv")
    side = json.loads((cohort / "synth.json").read_text())["patients"]
    for i, row in df.iterrows():
        pid = row.patient_id
        t2 = read_image(cohort / row.t2)
        t1 = read_image(cohort / row.t1)
        x0, y0, x1, y1 = (int(v) for v in row.box.split(","))
        k = [int(v) for v in row.lesion_slices.split(";")]
        cx, cy, cz = t2.physical_to_index(np.array(side[pid]["centre_t2"]))[0]
        assert x0 <= cx < x1 and y0 <= cy < y1, (pid, cx, cy, row.box)
        assert k[0] - 0.5 <= cz <= k[2] + 0.5
        # T1: rebuild the fractured body from the phantom at the physical points of the T1
        # voxels as read back from the DICOM tags; the T1 image must show it there
        label = 1 if row.label == "malignant" else 0
        _, anat, _, motion, _ = plan_patient(0, i, label, "medium")
        j1, i1, k1 = np.round(t1.physical_to_index(np.array(side[pid]["centre_t1"]))[0]).astype(int)
        assert 0 <= k1 < t1.n_slices
        jj, ii = np.meshgrid(np.arange(512), np.arange(512))
        idx = np.stack([jj.ravel(), ii.ravel(), np.full(jj.size, k1)], axis=1)
        pts = motion.inverse(t1.index_to_physical(idx).astype(np.float32))
        rendered = evaluate(anat, pts, 0)
        signal, body = rendered.signal, rendered.body.reshape(512, 512)
        assert body[i1, j1], "the moved centre is not inside the fractured body on T1"
        # the noiseless phantom at those points must match the stored T1 pixels around the lesion
        win = (slice(max(i1 - 60, 0), i1 + 60), slice(max(j1 - 60, 0), j1 + 60))
        expected = signal.reshape(512, 512)
        good = _corr(t1.array[k1][win], expected[win])
        # the same comparison with the geometry off by 6 mm (10 pixels, any direction) must be clearly worse
        shifted = max(_corr(t1.array[k1][win], np.roll(expected, d, axis=ax)[win]) for d in (-10, 10) for ax in (0, 1))
        assert good > 0.8 and good > shifted + 0.1, (pid, good, shifted)


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_differs(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_cohort(again, n_patients=2, n_malignant=1, seed=0, workers=2, progress=False)
    assert _digest(again) == _digest(cohort)
    other = tmp_path / "other"
    generate_cohort(other, n_patients=1, n_malignant=0, seed=1, progress=False)
    d0, d1 = _digest(cohort), _digest(other)
    common = set(d0) & set(d1)
    assert common and all(d0[f] != d1[f] for f in common if f.endswith(".dcm"))
    shutil.rmtree(again)


def test_preview_written(cohort: Path) -> None:
    png = cohort / "preview.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image as PILImage

    w, h = PILImage.open(png).size
    assert w > 400 and h > 200


def test_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spinedx.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "--patients", "1", "--malignant", "1", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 1 synthetic patients (1 malignant" in res.output
    assert (tmp_path / "c" / "cohort.csv").is_file()
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "d"), "--patients", "2", "--malignant", "3"])
    assert bad.exit_code == 2 and "--malignant" in bad.output
