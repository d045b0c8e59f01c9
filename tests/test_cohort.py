"""The cohort manifest: loading, validation of every bad row at once, writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinedx.cohort import CaseRecord, Cohort, load_manifest, parse_box, parse_slices, write_manifest
from spinedx.errors import ManifestError, SpinedxError


def _images(root: Path) -> None:
    """Stand-in image paths (the manifest only checks that they exist)."""
    for name in ("P1/t1", "P1/t2", "P2/t1", "P2/t2"):
        (root / name).mkdir(parents=True)
    (root / "P3_t1.nii.gz").write_bytes(b"x")
    (root / "P3_t2.nii.gz").write_bytes(b"x")


GOOD = """patient_id,label,t1,t2,t2_series_uid,lesion_slices,box,feature_fluid_sign,feature_homogeneous_marrow,reader_r1,reader_senior
P1,malignant,P1/t1,P1/t2,,7;8;9,"120,80,200,160",0,0,malignant,malignant
P2,benign,P2/t1,P2/t2,1.2.3.4,5,"10,20,30,40",1,1,,benign
P3,Benign,P3_t1.nii.gz,P3_t2.nii.gz,,3;2,"1,1,5,5",0,1.0,malignant,benign
"""  # noqa: E501


def test_good_manifest_loads_with_relative_paths(tmp_path, monkeypatch):
    _images(tmp_path)
    (tmp_path / "cohort.csv").write_text(GOOD)
    monkeypatch.chdir("/")  # relative paths resolve against the manifest, not the working directory
    cohort = load_manifest(tmp_path / "cohort.csv")
    assert cohort.patient_ids == ["P1", "P2", "P3"]
    p1, p2, p3 = cohort.cases
    assert p1.t1 == tmp_path / "P1" / "t1" and p1.t2 == tmp_path / "P1" / "t2"
    assert p1.lesion_slices == (7, 8, 9) and p1.box == (120, 80, 200, 160)
    assert p1.label == "malignant" and p1.y == 1 and p2.y == 0
    assert p2.t2_series_uid == "1.2.3.4" and p1.t2_series_uid is None and p2.t1_series_uid is None
    assert p3.label == "benign" and p3.lesion_slices == (2, 3)
    assert p3.features == {"fluid_sign": 0, "homogeneous_marrow": 1}
    assert p2.readers == {"reader_r1": None, "reader_senior": "benign"}
    assert cohort.feature_names == ("homogeneous_marrow", "fluid_sign")  # Table 1 order
    assert cohort.reader_names == ("reader_r1", "reader_senior")
    assert cohort["P2"] is p2 and len(cohort) == 3 and cohort.y == [1, 0, 0]
    frame = cohort.to_frame()
    assert list(frame.columns) == ["patient_id", "label", "y", "feature_homogeneous_marrow", "feature_fluid_sign",
                                   "reader_r1", "reader_senior"]
    assert frame["y"].tolist() == [1, 0, 0] and frame["feature_fluid_sign"].tolist() == [0, 1, 0]
    assert frame["reader_r1"].isna().tolist() == [False, True, False]


def test_every_bad_row_reported_at_once(tmp_path):
    _images(tmp_path)
    text = """patient_id,label,t1,t2,lesion_slices,box,feature_fluid_sign,reader_r1
