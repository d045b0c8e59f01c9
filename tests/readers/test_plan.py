"""`spinedx readers plan`: reading lists, counterbalancing, tokens written once and stored as hashes only,
reproducible by seed, and every refusal (one `error:` line, exit 2)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinedx.cli import app as cli
from spinedx.readers.plan import COORDINATOR, StudyError, load_study, plan_study


def make_cohort(folder: Path, n: int = 10, *, malignant_every: int = 3, box: str = "10,10,40,40",
                with_images: bool = True) -> Path:
    """A manifest of ``n`` cases whose image paths exist (empty folders: planning reads no pixel)."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "patient_id,label" + (",t1,t2,lesion_slices,box" if with_images else "")
    lines = [head]
    for i in range(n):
        pid = f"P{i:03d}"
        label = "malignant" if i % malignant_every == 0 else "benign"
        if with_images:
            for w in ("t1", "t2"):
                (folder / pid / w).mkdir(parents=True, exist_ok=True)
            lines.append(f'{pid},{label},{pid}/t1,{pid}/t2,4;5;6,"{box}"')
        else:
            lines.append(f"{pid},{label}")
    path = folder / "cohort.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def tokens_of(study_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in (study_dir / "tokens").glob("*.token")}


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    return make_cohort(tmp_path / "cohort")


def test_sequential_lists_read_each_case_unaided_then_aided(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, "senior,r4,r1", "sequential", 7, tmp_path / "study")
    assert study.n_sessions == 1 and study.washout_days is None and not study.features
    ids = study.case_ids
    assert ids == [f"C{i:02d}" for i in range(1, 11)]
    assert sorted(study.patient_of(c) for c in ids) == [f"P{i:03d}" for i in range(10)]
    orders = []
    for r in study.readers:
        steps = study.steps(r, 1)
        assert [s.step for s in steps] == list(range(1, 21))
        # every case: unaided, then at once the same case aided
        for a, b in zip(steps[::2], steps[1::2], strict=True):
            assert (a.modality, b.modality) == ("unaided", "aided") and a.case_id == b.case_id
        order = [s.case_id for s in steps[::2]]
        assert sorted(order) == ids
        orders.append(order)
    assert len({tuple(o) for o in orders}) == 3, "each reader has their own random order"
    # the case numbers are not the manifest order
    assert [study.patient_of(c) for c in ids] != sorted(study.patient_of(c) for c in ids)


def test_crossover_counterbalances_the_halves_across_readers(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, ["a", "b", "c", "d"], "crossover", 3, tmp_path / "study", washout_days=30)
    assert study.n_sessions == 2 and study.washout_days == 30
    halves = study.doc["counterbalance"]["halves"]
    assert len(halves["A"]) == 5 and len(halves["B"]) == 5
    assert sorted(halves["A"] + halves["B"]) == study.case_ids
    aided1 = {}
    for r in study.readers:
        s1, s2 = study.steps(r, 1), study.steps(r, 2)
        assert len(s1) == len(s2) == 10
        assert sorted(s.case_id for s in s1) == sorted(s.case_id for s in s2) == study.case_ids
        a1 = {s.case_id for s in s1 if s.modality == "aided"}
        a2 = {s.case_id for s in s2 if s.modality == "aided"}
        assert a1 | a2 == set(study.case_ids) and not a1 & a2, "each case once aided, once unaided"
        aided1[r] = a1
        # aided and unaided reads are interleaved in one random order, not in blocks
        mods = [s.modality for s in s1]
        assert mods != sorted(mods) and mods != sorted(mods, reverse=True)
    # reader a's session-1-aided half is reader b's session-1-unaided half, alternating
    assert aided1["a"] == set(halves["A"]) and aided1["b"] == set(halves["B"])
    assert aided1["c"] == aided1["a"] and aided1["d"] == aided1["b"]
    assert study.doc["counterbalance"]["aided_first"] == {"a": "A", "b": "B", "c": "A", "d": "B"}


def test_crossover_with_an_odd_number_of_cases_and_default_washout(tmp_path: Path) -> None:
    study = plan_study(make_cohort(tmp_path / "c", 7), "x,y", "crossover", 1, tmp_path / "s")
    assert study.washout_days == 28
    halves = study.doc["counterbalance"]["halves"]
    assert (len(halves["A"]), len(halves["B"])) == (4, 3)


