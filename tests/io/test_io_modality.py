"""Issue 18 on the reader: only MR image series are read (another modality refused by name unless allowed, non-image
objects named as such), pixel data longer than its header read as the standard's readers read it, the header checks
shared with ``spinedx index``, and pydicom's own test files as a peer corpus."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomfixtures import write_non_image, write_series
from pydicom.uid import generate_uid

from spinedx.errors import ImageReadError
from spinedx.io import Image, ImageReadWarning, check_dicom_series, read_image
from spinedx.preprocess import ExtractConfig, extract_patches

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped with pydicom: nothing is downloaded


def _vol(nz: int = 5, ny: int = 40, nx: int = 36) -> np.ndarray:
    yy, xx = np.mgrid[0:ny, 0:nx]
    return np.stack([600 + 20 * k + 3 * yy + 2 * xx for k in range(nz)]).astype(np.int16)


def _err(path, **kw) -> str:
    with pytest.raises(ImageReadError) as exc:
        read_image(path, **kw)
    return exc.value.one_line()


def _check_err(path, **kw) -> str:
    with pytest.raises(ImageReadError) as exc:
        check_dicom_series(path, **kw)
    return exc.value.one_line()


# -- modality -----------------------------------------------------------------------------------------------------
def test_ct_series_refused_naming_the_modality_unless_allowed(tmp_path):
    write_series(tmp_path / "ct", _vol(), modality="CT")
    msg = _err(tmp_path / "ct", where="P1 t1")
    assert msg.startswith("P1 t1: ") and "not an MR image series (Modality CT)" in msg
    assert "--allow-modality CT" in msg
    img = read_image(tmp_path / "ct", where="P1 t1", allow_modality=["ct"])
    np.testing.assert_array_equal(img.array, _vol())
    assert img.meta["Modality"] == "CT" and any("Modality CT accepted" in w for w in img.meta["warnings"])
    assert "Modality CT" in _err(tmp_path / "ct", allow_modality=["US"])  # allowing another one does not help


def test_one_ct_file_among_mr_files_is_refused(tmp_path):
    files = write_series(tmp_path / "s", _vol())
    ds = pydicom.dcmread(files[3])
    ds.Modality = "CT"
    ds.save_as(files[3])
    msg = _err(tmp_path / "s")
    assert "not an MR image series (Modality CT)" in msg and files[3].name in msg


def test_no_modality_takes_the_sop_class(tmp_path):
    files = write_series(tmp_path / "s", _vol())
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.Modality
        ds.save_as(f)
    assert read_image(tmp_path / "s").shape == (5, 40, 36)  # MR Image Storage: an MR image
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        ds.save_as(f)
    msg = _err(tmp_path / "s")
    assert "not an MR image series (no Modality; SOP class CT Image Storage)" in msg
    assert read_image(tmp_path / "s", allow_modality=["CT"]).shape == (5, 40, 36)


def _segmentation(tmp_path: Path) -> Path:
    """A DICOM SEG of one slice of an MR series (highdicom), as a viewer or an AI tool writes it."""
    import highdicom as hd

    files = write_series(tmp_path / "mr", _vol())
    src = [pydicom.dcmread(f) for f in files]
    for d in src:  # the patient and study attributes highdicom copies
        for k, v in {"PatientName": "Test^T", "PatientBirthDate": "", "PatientSex": "", "StudyDate": "20240101",
                     "StudyTime": "000000", "AccessionNumber": "", "ReferringPhysicianName": "",
                     "StudyID": "1"}.items():
            setattr(d, k, v)
    mask = np.zeros((5, 40, 36), bool)
    mask[2, 10:20, 10:20] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Neoplasm"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=src, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=99, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="1",
        device_serial_number="1", omit_empty_frames=True)
    out = tmp_path / "seg" / "seg.dcm"
    out.parent.mkdir()
    seg.save_as(out)
    return out


def test_segmentation_is_named_not_an_image_series(tmp_path):
    """It said 'only 1 slice(s)'; a SEG is not an image series whatever is allowed."""
    seg = _segmentation(tmp_path)
    for path in (seg, seg.parent):
        msg = _err(path, where="P1 t1")
        assert "not an image series (Modality SEG)" in msg and "Segmentation Storage" in msg
        assert "slice(s)" not in msg and "--allow-modality" not in msg
    assert "SEG objects are not images" in _err(seg, allow_modality=["SEG"])


def test_report_is_named_not_an_image_series(tmp_path):
    sr = write_non_image(tmp_path / "sr" / "report.dcm")
    for path in (sr, sr.parent):
        msg = _err(path)
        assert "not an image series (Modality SR" in msg and "no pixel data" in msg and "report.dcm" in msg


# -- the header checks that spinedx index shares ------------------------------------------------------------------
@pytest.mark.parametrize("case", ["ct", "localiser", "missing_slice", "two_slices", "axial", "stray_file"])
def test_check_dicom_series_refuses_what_the_reader_refuses_with_its_message(tmp_path, case):
    vol = _vol()
    folder = tmp_path / case
    if case == "ct":
        write_series(folder, vol, modality="CT")
    elif case == "localiser":  # one scout image filed under the series' UID
        files = write_series(folder, vol)
        ds = pydicom.dcmread(files[4])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(files[4])
    elif case == "missing_slice":
        write_series(folder, vol)[2].unlink()
    elif case == "two_slices":
        write_series(folder, vol[:2])
    elif case == "axial":
        write_series(folder, vol, row_dir=(1, 0, 0), col_dir=(0, 1, 0))
    else:
        write_series(folder, vol)
        (folder / "notes").write_bytes(b"\x00" * 300)
    msg = _err(folder, where="P1 t2")
    assert _check_err(folder, where="P1 t2") == msg
    if case == "ct":
        assert check_dicom_series(folder, allow_modality=["CT"]).n_slices == 5


def test_check_dicom_series_reads_no_pixel_data(tmp_path, monkeypatch):
    files = write_series(tmp_path / "s", _vol(ny=300, nx=300))  # pixel data deferred (> 64 kB per file)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr("spinedx.io.dicom.decode", no_decoding)
    got = check_dicom_series(tmp_path / "s")
    assert (got.n_slices, got.shape, got.modality) == (5, (5, 300, 300), "MR")
    assert [Path(f).name for f in got.files] == [f.name for f in files]
    with pytest.raises(AssertionError, match="pixel data decoded"):  # the reader does decode through it
        read_image(tmp_path / "s")


# -- pydicom's own test files as a peer corpus -----------------------------------------------------------------------
def _corpus() -> list[tuple[str, pydicom.Dataset, np.ndarray]]:
    """Every single-frame grayscale image of pydicom's test files that pydicom itself decodes here."""
    out = []
    for f in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's notes on odd files (the padded one among them)
                ds = pydicom.dcmread(f)
                if "PixelData" not in ds or int(ds.get("SamplesPerPixel", 1)) != 1:
                    continue
                if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
                    continue
                if int(ds.get("NumberOfFrames", 1) or 1) != 1:
                    continue
                ref = pydicom.pixels.apply_rescale(ds.pixel_array, ds).astype(np.float32)
        except Exception:  # noqa: BLE001 -- what pydicom cannot read or decode here is no reference
            continue
        out.append((f.name, ds, ref))
    return out


