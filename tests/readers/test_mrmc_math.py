"""The vectorised AUC, jackknife and OR statistics against brute-force loops on small random studies."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from spinedx.common import json_clean
from spinedx.errors import SpinedxError
from spinedx.readers.lrc import read_lrc
from spinedx.readers.mrmc import (
    empirical_auc,
    jackknife_auc,
    or_analysis,
)
from spinedx.readers.standalone import standalone_vs_readers


def study(seed: int, n_mod: int = 2, n_rdr: int = 3, n_pos: int = 5, n_neg: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Ratings 1-5 (many ties), truth shuffled so positives and negatives interleave."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)])
    latent = y[None, None, :] * 1.2 + rng.normal(size=(n_mod, n_rdr, len(y)))
    return np.clip(np.round(latent * 1.5 + 2.5), 1, 5), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_jackknife_equal_loops_over_sklearn(seed: int) -> None:
    s, y = study(seed)
    auc = empirical_auc(s, y)
    jk = jackknife_auc(s, y)
    for i, j in itertools.product(range(s.shape[0]), range(s.shape[1])):
        assert auc[i, j] == pytest.approx(roc_auc_score(y, s[i, j]), abs=1e-12)
        for k in range(len(y)):
            keep = np.arange(len(y)) != k
            assert jk[i, j, k] == pytest.approx(roc_auc_score(y[keep], s[i, j, keep]), abs=1e-12)


def brute_force_or(s: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """The OR-Hillis statistics written out with plain loops (the equations of the module docstring)."""
    n_mod, n_rdr, n = s.shape
    theta = np.array([[roc_auc_score(y, s[i, j]) for j in range(n_rdr)] for i in range(n_mod)])
    jk = np.zeros(s.shape)
    for i, j, k in itertools.product(range(n_mod), range(n_rdr), range(n)):
        keep = np.arange(n) != k
        jk[i, j, k] = roc_auc_score(y[keep], s[i, j, keep])

    def cov(a: tuple[int, int], b: tuple[int, int]) -> float:
        da = jk[a] - jk[a].mean()
        db = jk[b] - jk[b].mean()
        return (n - 1) / n * sum(da[k] * db[k] for k in range(n))

    groups: dict[str, list[float]] = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for (i, j), (i2, j2) in itertools.product(itertools.product(range(n_mod), range(n_rdr)), repeat=2):
        name = {(True, True): "var", (False, True): "cov1", (True, False): "cov2", (False, False): "cov3"}[
            (i == i2, j == j2)]
        groups[name].append(cov((i, j), (i2, j2)))
    var, cov1, cov2, cov3 = (sum(v) / len(v) for v in groups.values())
    grand = theta.mean()
    ms_t = n_rdr * sum((theta[i].mean() - grand) ** 2 for i in range(n_mod)) / (n_mod - 1)
    ms_tr = sum((theta[i, j] - theta[i].mean() - theta[:, j].mean() + grand) ** 2
                for i in range(n_mod) for j in range(n_rdr)) / ((n_mod - 1) * (n_rdr - 1))
    den = ms_tr + n_rdr * max(cov2 - cov3, 0)
    ddf = den**2 / (ms_tr**2 / ((n_mod - 1) * (n_rdr - 1)))
    f = ms_t / den
    den_fr = var - cov1 + (n_rdr - 1) * max(cov2 - cov3, 0)
    return {"var": var, "cov1": cov1, "cov2": cov2, "cov3": cov3, "ms_t": ms_t, "ms_tr": ms_tr, "f": f, "ddf": ddf,
            "p": stats.f.sf(f, n_mod - 1, ddf), "chisq": (n_mod - 1) * ms_t / den_fr,
            "se01": math.sqrt(2 / n_rdr * den), "diff01": theta[0].mean() - theta[1].mean()}


@pytest.mark.parametrize("seed,n_mod,n_rdr", [(3, 2, 3), (4, 3, 4)])
def test_or_statistics_equal_brute_force(seed: int, n_mod: int, n_rdr: int) -> None:
    s, y = study(seed, n_mod, n_rdr)
    r = or_analysis(s, y)
    ref = brute_force_or(s, y)
    v = r.components
    for name in ("var", "cov1", "cov2", "cov3", "ms_t", "ms_tr"):
        assert getattr(v, name) == pytest.approx(ref[name], rel=1e-10, abs=1e-15), name
    assert r.rrrc.f == pytest.approx(ref["f"], rel=1e-10) and r.rrrc.ddf == pytest.approx(ref["ddf"], rel=1e-10)
    assert r.rrrc.p == pytest.approx(ref["p"], rel=1e-9)
    assert r.frrc.chisq == pytest.approx(ref["chisq"], rel=1e-10)
    first = r.rrrc.ci_diff[0]
    assert (first.modality_a, first.modality_b) == ("trt0", "trt1")
    assert first.estimate == pytest.approx(ref["diff01"], abs=1e-12)
    assert first.std_err == pytest.approx(ref["se01"], rel=1e-10)
    assert len(r.rrrc.ci_diff) == n_mod * (n_mod - 1) // 2
    assert len(r.frrc.ci_diff_each_reader) == n_rdr * len(r.rrrc.ci_diff)


def test_standalone_equals_brute_force() -> None:
    s, y = study(5, 1, 4, 6, 6)
    rdr = s[0]
    rng = np.random.default_rng(9)
    model = y + rng.normal(scale=0.8, size=len(y))
    res = standalone_vs_readers(model, rdr, y)
    n = len(y)
    psi_jk = np.zeros((len(rdr), n))
    for j, k in itertools.product(range(len(rdr)), range(n)):
        keep = np.arange(n) != k
        psi_jk[j, k] = roc_auc_score(y[keep], rdr[j, keep]) - roc_auc_score(y[keep], model[keep])
    c = (n - 1) / n * np.array([[np.sum((a - a.mean()) * (b - b.mean())) for b in psi_jk] for a in psi_jk])
    var = np.mean([c[j, j] for j in range(len(rdr))])
    cov2 = np.mean([c[a, b] for a in range(len(rdr)) for b in range(len(rdr)) if a != b])
    psi = np.array([roc_auc_score(y, r) for r in rdr]) - roc_auc_score(y, model)
    ms_r = psi.var(ddof=1)
    den = ms_r + len(rdr) * max(cov2, 0)
    assert res.var == pytest.approx(var, rel=1e-10) and res.cov2 == pytest.approx(cov2, rel=1e-10, abs=1e-15)
    assert res.t == pytest.approx(psi.mean() / math.sqrt(den / len(rdr)), rel=1e-10)
    assert res.df == pytest.approx(den**2 / (ms_r**2 / (len(rdr) - 1)), rel=1e-10)
    assert res.rrfc_p == pytest.approx(stats.ttest_1samp(psi, 0).pvalue, rel=1e-10)


def test_results_depend_on_ranks_only_and_modality_order() -> None:
    s, y = study(6, 2, 4, 8, 9)
    a = or_analysis(s, y)
    b = or_analysis(np.exp(s) * 10 - 3, y)  # a strictly increasing transform: same ranks, same everything
    assert a.rrrc.f == pytest.approx(b.rrrc.f, rel=1e-12) and a.rrrc.p == pytest.approx(b.rrrc.p, rel=1e-12)
    c = or_analysis(s[::-1], y, modalities=["B", "A"])
    assert c.rrrc.p == pytest.approx(a.rrrc.p, rel=1e-12)
    assert c.rrrc.ci_diff[0].estimate == pytest.approx(-a.rrrc.ci_diff[0].estimate, abs=1e-15)
    assert (c.rrrc.ci_diff[0].modality_a, c.rrrc.ci_diff[0].modality_b) == ("B", "A")


def test_degenerate_study_gives_undefined_statistics_not_numbers() -> None:
    # every reader separates the classes perfectly in both modalities: nothing varies, F is 0/0
    y = np.r_[np.zeros(4, int), np.ones(4, int)]
    s = np.broadcast_to(y * 3.0 + 1, (2, 3, 8)).copy()
    r = or_analysis(s, y)
    assert np.all(r.auc == 1.0)
    assert math.isnan(r.rrrc.f) and math.isnan(r.rrrc.p) and math.isnan(r.frrc.p) and math.isnan(r.rrfc.p)
    doc = json_clean(r.to_dict())
    assert doc["rrrc"]["f"] is None and doc["rrrc"]["p"] is None  # null in the JSON, never a made-up number


def test_jackknife_needs_two_cases_per_class() -> None:
    s = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    with pytest.raises(ValueError, match="at least 2 positive"):
        jackknife_auc(s, np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="2 modalities and 2 readers"):
        or_analysis(np.ones((1, 3, 4)), np.array([0, 0, 1, 1]))


def test_lrc_small_ratings_are_turned_round(tmp_path: Path) -> None:
    text = ('t\nA\n"m1" "m2"\nL S\n1 5\n2 4\n*\n4 2\n5 1\n*\nB\n1 5\n3 3\n*\n4 1\n4 2\n*\n#\n')
    (tmp_path / "x.lrc").write_text(text)
    reads, truth = read_lrc(tmp_path / "x.lrc")
    assert truth["truth"].tolist() == [0, 0, 1, 1]
    m2 = reads[(reads.reader == "A") & (reads.modality == "m2")]["score"].tolist()
    assert m2 == [1.0, 2.0, 4.0, 5.0]  # max 5: 6 - rating
    m1 = reads[(reads.reader == "B") & (reads.modality == "m1")]["score"].tolist()
    assert m1 == [1.0, 3.0, 4.0, 4.0]


@pytest.mark.parametrize("text,match", [
    ('t\nA\n"m1" "m2"\nL L\n1 5\n*\n4 2\n*\n', "final '#'"),
    ('t\nA\n"m1" "m2"\nL L\n1 5\n*\n4 2\n*\nB\n1 5\n2 2\n*\n4 2\n*\n#\n', "reader B has 2 negative"),
    ('t\nA\n"m1" "m2"\nL\n1 5\n*\n4 2\n*\n#\n', "line 4"),
    ('t\nA\n"m1" "m2"\nL L\n1 x\n*\n4 2\n*\n#\n', "line 5"),
    ('t\nA\n"m1" "m2"\nL L\n*\n*\n#\n', "0 negative and 0 positive"),  # was max() of nothing: a traceback
])
def test_lrc_malformed_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "x.lrc").write_text(text)
    with pytest.raises(SpinedxError, match=match):
        read_lrc(tmp_path / "x.lrc")
