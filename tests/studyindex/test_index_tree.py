"""spinedx index on the synthetic cohort and on harder trees (localiser, STIR, axial, post-contrast, derived)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cohort import load_manifest
from spinedx.io.fastheader import grouping_keys as _fast_keys
from spinedx.studyindex import index_tree, write_index
from spinedx.studyindex.scan import SYNTH_MANUFACTURER


def copy_series(src: Path, dst: Path, n: int | None = None, **tags) -> str:
    """Copy a DICOM series folder (the first ``n`` files) with a new SeriesInstanceUID and changed tags."""
    dst.mkdir(parents=True)
    uid = generate_uid()
    for f in sorted(src.glob("*.dcm"))[:n]:
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(dst / f.name, enforce_file_format=True)
    return uid


def test_synthetic_cohort_every_patient_found(synth_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "idx" / "cohort.csv"
    res = CliRunner().invoke(app, ["index", str(synth_cohort / "dicom"), "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "T1W and T2W found: 3 studies; ambiguous: 0; incomplete: 0" in res.output
    assert "synthetic cohort, simulated readers" in res.output
    draft = load_manifest(out, require_images=False, draft=True)
    truth = load_manifest(synth_cohort / "cohort.csv")
    assert draft.patient_ids == truth.patient_ids
    for d in draft:
        t = truth[d.patient_id]
        assert d.label is None and d.lesion_slices == ()
        assert d.t1 == t.t1 and d.t2 == t.t2
        assert d.synthetic and d.extra == {}  # the manifest's synthetic column (spinedx.cohort)
        assert d.t1_series_uid == pydicom.dcmread(next(t.t1.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    doc = json.loads((out.parent / "index.json").read_text())
    assert doc["counts"]["complete"] == 3 and doc["synthetic"] is True
    assert all(s["status"] == "ok" for s in doc["studies"])


def test_manufacturer_constant_matches_synth() -> None:
    from spinedx.synth.dicomwriter import MANUFACTURER

    assert SYNTH_MANUFACTURER == MANUFACTURER


@pytest.fixture(scope="module")
def hard_tree(synth_cohort: Path, module_tmp: Path) -> tuple[Path, dict[str, str]]:
    """Patient 1: the paper pair plus a localiser, STIR, axial T2, post-contrast T1 and an MPR, flat and nested;
    patient 2: two identical T2W series (ambiguous); patient 3: T2W only. Non-DICOM files and a DICOMDIR."""
    root = module_tmp
    src = synth_cohort / "dicom"
    p1, p2, p3 = sorted(p.name for p in src.iterdir())
    uids = {}
    shutil.copytree(src / p1, root / "export" / "A" / p1)
    uids["loc"] = copy_series(src / p1 / "T2", root / "export" / "A" / "loc", n=3, SeriesDescription="LOCALIZER",
                              ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesNumber=1)
    uids["stir"] = copy_series(src / p1 / "T2", root / "export" / "A" / "s5", SeriesDescription="SAG STIR",
                               ScanningSequence=["IR"], InversionTime="150", EchoTime="60", SeriesNumber=5)
    uids["ax"] = copy_series(src / p1 / "T2", root / "export" / "A" / "s6", SeriesDescription="AX T2",
                             ImageOrientationPatient=[1, 0, 0, 0, 1, 0], SeriesNumber=6)
    uids["post"] = copy_series(src / p1 / "T1", root / "export" / "A" / "s7", SeriesDescription="SAG T1",
                               ContrastBolusAgent="Gadovist", SeriesNumber=7)
    uids["mpr"] = copy_series(src / p1 / "T2", root / "export" / "A" / "s8", SeriesDescription="SAG T2 MPR",
                              ImageType=["DERIVED", "SECONDARY", "MPR"], SeriesNumber=8)
    shutil.copytree(src / p2, root / "export" / "B")
    uids["again"] = copy_series(src / p2 / "T2", root / "export" / "B" / "T2again", SeriesNumber=9)
    shutil.copytree(src / p3 / "T2", root / "flat")  # a flat folder holding a T2W only
    (root / "README.txt").write_text("not dicom")
    (root / "export" / "notes").write_bytes(b"\x00" * 300)
    (root / "DICOMDIR").write_bytes(b"\x00" * 128 + b"DICM" + b"\x00" * 64)  # a broken DICOMDIR is just skipped
    uids.update(p1=p1, p2=p2, p3=p3)
    return root, uids


def test_hard_tree_choices_and_reasons(hard_tree, tmp_path: Path) -> None:
    root, uids = hard_tree
    idx = index_tree(root, progress=False)
    others = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".dcm" and p.name != "DICOMDIR"]
    assert len(others) >= 2  # README.txt, notes (and the synthetic lesion masks)
    assert (idx.n_skipped, idx.n_dicomdir) == (len(others), 1)  # the DICOMDIR is recognised and skipped
    by_key = {s.case_key: s for s in idx.studies}
    st1 = by_key[uids["p1"]]
    assert st1.selection.status == "ok"
    assert st1.series_folder("t1") == root / "export" / "A" / uids["p1"] / "T1"
    assert st1.selection.t2.description.startswith("SAG T2 FSE")
    reasons = {v.series_uid: " ".join(v.reasons) for v in st1.selection.verdicts}
    assert "localiser" in reasons[uids["loc"]]
    assert "fat-suppressed" in reasons[uids["stir"]]
    assert "axial plane" in reasons[uids["ax"]]
    assert "contrast-enhanced" in reasons[uids["post"]]
    assert "derived" in reasons[uids["mpr"]]
    st2 = by_key[uids["p2"]]
    assert st2.selection.status == "ambiguous" and uids["again"] in st2.selection.ambiguous["t2"]
    st3 = by_key[uids["p3"]]
    assert st3.selection.status == "incomplete" and st3.selection.missing == ["t1"]
    assert st3.series_folder("t2") == root / "flat"

    manifest, json_path = write_index(idx, tmp_path / "cohort.csv")
    draft = load_manifest(manifest, require_images=False, draft=True)
    assert draft[uids["p2"]].t2 is None and draft[uids["p2"]].t1 is not None  # listed, not guessed
    assert draft[uids["p3"]].t1 is None
    doc = json.loads(json_path.read_text())
    assert doc["counts"] == {"files": idx.n_files, "dicom": idx.n_dicom, "skipped_not_dicom": len(others),
                             "dicomdir": 1,
                             "studies": 3, "complete": 1, "ambiguous": 1, "incomplete": 1, "unusable": 0}
    assert doc["synthetic"] is True  # every series, copies included, carries spinedx synth's Manufacturer


def test_fast_key_reader_agrees_with_pydicom(hard_tree) -> None:
    root, _ = hard_tree
    files = sorted(p for p in root.rglob("*.dcm"))[:40]
    for f in files:
        keys = _fast_keys(str(f))
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert keys is not None
        assert keys["SeriesInstanceUID"] == ds.SeriesInstanceUID
        assert keys["StudyInstanceUID"] == ds.StudyInstanceUID and keys["PatientID"] == ds.PatientID
    # implicit VR little endian goes through the same reader; big endian falls back to pydicom (None)
    from pydicom.uid import ImplicitVRLittleEndian

    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    imp = root.parent / "implicit.dcm"
    ds.save_as(imp, enforce_file_format=True)
    assert _fast_keys(str(imp))["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert np.array_equal(pydicom.dcmread(imp).pixel_array, ds.pixel_array)


def test_index_refuses_an_empty_tree(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    res = CliRunner().invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "c.csv"), "-q"])
    assert res.exit_code == 2
    assert "no DICOM image file found" in res.output and "Traceback" not in res.output