def test_same_seed_same_plan_other_seed_other_plan(cohort: Path, tmp_path: Path) -> None:
    a = plan_study(cohort, "senior,r4,r1", "crossover", 11, tmp_path / "a")
    b = plan_study(cohort, "senior,r4,r1", "crossover", 11, tmp_path / "b")
    c = plan_study(cohort, "senior,r4,r1", "crossover", 12, tmp_path / "c")
    for key in ("cases", "sessions", "seeds", "counterbalance"):
        assert a.doc[key] == b.doc[key], key
    assert a.doc["sessions"] != c.doc["sessions"] and a.doc["cases"] != c.doc["cases"]
    assert tokens_of(a.path) != tokens_of(b.path), "tokens are random, never derived from the seed"
    # a reader's order does not depend on who else reads
    d = plan_study(cohort, "senior,fellow", "crossover", 11, tmp_path / "d")
    assert d.doc["sessions"]["senior"] == a.doc["sessions"]["senior"]


def test_tokens_written_once_to_own_files_and_kept_only_as_hashes(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    study = plan_study(cohort, "senior,r4,r1", "sequential", 7, out)
    toks = tokens_of(out)
    assert sorted(toks) == sorted(["senior", "r4", "r1", COORDINATOR])
    assert len(set(toks.values())) == 4 and all(len(t) >= 32 for t in toks.values())
    assert stat.S_IMODE(os.stat(out / "tokens").st_mode) == 0o700
    for name in toks:
        assert stat.S_IMODE(os.stat(out / "tokens" / f"{name}.token").st_mode) == 0o600
    # no token anywhere else in the folder (study.json, the store), in any form but its salted scrypt hash
    for f in out.rglob("*"):
        if f.is_file() and f.parent.name != "tokens":
            data = f.read_bytes()
            for t in toks.values():
                assert t.encode() not in data, f
                assert hashlib.sha256(t.encode()).hexdigest().encode() not in data, f
    rec = study.doc["tokens"]
    assert rec["algorithm"] == "scrypt"
    for name, tok in toks.items():
        h = rec["principals"][name]
        expect = hashlib.scrypt(tok.encode(), salt=bytes.fromhex(h["salt"]), n=rec["n"], r=rec["r"], p=rec["p"],
                                dklen=rec["dklen"]).hex()
        assert h["hash"] == expect
        assert load_study(out).principal(tok) == name
    assert study.principal("not-a-token") is None and study.principal("") is None
    assert study.principal(toks["senior"] + "x") is None
    # planning again into the same folder is refused and leaves the tokens as they were
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "tokens").iterdir()}
    with pytest.raises(StudyError, match="never overwritten"):
        plan_study(cohort, "senior,r4,r1", "sequential", 7, out)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "tokens").iterdir()} == before


def test_study_json_holds_the_mapping_but_no_truth(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, "senior", "sequential", 7, tmp_path / "study", features=True)
    text = (study.path / "study.json").read_text()
    assert "benign" not in text and "malignant" not in text and "label" not in text
    doc = json.loads(text)
    assert doc["features"] is True and len(doc["feature_names"]) == 15
    assert doc["cohort"]["sha256"] == hashlib.sha256(cohort.read_bytes()).hexdigest()
    assert Path(doc["cohort"]["path"]) == cohort.resolve()
    # patients are named only in the mapping
    stripped = dict(doc)
    stripped.pop("cases")
    assert "P00" not in json.dumps(stripped)
    assert stat.S_IMODE(os.stat(study.path).st_mode) == 0o700


def _plan(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["readers", "plan", *args])
    return res.exit_code, res.output


