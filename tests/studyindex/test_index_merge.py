"""Issue 18 on spinedx index: --out never loses a user's work (merge into a manifest, refuse anything else, the same
for index.json, both forms), and a chosen series the reader would refuse is reported as not usable at index time."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.cohort import load_manifest
from spinedx.errors import ImageReadError, SpinedxError
from spinedx.io import read_image
from spinedx.studyindex import SelectionOptions, SeriesHeader, StudyEntry, TreeIndex, index_tree
from spinedx.studyindex import select_t1_t2_series as select_series
from spinedx.studyindex import write_index as write_tree_index

SAG = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _index(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["index", *args, "-q"])
    return res.exit_code, res.output


def _table(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _annotate(manifest: Path) -> list[list[str]]:
    """Fill in what a reader does in the workstation (and a column of the user's own); returns the table."""
    rows = _table(manifest)
    header = rows[0] + ["feature_fluid_sign", "reader_senior", "note"]
    out = [header]
    for i, r in enumerate(rows[1:]):
        rec = dict(zip(rows[0], r, strict=True))
        rec.update(label="malignant" if i == 0 else "benign", lesion_slices="5;6;7", box="236,226,298,288",
                   feature_fluid_sign="1", reader_senior="benign", note=f"seen by Dr X, {i}")
        out.append([rec[h] for h in header])
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(out)
    return out


@pytest.fixture
def tree(synth_cohort: Path, tmp_path: Path) -> Path:
    """A tree with two of the synthetic patients (the third is added later by the tests)."""
    src = synth_cohort / "dicom"
    for pid in sorted(p.name for p in src.iterdir())[:2]:
        shutil.copytree(src / pid, tmp_path / "tree" / pid)
    return tmp_path / "tree"


# -- merging ------------------------------------------------------------------------------------------------------
def test_index_over_an_annotated_manifest_keeps_every_annotation_and_adds_new_studies(tree, synth_cohort, tmp_path):
    out = tmp_path / "out" / "cohort.csv"
    code, text = _index(str(tree), "--out", str(out))
    assert code == 0, text
    assert "manifest written: 2 studies" in text
    annotated = _annotate(out)
    before = load_manifest(out, require_images=False, draft=True)

    third = sorted(p.name for p in (synth_cohort / "dicom").iterdir())[2]
    shutil.copytree(synth_cohort / "dicom" / third, tree / third)
    code, text = _index(str(tree), "--out", str(out))
    assert code == 0, text
    assert "manifest merged: 2 existing row(s) kept as they were (2 of this index's studies among them), " \
           "1 new study(ies) added" in text
    merged = _table(out)
    assert merged[:3] == annotated  # header and both rows, cell for cell
    rec = dict(zip(merged[0], merged[3], strict=True))
    assert rec["patient_id"] == third and rec["label"] == "" and rec["t2"] == f"../tree/{third}/T2"
    assert rec["note"] == "" and rec["synthetic"] == "1"
    after = load_manifest(out, require_images=False, draft=True)
    for case in before:
        kept = after[case.patient_id]
        assert (kept.label, kept.lesion_slices, kept.box, kept.features, kept.readers, kept.extra) == (
            case.label, case.lesion_slices, case.box, case.features, case.readers, case.extra)
    doc = json.loads((out.parent / "index.json").read_text())
    assert doc["merge"]["added"] == [third] and doc["merge"]["rows_kept"] == 2
    assert sorted(s["manifest_row"] for s in doc["studies"]) == ["added", "kept", "kept"]

    data = out.read_bytes()
    code, text = _index(str(tree), "--out", str(out))  # nothing new: the manifest is not touched
    assert code == 0 and "3 existing row(s) kept as they were (3 of this index's studies among them), 0 new " \
                          "study(ies) added (the file is unchanged)" in text
    assert out.read_bytes() == data


def test_a_new_study_whose_key_is_taken_is_added_under_a_free_key(tree, tmp_path):
    out = tmp_path / "cohort.csv"
    key = sorted(p.name for p in tree.iterdir())[0]
    with open(out, "w", newline="", encoding="utf-8") as fh:  # another study of a patient with the same ID
        csv.writer(fh).writerows([["patient_id", "label", "t1", "t2", "synthetic"],
                                  [key, "benign", "elsewhere/T1.nii.gz", "elsewhere/T2.nii.gz", "1"]])
    written = write_tree_index(index_tree(tree, progress=False), out)
    assert written.renamed == {key: f"{key}_2"} and written.kept == 1 and written.found_again == 0
    ids = [r[0] for r in _table(out)[1:]]
    assert ids[0] == key and f"{key}_2" in ids and len(ids) == 3
    assert f"{key} added as {key}_2 (its key is taken)" in written.summary()


@pytest.mark.parametrize("what", ["dicomdir", "other_csv", "folder", "bad_manifest"])
def test_out_that_is_not_a_spinedx_manifest_is_refused_and_left_alone(tree, tmp_path, what):
    if what == "dicomdir":  # pydicom's own CD directory file, as --out a CD's DICOMDIR
        out = tmp_path / "cd" / "DICOMDIR"
        out.parent.mkdir()
        shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "DICOMDIR", out)
        expect = "exists and is a DICOM file (a CD's DICOMDIR?), not a spinedx manifest"
    elif what == "other_csv":
        out = tmp_path / "scores.csv"
        out.write_text("case,score\n1,0.5\n")
        expect = "no patient_id and label columns"
    elif what == "folder":
        out = tmp_path / "cohort.csv"
        out.mkdir()
        expect = "is a folder"
    else:
        out = tmp_path / "cohort.csv"
        out.write_text("patient_id,label\nP1,benign\nP1,malignant\n")
        expect = "[patient_id] duplicate of line 2"
    before = out.read_bytes() if out.is_file() else None
    code, text = _index(str(tree), "--out", str(out))
    assert code == 2
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}") and expect in lines[0], text
    assert "Traceback" not in text
    if before is not None:
        assert out.read_bytes() == before
    assert not (out.parent / "index.json").exists()