def _as_series(f: str, folder: Path) -> Path:
    """Three copies of a file as a sagittal series: only geometry and UIDs change (the canonical grid as written)."""
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(3):
        d = pydicom.dcmread(PYDICOM_FILES / f)
        d.SeriesInstanceUID, d.SOPInstanceUID = uid, generate_uid()
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        d.ImageOrientationPatient, d.PixelSpacing = [0, 1, 0, 0, 0, -1], [1, 1]
        d.ImagePositionPatient = [-3.0 * k, 0, 0]
        d.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    return folder


@pytest.mark.slow
def test_every_grayscale_image_of_pydicoms_test_files_gives_pydicoms_pixels_and_patches(tmp_path):
    from spinedx.studyindex.header import NON_IMAGE_MODALITIES

    corpus = _corpus()
    names = [n for n, _, _ in corpus]
    assert "MR_small_padded.dcm" in names and "CT_small.dcm" in names
    compared, refused = [], []
    for name, ds, ref in corpus:
        folder = _as_series(name, tmp_path / Path(name).stem)
        modality = str(ds.get("Modality", "") or "")
        if modality in NON_IMAGE_MODALITIES:  # a segmentation or a dose grid is no T1W/T2W image
            assert f"not an image series (Modality {modality})" in _err(folder)
            refused.append(name)
            continue
        allow = [modality] if modality and modality != "MR" else []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = read_image(folder, allow_modality=allow)
        padded = [w for w in caught if issubclass(w.category, ImageReadWarning)]
        assert len(padded) == (1 if name == "MR_small_padded.dcm" else 0), name
        expected = np.stack([ref] * 3)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            expected = expected.max() + expected.min() - expected
        np.testing.assert_array_equal(img.array, expected, err_msg=name)
        ny, nx = ref.shape
        box = (nx // 4, ny // 4, max(nx // 4 + 2, 3 * nx // 4), max(ny // 4 + 2, 3 * ny // 4))
        cfg = ExtractConfig(register=False, patch_size=16)
        ours = extract_patches(img, img, [1], box, cfg).x
        theirs_img = Image(expected, img.affine.copy(), source=name)
        np.testing.assert_array_equal(ours, extract_patches(theirs_img, theirs_img, [1], box, cfg).x, err_msg=name)
        compared.append(name)
        shutil.rmtree(folder)
    # 17 files on pydicom 3.0 with this environment's decoders (FIELD-NOTES), all compared now, the padded one too
    assert len(compared) >= 17 and "MR_small_padded.dcm" in compared, (compared, refused)


# -- through the commands: extract, predict, serve ------------------------------------------------------------------
def _ct_t1_case(root: Path) -> Path:
    """A manifest of one patient whose T1 series is CT (the T2 is MR), boxes inside the images."""
    yy, xx = np.mgrid[0:64, 0:64]
    body = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15 ** 2).astype(np.int16)
    t1 = np.stack([500 - 200 * body + 5 * k for k in range(6)]).astype(np.int16)
    t2 = np.stack([100 + 300 * body + 5 * k for k in range(6)]).astype(np.int16)
    study, frame = generate_uid(), generate_uid()
    write_series(root / "P1" / "T1", t1, spacing=(1.0, 1.0, 4.0), modality="CT", echo_time=15.0, repetition_time=400.0,
                 study_uid=study, frame_uid=frame, series_description="T1 SAG")
    write_series(root / "P1" / "T2", t2, spacing=(1.0, 1.0, 4.0), study_uid=study, frame_uid=frame)
    manifest = root / "cohort.csv"
    manifest.write_text('patient_id,label,t1,t2,lesion_slices,box\nP1,benign,P1/T1,P1/T2,2;3,"16,16,48,48"\n')
    return manifest


