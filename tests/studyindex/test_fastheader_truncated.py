"""A DICOM file cut short inside its file meta: the fast key reader gives up (None), and ``spinedx index`` skips it."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.io.fastheader import grouping_keys


def tiny_dicom(path: Path) -> bytes:
    """A header-only MR file (no pixels), written by pydicom; its bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", generate_uid(), generate_uid()
    ds.Rows = 4  # an element after the last key: the reader stops there
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_fast_reader_gives_up_on_every_cut_of_the_file_meta(tmp_path: Path) -> None:
    data = tiny_dicom(tmp_path / "whole.dcm")
    assert grouping_keys(str(tmp_path / "whole.dcm"))["PatientID"] == "P1"
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # (0002,0000) UL: the group's length after it
    cut = tmp_path / "cut.dcm"
    for n in range(132, len(data)):  # every length from just after "DICM" up to one byte short
        cut.write_bytes(data[:n])
        keys = grouping_keys(str(cut))  # never a struct.error
        if n < meta_end:
            assert keys is None, n  # cut inside the file meta: pydicom reads it (and refuses it)
        else:
            assert keys is None or keys["PatientID"] == "P1", n


def test_index_of_a_cut_file_is_a_refusal_not_a_traceback(tmp_path: Path) -> None:
    data = tiny_dicom(tmp_path / "whole.dcm")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "cut.dcm").write_bytes(data[:140])  # "DICM" and the first file meta element's tag and VR
    res = CliRunner().invoke(app, ["index", str(tree), "--out", str(tmp_path / "c.csv"), "-q"])
    assert res.exit_code == 2, res.output
    assert "no DICOM image file found (1 file(s) looked at, 1 not DICOM)" in res.output
    assert "Traceback" not in res.output