def test_index_json_that_is_not_ours_is_refused_and_one_of_ours_is_merged(tree, tmp_path):
    out = tmp_path / "a" / "cohort.csv"
    out.parent.mkdir()
    (out.parent / "index.json").write_text('{"hello": 1}\n')
    code, text = _index(str(tree), "--out", str(out))
    assert code == 2 and "index.json: exists and is not a spinedx index.json" in text
    assert not out.exists() and (out.parent / "index.json").read_text() == '{"hello": 1}\n'

    (out.parent / "index.json").unlink()
    assert _index(str(tree), "--out", str(out))[0] == 0
    other = out.parent / "second.csv"  # a second manifest in the same folder would take the first one's index.json
    code, text = _index(str(tree), "--out", str(other))
    assert code == 2 and f"belongs to another manifest ({out.resolve()})" in text and not other.exists()


def _server_index(studies: list[tuple[str, str]]) -> TreeIndex:
    """What index_server returns for studies (patient ID, study UID) with a T1W and a T2W series each."""
    entries = []
    for pid, study_uid in studies:
        t1 = SeriesHeader(f"{study_uid}.1", 3, "SAG T1 SE", "MR", SAG, 15.0, 400.0, n_instances=13, n_frames=13,
                          study_uid=study_uid, patient_id=pid)
        t2 = SeriesHeader(f"{study_uid}.2", 4, "SAG T2 FSE", "MR", SAG, 90.0, 3200.0, n_instances=13, n_frames=13,
                          study_uid=study_uid, patient_id=pid)
        entries.append(StudyEntry(pid, pid, study_uid, "20240101", [t1, t2], select_series([t1, t2])))
    return TreeIndex("http://127.0.0.1:9/dicom-web", entries, options=SelectionOptions())  # type: ignore[arg-type]