def test_extract_refuses_a_ct_t1_unless_allowed(tmp_path):
    from typer.testing import CliRunner

    from spinedx.cli import app

    manifest = _ct_t1_case(tmp_path / "case")
    args = ["extract", str(manifest), "--out", str(tmp_path / "patches"), "--no-register", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "P1 t1" in res.output and "not an MR image series (Modality CT)" in res.output
    assert not (tmp_path / "patches" / "patches.npz").exists()
    res = CliRunner().invoke(app, [*args, "--allow-modality", "CT"])
    assert res.exit_code == 0, res.output
    assert "warning: P1: t1: Modality CT accepted (--allow-modality): not an MR image" in res.output
    # what the models will be trained on is recorded with the patches
    doc = json.loads((tmp_path / "patches" / "extract.json").read_text())
    assert doc["allow_modality"] == ["CT"]
    res = CliRunner().invoke(app, [*args, "--allow-modality", "SR"])
    assert res.exit_code == 2 and "error: --allow-modality: SR objects are not images" in res.output


@pytest.mark.slow
def test_predict_refuses_a_ct_t1_and_writes_no_sr_unless_allowed(tmp_path):
    from runhelpers import write_run
    from typer.testing import CliRunner

    from spinedx.cli import app

    run = write_run(tmp_path / "run", n_patients=12, n_folds=2, optimistic=False)
    case = tmp_path / "case"
    _ct_t1_case(case)
    out = tmp_path / "pred"
    args = ["predict", "--model", str(run), "--t1", str(case / "P1" / "T1"), "--t2", str(case / "P1" / "T2"),
            "--lesion-slices", "2;3", "--box", "16,16,48,48", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "not an MR image series (Modality CT)" in res.output, res.output
    assert not out.exists()  # no prediction, no SR
    res = CliRunner().invoke(app, [*args, "--allow-modality", "CT"])
    assert res.exit_code == 0, res.output
    assert "warning: t1: Modality CT accepted" in res.output and (out / "dicom" / "sr.dcm").is_file()


def test_serve_reads_a_ct_series_only_when_allowed(tmp_path):
    from fastapi.testclient import TestClient

    from spinedx.serve import ServeSettings, create_app

    manifest = _ct_t1_case(tmp_path / "case")
    # the workstation answers to its own host name only, and names cases by key (GET /api/cases lists them)
    with TestClient(create_app(ServeSettings(cohort=manifest)), base_url="http://127.0.0.1:8765") as client:
        key = client.get("/api/cases").json()[0]["case"]
        r = client.get(f"/api/cases/{key}/t1/2.png")
        assert r.status_code == 422 and "not an MR image series (Modality CT)" in r.text
        assert client.get(f"/api/cases/{key}/t2/2.png").status_code == 200
    with TestClient(create_app(ServeSettings(cohort=manifest, allow_modality=("CT",))),
                    base_url="http://127.0.0.1:8765") as client:
        assert client.get(f"/api/cases/{key}/t1/2.png").status_code == 200


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
@pytest.mark.parametrize("extra", [128, 64 * 64 * 2])  # some padding; a whole extra frame
def test_pixel_data_longer_than_described_gives_the_described_frame_in_every_syntax(tmp_path, name, extra):
    """The native fast path and pydicom's decoders (big endian) alike: pydicom itself would return a whole extra
    frame as a second frame (allow_excess_frames); the header describes one, and one is read."""
    folder = _as_series(name, tmp_path / "s")
    ref = pydicom.dcmread(PYDICOM_FILES / name).pixel_array.astype(np.float32)
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PixelData = ds.PixelData + b"\x07" * extra
        ds.save_as(f)
    with pytest.warns(ImageReadWarning, match=rf"in 3 of 3 file\(s\) \(e\.g\. 0\.dcm: {8192 + extra} bytes"):
        img = read_image(folder)
    np.testing.assert_array_equal(img.array, np.stack([ref] * 3))
