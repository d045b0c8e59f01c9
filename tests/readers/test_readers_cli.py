"""``spinedx readers analyze``: the Van Dyke study end to end, and one refusal per kind of bad input.

Every refusal is one ``error:`` line on stderr naming the file (and line, column, case or reader), exit code 2, no
traceback, and no JSON written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.readers.lrc import read_lrc

DATA = Path(__file__).parent / "data"


def run(*args: str | Path) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, ["readers", "analyze", *map(str, args)])
    return res.exit_code, res.stdout, res.stderr


def write_study(folder: Path, *, n_pos: int = 4, n_neg: int = 5, readers: tuple[str, ...] = ("ann", "bob", "cy"),
                modalities: tuple[str, ...] = ("unaided", "aided"), seed: int = 0, calls: bool = False
                ) -> tuple[Path, Path, pd.DataFrame]:
    """A small fully crossed study (READS.csv, TRUTH.csv); returns the paths and the reads table."""
    rng = np.random.default_rng(seed)
    cases = [f"c{k:02d}" for k in range(n_pos + n_neg)]
    truth = pd.DataFrame({"case_id": cases, "truth": [1] * n_pos + [0] * n_neg})
    rows = []
    for m, mod in enumerate(modalities):
        for r in readers:
            for c, y in zip(cases, truth["truth"], strict=True):
                score = round(float(y * (1 + m) + rng.normal()), 3)
                row = {"case_id": c, "reader": r, "modality": mod, "score": score}
                if calls:
                    row["call"] = "malignant" if score > 0.5 else "benign"
                rows.append(row)
    reads = pd.DataFrame(rows)
    folder.mkdir(parents=True, exist_ok=True)
    reads.to_csv(folder / "READS.csv", index=False)
    truth.to_csv(folder / "TRUTH.csv", index=False)
    return folder / "READS.csv", folder / "TRUTH.csv", reads


def refused(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    return lines[0]


def test_van_dyke_end_to_end(tmp_path: Path) -> None:
    reads, truth = read_lrc(DATA / "VD.lrc")
    reads.to_csv(tmp_path / "READS.csv", index=False)
    truth.to_csv(tmp_path / "TRUTH.csv", index=False)
    out = tmp_path / "res" / "vd.json"
    code, stdout, stderr = run(tmp_path / "READS.csv", "--truth", tmp_path / "TRUTH.csv", "--json", out)
    assert code == 0, stderr
    assert "RRRC (readers and cases random): F(1, 15.26) = 4.456, p = 0.052" in stdout
    assert "0 - 1 = -0.0438 (-0.0880 to +0.0004)" in stdout
    doc = json.loads(out.read_text())
    assert doc["rrrc"]["f"] == pytest.approx(4.4563187, abs=5e-5)
    assert doc["rrrc"]["ddf"] == pytest.approx(15.259675, abs=5e-5)
    assert doc["rrrc"]["p"] == pytest.approx(0.051665686, abs=5e-5)
    assert doc["rrrc"]["ci"][0]["low"] == pytest.approx(-0.087959499, abs=5e-5)
    assert doc["rrrc"]["ci"][0]["high"] == pytest.approx(0.00035885444, abs=5e-5)
    assert doc["frrc"]["chisq"] == pytest.approx(5.4759532, abs=5e-5)
    assert doc["frrc"]["p"] == pytest.approx(0.019279843, abs=5e-5)
    assert doc["rrfc"]["f"] == pytest.approx(8.704, abs=5e-5)
    assert doc["rrfc"]["p"] == pytest.approx(0.041958752, abs=5e-5)
    assert doc["auc"]["per_reader"]["0"]["0"] == pytest.approx(0.91964573, abs=5e-5)
    assert doc["auc"]["reader_average"]["1"] == pytest.approx(0.94083736, abs=5e-5)
    assert doc["variance_components"]["var_r"] == pytest.approx(0.00153499935, rel=1e-6)
    assert doc["n_cases"] == 114 and doc["calls_from"] is None and doc["mcnemar"] is None
    assert len(doc["readers_table"]) == 10 and doc["inputs"]["reads"]["sha256"]
    assert "provenance" in doc
    assert [p.name for p in out.parent.iterdir()] == ["vd.json"]  # no temporary file left


def test_calls_model_and_mcnemar(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path, calls=True)
    model = pd.DataFrame({"case_id": [f"c{k:02d}" for k in range(9)], "score": np.linspace(0.9, 0.1, 9)})
    model.to_csv(tmp_path / "MODEL.csv", index=False)
    code, stdout, stderr = run(reads, "--truth", truth, "--model-scores", tmp_path / "MODEL.csv", "--json",
                               tmp_path / "o.json")
    assert code == 0, stderr
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["calls_from"] == "call column"
    row = next(r for r in doc["readers_table"] if r["reader"] == "ann" and r["modality"] == "aided")
    sub = table[(table.reader == "ann") & (table.modality == "aided")]
    tp = int(((sub.call == "malignant") & sub.case_id.isin([f"c{k:02d}" for k in range(4)])).sum())
    assert row["tp"] == tp and row["sensitivity"] == pytest.approx(tp / 4)
    assert row["sensitivity_low"] <= row["sensitivity"] <= row["sensitivity_high"]
    assert len(doc["mcnemar"]) == 3 * 2 and {r["group"] for r in doc["mcnemar"]} == {"positive", "negative"}
    assert [m["modality"] for m in doc["model_vs_readers"]] == ["unaided", "aided"]
    assert doc["model_vs_readers"][0]["model_auc"] == pytest.approx(1.0)  # the model ranks every positive first
    assert "model vs readers (unaided, 1T-RRRC): model AUC 1.0000" in stdout


def test_threshold_gives_calls(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    code, stdout, stderr = run(reads, "--truth", truth, "--threshold", "0.5")
    assert code == 0, stderr
    assert "readers' calls (score >= 0.5; 95% Wilson intervals)" in stdout


def test_complete_cases_only_drops_and_reports(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    gap = table.drop(index=table[(table.reader == "bob") & (table.case_id == "c07")].index)
    gap.to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert "reader bob in modality unaided lacks 1 case(s) (c07)" in msg and "--complete-cases-only" in msg
    assert "reader bob in modality aided lacks 1 case(s) (c07)" in msg and "ann" not in msg
    code, stdout, stderr = run(reads, "--truth", truth, "--complete-cases-only", "--json", tmp_path / "o.json")
    assert code == 0, stderr
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["excluded_cases"] == ["c07"] and doc["n_cases"] == 8
    assert "1 incomplete case(s) left out" in stdout


# ---------------------------------------------------------------------------------------------------------------
# one refusal per kind of bad input
# ---------------------------------------------------------------------------------------------------------------

def test_unknown_case_is_refused(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    extra = pd.DataFrame([{"case_id": "zz9", "reader": "ann", "modality": "aided", "score": 1.0}])
    pd.concat([table, extra]).to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth, "--json", tmp_path / "o.json"))
    assert str(reads) in msg and "zz9 (line 56)" in msg and "not in" in msg and str(truth) in msg
    assert not (tmp_path / "o.json").exists()


def test_unknown_reader_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    msg = refused(*run(reads, "--truth", truth, "--readers", "ann,bob"))
    assert str(reads) in msg and "cy (line" in msg and "not in the study's list (ann, bob)" in msg


def test_listed_reader_without_reads_is_missing(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    msg = refused(*run(reads, "--truth", truth, "--readers", "ann,bob,cy,dee"))
    assert "reader dee in modality unaided lacks 9 case(s)" in msg


def test_duplicate_read_is_refused(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    pd.concat([table, table.iloc[[3]]]).to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert str(reads) in msg and "duplicate reads" in msg
    assert "case c03, reader ann, modality unaided (lines 5, 56)" in msg


def test_non_numeric_score_names_line_and_column(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    table = table.astype({"score": object})
    table.loc[6, "score"] = "high"
    table.loc[9, "score"] = "inf"
    table.to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert str(reads) in msg and "column score must hold finite numbers" in msg
    assert "line 8 ('high')" in msg and "line 11 ('inf')" in msg


def test_empty_score_is_refused(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    table = table.astype({"score": object})
    table.loc[0, "score"] = ""
    table.to_csv(reads, index=False)
    assert "line 2 ('')" in refused(*run(reads, "--truth", truth))


def test_single_modality_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path, modalities=("unaided",))
    msg = refused(*run(reads, "--truth", truth))
    assert str(reads) in msg and "only one modality (unaided)" in msg and "--model-scores" in msg


def test_single_reader_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path, readers=("ann",))
    assert "only one reader (ann)" in refused(*run(reads, "--truth", truth))


def test_truth_other_than_0_1_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    t = pd.read_csv(truth, dtype=str)
    t.loc[2, "truth"] = "malignant"
    t.loc[4, "truth"] = "2"
    t.to_csv(truth, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert str(truth) in msg and "column truth must be 0 or 1" in msg
    assert "line 4 ('malignant')" in msg and "line 6 ('2')" in msg


def test_one_truth_class_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    t = pd.read_csv(truth)
    t["truth"] = 1
    t.to_csv(truth, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert str(truth) in msg and "every case is positive (1)" in msg


def test_duplicate_truth_case_is_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    t = pd.read_csv(truth)
    pd.concat([t, t.iloc[[0]]]).to_csv(truth, index=False)
    assert "case(s) listed twice: c00 (line 2), c00 (line 11)" in refused(*run(reads, "--truth", truth))


def test_missing_column_is_refused(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    table.rename(columns={"score": "rating"}).to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert str(reads) in msg and "required column(s) score missing" in msg


def test_bad_call_is_refused(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path, calls=True)
    table.loc[4, "call"] = "maybe"
    table.to_csv(reads, index=False)
    msg = refused(*run(reads, "--truth", truth))
    assert "column call must be benign/malignant (or 0/1)" in msg and "line 6 ('maybe')" in msg


def test_call_column_and_threshold_conflict(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path, calls=True)
    assert "has a call column and a threshold" in refused(*run(reads, "--truth", truth, "--threshold", "1"))


def test_model_scores_for_unknown_or_missing_cases_are_refused(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    model = tmp_path / "MODEL.csv"
    pd.DataFrame({"case_id": ["c00", "c01", "q1"], "score": [1, 2, 3]}).to_csv(model, index=False)
    msg = refused(*run(reads, "--truth", truth, "--model-scores", model))
    assert str(model) in msg and "q1 (line 4)" in msg
    pd.DataFrame({"case_id": ["c00", "c01"], "score": [1, 2]}).to_csv(model, index=False)
    msg = refused(*run(reads, "--truth", truth, "--model-scores", model))
    assert f"{model} lacks 7 case(s)" in msg
    pd.DataFrame({"case_id": ["c00", "c01", "c00"], "score": [1, 2, 3]}).to_csv(model, index=False)
    msg = refused(*run(reads, "--truth", truth, "--model-scores", model))
    assert str(model) in msg and "case(s) scored twice: c00 (line 2), c00 (line 4)" in msg


def test_one_modality_with_model_scores_runs_the_1t_comparison(tmp_path: Path) -> None:
    d = pd.read_csv(DATA / "dataset09.csv")
    reads = d.melt(id_vars=["case_id"], value_vars=[f"r{j}" for j in range(1, 10)], var_name="reader",
                   value_name="score")
    reads.insert(2, "modality", "unaided")
    reads.to_csv(tmp_path / "READS.csv", index=False)
    d[["case_id", "truth"]].to_csv(tmp_path / "TRUTH.csv", index=False)
    d[["case_id", "cad"]].rename(columns={"cad": "score"}).to_csv(tmp_path / "MODEL.csv", index=False)
    code, stdout, stderr = run(tmp_path / "READS.csv", "--truth", tmp_path / "TRUTH.csv", "--model-scores",
                               tmp_path / "MODEL.csv", "--json", tmp_path / "o.json")
    assert code == 0, stderr
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["rrrc"] is None and doc["mcnemar"] is None
    (m,) = doc["model_vs_readers"]
    assert m["p"] == pytest.approx(0.3210474342573218, abs=5e-5) and m["df"] == pytest.approx(877.886378, abs=5e-5)
    assert m["model_auc"] == pytest.approx(0.8169270833, abs=5e-5)
    assert doc["auc"]["reader_average"]["unaided"] == pytest.approx(0.8486631944, abs=5e-5)
    assert "F(1, 877.9) = 0.986, p = 0.321" in stdout


def test_bad_alpha_and_missing_file(tmp_path: Path) -> None:
    reads, truth, _ = write_study(tmp_path)
    assert "alpha: must be between 0 and 1" in refused(*run(reads, "--truth", truth, "--alpha", "1.5"))
    msg = refused(*run(tmp_path / "nope.csv", "--truth", truth))
    assert "nope.csv: reads file not found" in msg


def test_failed_analysis_leaves_an_old_json_untouched(tmp_path: Path) -> None:
    reads, truth, table = write_study(tmp_path)
    out = tmp_path / "o.json"
    out.write_text("old\n")
    pd.concat([table, table.iloc[[0]]]).to_csv(reads, index=False)
    refused(*run(reads, "--truth", truth, "--json", out))
    assert out.read_text() == "old\n"