def test_dicomweb_index_writer_merges_and_refuses_the_same_way(tmp_path):
    from spinedx.studyindex import write_index as write_server_index

    out = tmp_path / "server" / "cohort.csv"
    manifest, _ = write_server_index(_server_index([("P1", "1.2.3"), ("P2", "1.2.4")]), out)
    rows = _table(manifest)
    rows[1][rows[0].index("label")] = "malignant"
    rows[1] += ["keep me"]
    rows[0] += ["note"]
    rows[2] += [""]
    with open(out, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    written = write_server_index(_server_index([("P1", "1.2.3"), ("P2", "1.2.4"), ("P3", "1.2.5")]), out)
    assert (written.kept, written.found_again, written.added) == (2, 2, ("P3",))
    merged = _table(out)
    assert merged[:3] == rows and dict(zip(merged[0], merged[3], strict=True))["study_uid"] == "1.2.5"
    dicomdir = tmp_path / "DICOMDIR"
    dicomdir.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 40)
    with pytest.raises(SpinedxError, match="a DICOM file"):
        write_server_index(_server_index([("P1", "1.2.3")]), dicomdir)
    assert dicomdir.read_bytes() == b"\x00" * 128 + b"DICM" + b"\x02\x00" * 40


# -- what the reader would refuse is reported at index time ---------------------------------------------------------
def test_a_localiser_slice_in_the_chosen_t2_makes_the_study_not_usable(tree, tmp_path):
    pid = sorted(p.name for p in tree.iterdir())[0]
    t2 = tree / pid / "T2"
    ds = pydicom.dcmread(sorted(t2.glob("*.dcm"))[0])  # a scout filed under the T2 series' UID, as some scanners do
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(t2 / "IM9999.dcm")
    out = tmp_path / "cohort.csv"
    code, text = _index(str(tree), "--out", str(out))
    assert code == 0, text
    assert "T1W and T2W found: 1 studies; ambiguous: 0; incomplete: 0; not usable: 1" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{pid}:"))
    assert "not usable" in line and "localiser (scout) image" in line and "IM9999.dcm" in line
    row = load_manifest(out, require_images=False, draft=True)[pid]
    assert row.t2 is None and row.t2_series_uid is None and row.t1 is not None  # never pointed at it
    study = next(s for s in json.loads((out.parent / "index.json").read_text())["studies"] if s["case_key"] == pid)
    assert study["status"] == "unusable" and "localiser" in study["unusable"]["t2"]["reason"]
    with pytest.raises(ImageReadError) as exc:  # the reason is the reader's own
        read_image(t2, ds.SeriesInstanceUID)
    assert exc.value.message in study["unusable"]["t2"]["reason"]


def test_a_ct_study_is_refused_by_name_unless_allowed(tree, tmp_path):
    pid = sorted(p.name for p in tree.iterdir())[1]
    for f in (tree / pid).rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.save_as(f)
    out = tmp_path / "cohort.csv"
    code, text = _index(str(tree), "--out", str(out))
    assert code == 0 and f"{pid}: incomplete" in text
    study = next(s for s in json.loads((tmp_path / "index.json").read_text())["studies"] if s["case_key"] == pid)
    assert all("not an MR image series (Modality CT) (--allow-modality CT accepts it)" in v["reasons"]
               for v in study["series"])
    out.unlink()
    code, text = _index(str(tree), "--out", str(out), "--allow-modality", "ct")
    assert code == 0 and "T1W and T2W found: 2 studies" in text
    assert json.loads((tmp_path / "index.json").read_text())["options"]["allow_modality"] == ["CT"]
    code, text = _index(str(tree), "--out", str(tmp_path / "x.csv"), "--allow-modality", "SEG")
    assert code == 2 and "error: --allow-modality: SEG objects are not images" in text


def test_a_manifest_reached_through_a_symlinked_folder_is_still_its_own(tree, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = tmp_path / "link" / "cohort.csv"
    assert _index(str(tree), "--out", str(out))[0] == 0  # index.json records the resolved path
    code, text = _index(str(tree), "--out", str(out))
    assert code == 0 and "0 new study(ies) added (the file is unchanged)" in text, text