@pytest.mark.parametrize(("extra", "message"), [
    (["--readers", "senior,r4,senior"], "listed twice"),
    (["--readers", "Senior Doctor"], "not usable"),
    (["--readers", "senior,,r1"], "empty reader name"),
    (["--readers", "coordinator,r1"], "reserved"),
    (["--readers", "r1", "--washout-days", "28"], "sequential design"),
    (["--readers", "r1", "--design", "parallel"], "unknown design"),
    (["--readers", "r1", "--design", "crossover", "--washout-days", "0"], "no washout"),
])
def test_bad_options_are_refused_with_one_line(cohort: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    args = [str(cohort), "--seed", "1", "--out", str(tmp_path / "s")]
    if "--design" not in extra:
        args += ["--design", "sequential"]
    code, out = _plan(args + extra)
    assert code == 2, out
    assert out.startswith("error: ") and out.count("\n") == 1 and message in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("kind", "message"), [
    ("no boxes", "[box]"),
    ("no images", "[t1]"),
    ("one case", "at least 2"),
    ("one class", "benign and malignant"),
])
def test_unusable_cohorts_are_refused(tmp_path: Path, kind: str, message: str) -> None:
    if kind == "no boxes":
        path = make_cohort(tmp_path / "c", 4)
        text = path.read_text().splitlines()
        text[2] = text[2].rsplit(",", 4)[0] + ',""'  # the second case's box emptied
        path.write_text("\n".join(text) + "\n")
    elif kind == "no images":
        path = make_cohort(tmp_path / "c", 4, with_images=False)
    elif kind == "one case":
        path = make_cohort(tmp_path / "c", 1)
    else:
        path = make_cohort(tmp_path / "c", 4, malignant_every=99)
        path.write_text(path.read_text().replace("malignant", "benign"))
    code, out = _plan([str(path), "--readers", "r1", "--design", "sequential", "--seed", "1",
                       "--out", str(tmp_path / "s")])
    assert code == 2 and out.startswith("error: ") and out.count("\n") == 1, out
    assert message in out, out
    assert not (tmp_path / "s").exists()


def test_an_existing_folder_is_never_overwritten(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, text = _plan([str(cohort), "--readers", "r1", "--design", "sequential", "--seed", "1", "--out", str(out)])
    assert code == 2 and "never overwritten" in text and text.startswith("error: ")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = _plan([str(cohort), "--readers", "r1", "--design", "sequential", "--seed", "1", "--out", str(empty)])
    assert code == 2 and "never overwritten" in text


def test_an_interrupted_plan_leaves_nothing(cohort: Path, tmp_path: Path, monkeypatch) -> None:
    import spinedx.readers.store as store

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "create_store", boom)
    with pytest.raises(KeyboardInterrupt):
        plan_study(cohort, "r1", "sequential", 1, tmp_path / "s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"], "no study folder and no temporary sibling"


def test_cli_prints_the_plan_and_never_a_token(cohort: Path, tmp_path: Path) -> None:
    code, out = _plan([str(cohort), "--readers", "senior,r4,r1", "--design", "crossover", "--seed", "5", "--out",
                       str(tmp_path / "s"), "--features"])
    assert code == 0, out
    assert "crossover design, 10 cases, readers senior, r4, r1" in out
    assert "28 days apart" in out and "aided in session 1: senior half A, r4 half B, r1 half A" in out
    assert "cannot balance the order exactly" in out and "15 imaging features" in out
    for tok in tokens_of(tmp_path / "s").values():
        assert tok not in out


def test_load_study_refuses_damage(cohort: Path, tmp_path: Path) -> None:
    study = plan_study(cohort, "r1,r2", "sequential", 1, tmp_path / "s")
    other = plan_study(cohort, "r1,r2", "sequential", 1, tmp_path / "o")
    f = study.path / "study.json"
    doc = json.loads(f.read_text())
    doc["sessions"]["r1"][0].pop()  # r1 would never read the last step
    f.write_text(json.dumps(doc))
    with pytest.raises(StudyError, match="do not read every case once unaided and once aided"):
        load_study(study.path)
    f.write_text("{not json")
    with pytest.raises(StudyError, match="damaged"):
        load_study(study.path)
    (other.path / "reads.sqlite").replace(tmp_path / "moved.sqlite")
    with pytest.raises(StudyError, match="reads are gone"):
        load_study(other.path)
    third = plan_study(cohort, "r1,r2", "sequential", 1, tmp_path / "t")
    (tmp_path / "moved.sqlite").replace(third.path / "reads.sqlite")  # another study's store
    with pytest.raises(StudyError, match="belongs to another study"):
        load_study(third.path)
    # the cohort the study was planned on, byte for byte
    c2 = make_cohort(tmp_path / "c2")
    fourth = plan_study(c2, "r1", "sequential", 1, tmp_path / "u")
    assert fourth.check_cohort(c2) == c2
    c2.write_text(c2.read_text().replace("P001,benign", "P001,malignant"))
    with pytest.raises(StudyError, match="not the one the study was planned on"):
        fourth.check_cohort(c2)