P1,malignant,P1/t1,P1/t2,7;8,"120,80,200,160",0,malignant
P1,benign,P2/t1,P2/t2,1,"1,1,5,5",1,
P3,maybe,P2/t1,missing/t2,1,"1,1,5,5",1,
P4,benign,P2/t1,P2/t2,a;b,"5,1,5,9",2,probably
P5,benign,,P2/t2,-1,"1,2,3",0,
P6,benign,P2/t1,P2/t2,1;1,"-1,0,4,4",0,
"""
    (tmp_path / "cohort.csv").write_text(text)
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "cohort.csv")
    err = exc.value
    assert isinstance(err, SpinedxError) and err.where == str(tmp_path / "cohort.csv")
    got = {(who, col) for who, col, _ in err.problems}
    assert got == {
        ("line 3 (P1)", "patient_id"),
        ("line 4 (P3)", "label"), ("line 4 (P3)", "t2"),
        ("line 5 (P4)", "lesion_slices"), ("line 5 (P4)", "box"), ("line 5 (P4)", "feature_fluid_sign"),
        ("line 5 (P4)", "reader_r1"),
        ("line 6 (P5)", "t1"), ("line 6 (P5)", "lesion_slices"), ("line 6 (P5)", "box"),
        ("line 7 (P6)", "lesion_slices"), ("line 7 (P6)", "box"),
    }
    line = err.one_line()
    assert "\n" not in line and "12 problem(s)" in line and "duplicate of line 2" in line and "'maybe'" in line


def test_header_problems(tmp_path):
    (tmp_path / "c.csv").write_text("patient_id,t2,feature_not_a_feature,feature_fluid_sign\nP1,x,0,1\n")
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "c.csv")
    got = {(who, col) for who, col, _ in exc.value.problems}
    assert {("header", "label"), ("header", "t1"), ("header", "lesion_slices"), ("header", "box"),
            ("header", "feature_not_a_feature")} <= got


def test_unquoted_box_reported(tmp_path):
    _images(tmp_path)
    (tmp_path / "c.csv").write_text("patient_id,label,t1,t2,lesion_slices,box\nP1,benign,P1/t1,P1/t2,3,1,2,3,4\n")
    with pytest.raises(ManifestError, match="must be quoted"):
        load_manifest(tmp_path / "c.csv")


def test_study_table_without_images(tmp_path):
    text = "patient_id,label,feature_fluid_sign,reader_r4\nA,benign,1,benign\nB,malignant,0,\n"
    (tmp_path / "study.csv").write_text(text)
    with pytest.raises(ManifestError, match="required column missing"):
        load_manifest(tmp_path / "study.csv")
    cohort = load_manifest(tmp_path / "study.csv", require_images=False)
    assert [c.t1 for c in cohort] == [None, None] and cohort.cases[0].lesion_slices == ()
    assert not cohort.cases[0].has_images
    assert cohort.to_frame()["feature_fluid_sign"].tolist() == [1, 0]


def test_write_then_load_round_trip(tmp_path):
    _images(tmp_path)
    cases = [
        CaseRecord("P1", "malignant", t1=tmp_path / "P1" / "t1", t2=tmp_path / "P1" / "t2", t2_series_uid="1.2.3",
                   lesion_slices=(4, 5), box=(1, 2, 30, 40), features={"fluid_sign": 1}, readers={"reader_r1": None}),
        CaseRecord("P2", "benign", t1=tmp_path / "P3_t1.nii.gz", t2=tmp_path / "P3_t2.nii.gz", lesion_slices=(9,),
                   box=(0, 0, 8, 8), features={"fluid_sign": 0}, readers={"reader_r1": "benign"}),
    ]
    out = write_manifest(cases, tmp_path / "cohort.csv")
    text = out.read_text()
    assert str(tmp_path) not in text and "P1/t1" in text  # relative paths
    back = load_manifest(out)
    assert back.cases == cases
    # a manifest in a sub-folder points up with ..
    sub = write_manifest(cases, tmp_path / "sub" / "cohort.csv")
    assert "../P1/t1" in sub.read_text()
    assert load_manifest(sub).cases == cases


def test_draft_of_a_server_keeps_series_uids_and_annotation(tmp_path):
    """A DICOMweb draft has series UIDs and (once annotated in the workstation) slices and a box, but no image
    paths: writing it back must keep them all (they were silently dropped before)."""
    cases = [CaseRecord("S1", None, t1_series_uid="1.2.3.1", t2_series_uid="1.2.3.2",  # type: ignore[arg-type]
                        lesion_slices=(5, 6), box=(10, 12, 40, 44), extra={"study_uid": "1.2.3"}),
             CaseRecord("S2", None, t1_series_uid="1.2.4.1", t2_series_uid="",  # type: ignore[arg-type]
                        extra={"study_uid": "1.2.4"})]
    out = write_manifest(cases, tmp_path / "server.csv")
    assert out.read_text().splitlines()[0] == "patient_id,label,t1_series_uid,t2_series_uid,lesion_slices,box,study_uid"
    back = load_manifest(out, require_images=False, draft=True).cases
    assert [(c.t1_series_uid, c.t2_series_uid, c.lesion_slices, c.box, c.extra) for c in back] == [
        ("1.2.3.1", "1.2.3.2", (5, 6), (10, 12, 40, 44), {"study_uid": "1.2.3"}),
        ("1.2.4.1", None, (), (0, 0, 0, 0), {"study_uid": "1.2.4"})]


def test_study_table_round_trip(tmp_path):
    cases = [CaseRecord("A", "benign", features={"fluid_sign": 1}, readers={"reader_senior": "malignant"})]
    out = write_manifest(cases, tmp_path / "s.csv")
    assert out.read_text().splitlines()[0] == "patient_id,label,feature_fluid_sign,reader_senior"
    assert load_manifest(out, require_images=False).cases == cases


def test_cohort_in_memory():
    cohort = Cohort(None, [CaseRecord("A", "benign"), CaseRecord("B", "malignant")])
    assert cohort.to_frame()["y"].dtype == np.int64


@pytest.mark.parametrize("text, expected", [("7;8;9", (7, 8, 9)), (" 3 ", (3,)), ("2,1", (1, 2))])
def test_parse_slices(text, expected):
    assert parse_slices(text) == expected


@pytest.mark.parametrize("text", ["", "a", "-1", "1;1", "1.5"])
def test_parse_slices_bad(text):
    with pytest.raises(ValueError):
        parse_slices(text)


@pytest.mark.parametrize("text", ["1,2,3", "4,4,4,9", "4,4,9,4", "-1,0,3,3", "a,b,c,d"])
def test_parse_box_bad(text):
    with pytest.raises(ValueError):
        parse_box(text)


def test_check_files_false_defers_missing_images_but_checks_formats(tmp_path):
    text = 'patient_id,label,t1,t2,lesion_slices,box\nP1,benign,gone/t1,gone/t2,3,"1,2,5,6"\n'
    (tmp_path / "c.csv").write_text(text)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "c.csv")
    case = load_manifest(tmp_path / "c.csv", check_files=False).cases[0]
    assert case.t1 == tmp_path / "gone" / "t1" and case.has_images
    (tmp_path / "c.csv").write_text(text.replace('"1,2,5,6"', ""))
    with pytest.raises(ManifestError, match=r"\[box\]"):
        load_manifest(tmp_path / "c.csv", check_files=False)


# -- issue 8: the synthetic mark, lesion masks, and messages that say what is wrong ---------------------------
def test_synthetic_column_marks_the_cohort(tmp_path):
    _images(tmp_path)
    base = 'patient_id,label,t1,t2,lesion_slices,box,synthetic\n'
    rows = ['P1,benign,P1/t1,P1/t2,3,"1,2,5,6",{}', 'P2,malignant,P2/t1,P2/t2,3,"1,2,5,6",{}']
    (tmp_path / "syn.csv").write_text(base + "\n".join(r.format(1) for r in rows) + "\n")
    cohort = load_manifest(tmp_path / "syn.csv")
    assert cohort.synthetic and all(c.synthetic for c in cohort)
    (tmp_path / "real.csv").write_text(base + "\n".join(r.format(0) for r in rows) + "\n")
    assert not load_manifest(tmp_path / "real.csv").synthetic
    (tmp_path / "none.csv").write_text(GOOD)
    assert not load_manifest(tmp_path / "none.csv").synthetic  # no column: a real cohort
    # mixing is refused, naming the rows
    (tmp_path / "mixed.csv").write_text(base + rows[0].format(1) + "\n" + rows[1].format(0) + "\n")
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "mixed.csv")
    assert "[synthetic] mixes 1 (lines 2) and 0 (lines 3)" in exc.value.one_line()
    (tmp_path / "bad.csv").write_text(base + rows[0].format("yes") + "\n")
    with pytest.raises(ManifestError, match=r"\[synthetic\] 'yes' is not 0 or 1"):
        load_manifest(tmp_path / "bad.csv")
    # write_manifest keeps the mark, and refuses to write a mixed cohort
    back = load_manifest(write_manifest(cohort.cases, tmp_path / "again.csv"))
    assert back.synthetic and back.cases == cohort.cases
    with pytest.raises(ValueError, match="either synthetic or real"):
        write_manifest([cohort.cases[0], CaseRecord("P9", "benign")], tmp_path / "m.csv")


def test_lesion_mask_column(tmp_path):
    _images(tmp_path)
    (tmp_path / "P1" / "mask.nii.gz").write_bytes(b"x")
    text = 'patient_id,label,t1,t2,lesion_slices,box,lesion_mask\nP1,benign,P1/t1,P1/t2,3,"1,2,5,6",P1/mask.nii.gz\n'
    (tmp_path / "c.csv").write_text(text)
    case = load_manifest(tmp_path / "c.csv").cases[0]
    assert case.lesion_mask == tmp_path / "P1" / "mask.nii.gz"
    assert load_manifest(tmp_path / "c.csv").has_lesion_masks
    back = load_manifest(write_manifest([case], tmp_path / "sub" / "w.csv"))
    assert back.cases[0].lesion_mask == case.lesion_mask
    (tmp_path / "c.csv").write_text(text.replace("P1/mask.nii.gz", "P1/nope.nii.gz"))
    with pytest.raises(ManifestError, match=r"\[lesion_mask\] 'P1/nope.nii.gz' does not exist"):
        load_manifest(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text(text.replace("P1/mask.nii.gz", ""))
    with pytest.raises(ManifestError, match=r"\[lesion_mask\] empty"):
        load_manifest(tmp_path / "c.csv")


def test_semicolon_separated_file_is_named(tmp_path):
    (tmp_path / "c.csv").write_text('patient_id;label;t1;t2;lesion_slices;box\nP1;benign;a;b;3;1,2,5,6\n')
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "c.csv")
    msg = exc.value.one_line()
    assert "looks semicolon-separated" in msg and "comma-separated" in msg and "quote" not in msg
    (tmp_path / "t.csv").write_text('patient_id\tlabel\tt1\nP1\tbenign\ta\n')
    with pytest.raises(ManifestError, match="looks tab-separated"):
        load_manifest(tmp_path / "t.csv")


def test_symlink_loop_and_broken_link_are_named(tmp_path):
    _images(tmp_path)
    (tmp_path / "loop").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    text = 'patient_id,label,t1,t2,lesion_slices,box\nP1,benign,loop,dangling,3,"1,2,5,6"\n'
    (tmp_path / "c.csv").write_text(text)
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "c.csv")
    msg = exc.value.one_line()
    assert "[t1] 'loop' is a symbolic link loop" in msg and "[t2] 'dangling' is a broken symbolic link" in msg


# -- property-based tests (hypothesis): a damaged manifest is refused, never misread --------------------------

PROP = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE_ROWS = [
    ["patient_id", "label", "t1", "t2", "t2_series_uid", "lesion_slices", "box", "synthetic", "feature_fluid_sign",
     "reader_r1"],
    ["P1", "malignant", "P1/t1", "P1/t2", "", "7;8;9", "120,80,200,160", "1", "0", "malignant"],
    ["P2", "benign", "P2/t1", "P2/t2", "1.2.3.4", "5", "10,20,30,40", "1", "1", ""],
    ["P3", "benign", "P3_t1.nii.gz", "P3_t2.nii.gz", "", "2;3", "1,1,5,5", "1", "0", "benign"],
]
REQUIRED = {"patient_id", "label", "t1", "t2", "lesion_slices", "box"}


def _csv(rows) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def _load(tmp_path, text: str | bytes):
    """load_manifest on the text: a Cohort, or None when refused; any other exception fails the test."""
    path = tmp_path / "m.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    try:
        return load_manifest(path, check_files=False)
    except ManifestError as exc:
        assert exc.problems and "\n" not in exc.one_line()
        return None


def _core(c: CaseRecord) -> tuple:
    return (c.patient_id, c.label, c.t1, c.t2, c.t2_series_uid, c.lesion_slices, c.box, c.synthetic, c.features)


@pytest.fixture()
def base_cohort(tmp_path):
    return _load(tmp_path, _csv(BASE_ROWS))


@PROP
@given(row=st.integers(1, 3), col=st.integers(0, 9), value=st.text(max_size=20))
def test_a_changed_cell_is_read_as_written_or_refused(tmp_path, base_cohort, row, col, value):
    rows = [list(r) for r in BASE_ROWS]
    rows[row][col] = value
    got = _load(tmp_path, _csv(rows))
    if got is None:
        return
    for i, case in enumerate(got.cases, start=1):
        if i != row:  # the other rows are untouched
            assert case == base_cohort.cases[i - 1]
    case = got.cases[row - 1]
    name = BASE_ROWS[0][col]
    if name == "box":
        assert case.box == parse_box(value)
    elif name == "lesion_slices":
        assert case.lesion_slices == parse_slices(value)
    elif name == "label":
        assert case.label == value.strip().lower()
    elif name == "synthetic":
        assert case.synthetic and got.synthetic  # a 0 would mix real and synthetic rows: refused
    # what was read is what gets written: a second round trip changes nothing
    again = load_manifest(write_manifest(got.cases, tmp_path / "w.csv"), check_files=False)
    assert again.cases == got.cases


@PROP
@given(col=st.integers(0, 9))
def test_a_deleted_column_is_refused_when_required(tmp_path, base_cohort, col):
    rows = [r[:col] + r[col + 1:] for r in BASE_ROWS]
    got = _load(tmp_path, _csv(rows))
    name = BASE_ROWS[0][col]
    if name in REQUIRED:
        assert got is None
        with pytest.raises(ManifestError, match=f"\\[{name}\\] required column missing"):
            load_manifest(tmp_path / "m.csv", check_files=False)
    else:
        assert got is not None
        assert [(c.patient_id, c.label, c.t1, c.t2, c.lesion_slices, c.box) for c in got] == \
            [(c.patient_id, c.label, c.t1, c.t2, c.lesion_slices, c.box) for c in base_cohort]


@PROP
@given(where=st.floats(0.0, 1.0))
def test_a_truncated_manifest_never_changes_a_required_value(tmp_path, base_cohort, where):
    """Cut anywhere: refused, or the rows present with their values (only the last row's trailing reader call,
    an optional cell, can be cut off without a trace: 'malignant,' and 'malignant,\\n' read alike)."""
    text = _csv(BASE_ROWS)
    got = _load(tmp_path, text[: int(where * len(text))])
    if got is None:
        return
    assert got.patient_ids == base_cohort.patient_ids[: len(got)]
    for i, case in enumerate(got.cases):
        assert _core(case) == _core(base_cohort.cases[i])
        if i < len(got) - 1:
            assert case == base_cohort.cases[i]


@PROP
@given(data=st.binary(max_size=300))
def test_random_bytes_are_refused_cleanly(tmp_path, data):
    _load(tmp_path, data)  # no traceback: a Cohort or a ManifestError


@PROP
@given(sep=st.sampled_from([";", "\t"]))
def test_other_separators_are_named(tmp_path, sep):
    text = "\n".join(sep.join(r) for r in BASE_ROWS) + "\n"
    assert _load(tmp_path, text) is None
    with pytest.raises(ManifestError, match="-separated"):
        load_manifest(tmp_path / "m.csv", check_files=False)


def test_excel_sep_line_is_understood(tmp_path):
    """Excel's first line ``sep=,`` / ``sep=;`` names the separator: honoured and skipped (issue 18). It used to be
    read as the header, so every required column was reported missing."""
    import csv
    import io

    from spinedx.cohort import read_manifest_frame

    base = [_core(c) for c in _load(tmp_path, _csv(BASE_ROWS))]
    for sep, prefix, newline, bom in ((",", "sep=,", "\n", ""), (";", "sep=;", "\r\n", "\ufeff"),
                                      (";", '"sep=;"', "\n", ""), ("\t", "sep=\t", "\n", ""),
                                      (",", "sep=,,,", "\n", "")):
        buf = io.StringIO()
        csv.writer(buf, delimiter=sep, lineterminator=newline).writerows(BASE_ROWS)  # quotes 7;8;9 under sep=;
        cohort = _load(tmp_path, bom + prefix + newline + buf.getvalue())
        assert cohort is not None, prefix
        assert [_core(c) for c in cohort] == base
        frame = read_manifest_frame(tmp_path / "m.csv", dtype={"patient_id": str})
        assert list(frame.columns) == BASE_ROWS[0] and frame["patient_id"].tolist() == ["P1", "P2", "P3"]
    # problems name the file's own line numbers (the sep= line counts)
    rows = [list(r) for r in BASE_ROWS]
    rows[2][1] = "maybe"
    (tmp_path / "m.csv").write_text("sep=,\n" + _csv(rows))
    with pytest.raises(ManifestError, match=r"line 4 \(P2\) \[label\]") as exc:
        load_manifest(tmp_path / "m.csv", check_files=False)
    assert len(exc.value.problems) == 1


def test_sep_line_with_an_unknown_separator_is_refused_in_one_line(tmp_path):
    (tmp_path / "m.csv").write_text("sep=:\n" + _csv(BASE_ROWS).replace(",", ":"))
    with pytest.raises(ManifestError) as exc:
        load_manifest(tmp_path / "m.csv", check_files=False)
    assert len(exc.value.problems) == 1 and "'sep=:'" in exc.value.one_line() and "line 1" in exc.value.one_line()


def test_the_row_schema_names_every_problem_and_carries_user_columns(tmp_path):
    """``ManifestRow`` is the schema of a row (Pydantic): every bad column at once with the manifest's messages, an
    unknown key refused; ``load_manifest`` keeps the user's own columns beside it, as text."""
    from pydantic import ValidationError

    from spinedx.cohort import ManifestRow, RowContext, row_problems

    ctx = {"row": RowContext(base=tmp_path, require_images=False)}
    row = ManifestRow.model_validate({"patient_id": "P9", "label": "Malignant", "lesion_slices": "9;7",
                                      "box": "1,2,30,40", "features": {"fluid_sign": "1.0"},
                                      "readers": {"reader_r1": "BENIGN"}}, context=ctx)
    assert (row.label, row.lesion_slices, row.box, row.features, row.readers) == (
        "malignant", (7, 9), (1, 2, 30, 40), {"fluid_sign": 1}, {"reader_r1": "benign"})
    with pytest.raises(ValidationError) as exc:
        ManifestRow.model_validate({"patient_id": "", "label": "maybe", "box": "1,2,3",
                                    "features": {"fluid_sign": "2"}, "level": "L1"}, context=ctx)
    assert row_problems(exc.value, "line 2") == [
        ("line 2", "patient_id", "empty"), ("line 2", "label", "'maybe' must be benign or malignant"),
        ("line 2", "box", "'1,2,3' is not four numbers x0,y0,x1,y1"),
        ("line 2", "feature_fluid_sign", "'2' is not 0 or 1"),
        ("line 2", "level", "not a column of the schema (load_manifest carries the user's own columns in "
                            "CaseRecord.extra)")]
    (tmp_path / "c.csv").write_text("patient_id,label,level,feature_fluid_sign\nP1,benign,L1,1\n")
    case = load_manifest(tmp_path / "c.csv", require_images=False).cases[0]
    assert case.extra == {"level": "L1"} and case.features == {"fluid_sign": 1}
