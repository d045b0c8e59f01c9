"""Bad input gives one clear ImageReadError naming the file (or folder) and the problem."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomfixtures import write_non_image, write_series

from spinedx.errors import ImageReadError, SpinedxError
from spinedx.io import read_image


def _vol(nz: int = 5) -> np.ndarray:
    return (np.arange(nz * 6 * 7).reshape(nz, 6, 7) % 300).astype(np.int16)


def _err(path, **kw) -> str:
    with pytest.raises(ImageReadError) as exc:
        read_image(path, **kw)
    assert isinstance(exc.value, SpinedxError)
    return exc.value.one_line()


def test_localiser_refused(tmp_path):
    write_series(tmp_path / "loc", _vol(), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    assert "localiser" in _err(tmp_path / "loc")


def test_mixed_orientations_refused(tmp_path):
    sag = (0, 1, 0, 0, 0, -1)
    ax = (1, 0, 0, 0, 1, 0)
    write_series(tmp_path / "tri", _vol(), orientations=[sag, sag, ax, sag, sag])
    assert "different orientations" in _err(tmp_path / "tri")


def test_duplicate_positions_refused(tmp_path):
    pos = [(0, 0, 0), (4, 0, 0), (4, 0, 0), (8, 0, 0), (12, 0, 0)]
    files = write_series(tmp_path / "dup", _vol(), positions=pos)
    msg = _err(tmp_path / "dup")
    assert "share a position" in msg and files[1].name in msg and files[2].name in msg


def test_missing_slice_refused(tmp_path):
    pos = [(-4.0 * k, 0, 0) for k in (0, 1, 2, 4, 5)]  # slice 3 missing
    write_series(tmp_path / "gap", _vol(), positions=pos)
    assert "not uniform" in _err(tmp_path / "gap")


def test_unreadable_file_named(tmp_path):
    write_series(tmp_path / "s", _vol())
    (tmp_path / "s" / "IM9999.dcm").write_bytes(b"this is not dicom at all" * 10)
    msg = _err(tmp_path / "s", where="patient P1 t1")
    assert msg.startswith("patient P1 t1: ") and "IM9999.dcm" in msg and "not a DICOM file" in msg


def test_truncated_file_named(tmp_path):
    files = write_series(tmp_path / "s", _vol())
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 40])
    msg = _err(tmp_path / "s")
    assert files[2].name in msg


def test_non_image_dicom_named(tmp_path):
    sr = write_non_image(tmp_path / "sr" / "report.dcm")
    msg = _err(tmp_path / "sr")
    assert "report.dcm" in msg and "no pixel data" in msg
    msg = _err(sr)
    assert "report.dcm" in msg and "no pixel data" in msg


def test_missing_folder_named(tmp_path):
    msg = _err(tmp_path / "nowhere", where="patient P2 t2")
    assert "patient P2 t2" in msg and "nowhere" in msg and "no such file" in msg


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no DICOM files" in _err(tmp_path / "empty")


def test_axial_refused_unless_allowed(tmp_path):
    write_series(tmp_path / "ax", _vol(), row_dir=(1, 0, 0), col_dir=(0, 1, 0))
    assert "axial series where sagittal is expected" in _err(tmp_path / "ax")
    img = read_image(tmp_path / "ax", expect_sagittal=False)
    # on the canonical grid: slices from the columns (towards the left: flipped), rows from the slices (towards
    # the head: flipped), columns from the rows (anterior->posterior)
    np.testing.assert_array_equal(img.array, np.transpose(_vol(), (2, 0, 1))[::-1, ::-1, :])


def test_coronal_refused(tmp_path):
    write_series(tmp_path / "cor", _vol(), row_dir=(1, 0, 0), col_dir=(0, 0, -1))
    assert "coronal series where sagittal is expected" in _err(tmp_path / "cor")


def test_fewer_than_three_slices_refused(tmp_path):
    write_series(tmp_path / "two", _vol(2))
    assert "only 2 slice(s)" in _err(tmp_path / "two")


def test_missing_geometry_refused(tmp_path):
    files = write_series(tmp_path / "sc", _vol())
    ds = pydicom.dcmread(files[0])
    del ds.ImagePositionPatient
    ds.save_as(files[0])
    msg = _err(tmp_path / "sc")
    assert "ImagePositionPatient" in msg and files[0].name in msg


def test_nan_refused(tmp_path):
    data = np.ones((5, 6, 7), dtype=np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    assert "NaN or infinite" in _err(tmp_path / "nan.nii.gz")


def test_oblique_nifti_refused(tmp_path):
    aff = np.eye(4)
    # every file axis is 55 deg from left-right (x components 1/sqrt(3)): no sagittal stack
    aff[:3, :3] = np.array([[1, 1, 1], [1, -1, 0], [0.5, 0.5, -1]]) / np.array([[3**0.5], [2**0.5], [1.5**0.5]])
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.float32), aff), tmp_path / "obl.nii")
    msg = _err(tmp_path / "obl.nii")
    assert "series where sagittal is expected" in msg and "-0.577" in msg


def test_unreadable_nifti(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    msg = _err(tmp_path / "bad.nii.gz")
    assert "bad.nii.gz" in msg and "unreadable NIfTI" in msg
