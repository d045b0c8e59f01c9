"""Property-based tests of the DICOM reader (hypothesis): a damaged file is read right or refused, never misread.

One file of a small valid series (rescaled int16, so rescale loss would show) is damaged at random: a tag
deleted, the file truncated at any byte, or a value replaced by bytes that are not a valid value of its VR.
The reader must then either give exactly the original voxels and geometry or refuse with a
:class:`spinedx.errors.SpinedxError`; any other exception (a traceback for the user) fails the test.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomfixtures import write_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.tag import Tag

from spinedx.errors import SpinedxError
from spinedx.io import read_image

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Tags of the image plane, pixel and series modules, and some descriptive ones that must not matter.
DELETABLE = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
             "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
             "RescaleSlope", "RescaleIntercept", "SeriesInstanceUID", "PixelData", "SOPInstanceUID",
             "InstanceNumber", "SliceThickness", "ImageType", "PatientID", "FrameOfReferenceUID", "EchoTime"]
# (keyword, VR, number of values) of the elements whose value is corrupted.
NUMERIC = [("ImagePositionPatient", "DS", 3), ("ImageOrientationPatient", "DS", 6), ("PixelSpacing", "DS", 2),
           ("RescaleSlope", "DS", 1), ("RescaleIntercept", "DS", 1), ("Rows", "US", 1), ("Columns", "US", 1),
           ("BitsAllocated", "US", 1), ("PixelRepresentation", "US", 1), ("SamplesPerPixel", "US", 1)]
TEXT = [("PhotometricInterpretation", "CS"), ("SeriesInstanceUID", "UI"), ("ImageType", "CS")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    rng = np.random.default_rng(7)
    vol = rng.integers(0, 3000, (4, 12, 10)).astype(float)
    folder = tmp_path_factory.mktemp("prop") / "s"
    files = write_series(folder, vol, spacing=(0.7, 0.8, 3.5), origin=(3.0, -20.0, 41.5), rescale=(2.0, -100.0))
    img = read_image(folder)
    return folder, [f.name for f in files], img


def _check(folder: Path, ref) -> None:
    """Read the damaged series: the same image, or a SpinedxError; nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the damage; the outcome is what matters
        try:
            img = read_image(folder)
        except SpinedxError as exc:
            assert str(exc)  # a message
            return
    np.testing.assert_array_equal(img.array, ref.array)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)


def _save_unvalidated(ds, path: Path) -> None:
    """Save a dataset holding invalid values (pydicom validates values it writes by default)."""
    settings_ = pydicom.config.settings
    old = settings_.writing_validation_mode
    settings_.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path)
    finally:
        settings_.writing_validation_mode = old


def _damaged_copy(base, k: int, damage) -> None:
    folder, names, ref = base
    with tempfile.TemporaryDirectory(prefix="spinedx-prop-") as tmp:
        copy = Path(tmp) / "s"
        shutil.copytree(folder, copy)
        damage(copy / names[k % len(names)])
        _check(copy, ref)


@SETTINGS
@given(k=st.integers(0, 3), keyword=st.sampled_from(DELETABLE))
def test_deleting_a_tag_reads_the_same_image_or_refuses(base, k, keyword):
    def damage(path: Path) -> None:
        ds = pydicom.dcmread(path)
        del ds[keyword]
        ds.save_as(path)

    _damaged_copy(base, k, damage)


@SETTINGS
@given(k=st.integers(0, 3), where=st.floats(0.0, 1.0))
def test_truncating_a_file_anywhere_reads_the_same_image_or_refuses(base, k, where):
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(where * len(data))])

    _damaged_copy(base, k, damage)


def _invalid_numbers(n: int):
    """Text that is not ``n`` decimal numbers: letters mixed in, the wrong count, or empty parts."""
    junk = st.text(alphabet="0123456789.-+eE \\abcxyz/,;", min_size=0, max_size=24)

    def valid(text: str) -> bool:
        parts = text.split("\\")
        try:
            return len(parts) == n and all(np.isfinite(float(p)) for p in parts)
        except ValueError:
            return False

    return junk.filter(lambda t: not valid(t))


@SETTINGS
@given(k=st.integers(0, 3), target=st.sampled_from(NUMERIC), data=st.data())
def test_a_corrupt_numeric_value_reads_the_same_image_or_refuses(base, k, target, data):
    keyword, vr, n = target
    if vr == "DS":
        raw = data.draw(_invalid_numbers(n)).encode("ascii")
    else:  # US: anything but one 2-byte value, or an impossible value
        raw = data.draw(st.one_of(st.binary(max_size=5).filter(lambda b: len(b) != 2),
                                  st.sampled_from([b"\x00\x00", b"\xff\xff", b"\x07\x00"])))

    def damage(path: Path) -> None:
        ds = pydicom.dcmread(path)
        elem = ds[keyword]
        ds[Tag(elem.tag)] = pydicom.dataelem.RawDataElement(Tag(elem.tag), vr, len(raw), raw, 0, False, True)
        _save_unvalidated(ds, path)

    _damaged_copy(base, k, damage)


@SETTINGS
@given(k=st.integers(0, 3), target=st.sampled_from(TEXT), text=st.text(min_size=0, max_size=20))
def test_a_corrupt_text_value_reads_the_same_image_or_refuses(base, k, target, text):
    keyword, vr = target
    raw = text.encode("utf-8", "replace")

    def damage(path: Path) -> None:
        ds = pydicom.dcmread(path)
        if raw == bytes(str(ds[keyword].value), "utf-8"):
            return
        elem = ds[keyword]
        ds[Tag(elem.tag)] = pydicom.dataelem.RawDataElement(Tag(elem.tag), vr, len(raw), raw, 0, False, True)
        _save_unvalidated(ds, path)

    _damaged_copy(base, k, damage)
