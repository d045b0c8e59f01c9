"""The MRMC analysis reproduces RJafroc's published results (the data and numbers: tests/readers/data/SOURCE.md).

* Van Dyke (RJafroc ``dataset02``, ``VD.lrc``): OR analysis of the empirical AUC with jackknife covariances, RRRC,
  FRRC and RRFC, variance components and every interval RJafroc prints.
* NICO (RJafroc ``dataset09``): standalone CAD vs 9 radiologists, 1T-RRRC (RJafroc's test reference values, full
  precision, and the book chapter's tables), 1T-RRFC (printed), and 2T-RRRC (the CAD ratings replicated as a second
  treatment give the same F, ddf and p: the book's observation, a check of the OR code through another door).

The brief asks for four decimals; the tolerances here are tighter (RJafroc prints eight significant digits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spinedx.readers.analysis import analyze_reads
from spinedx.readers.lrc import read_lrc
from spinedx.readers.mrmc import ORResult, or_analysis
from spinedx.readers.standalone import standalone_vs_readers

DATA = Path(__file__).parent / "data"


def close(value: float, ref: float, *, rel: float = 2e-7) -> bool:
    """Equal to RJafroc's printed value within its rounding (8 significant digits) and to four decimals."""
    return abs(value - ref) <= max(rel * abs(ref), 1e-10) and round(value, 4) == round(ref, 4)


@pytest.fixture(scope="module")
def vd() -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_lrc(DATA / "VD.lrc")


@pytest.fixture(scope="module")
def vd_result(vd: tuple[pd.DataFrame, pd.DataFrame]) -> ORResult:
    reads, truth = vd
    res = analyze_reads(reads, truth).mrmc
    assert res is not None
    return res


def test_vd_lrc_layout(vd: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reads, truth = vd
    assert len(truth) == 114 and truth["truth"].tolist() == [0] * 69 + [1] * 45
    assert list(dict.fromkeys(reads["reader"])) == ["0", "1", "2", "3", "4"]
    assert list(dict.fromkeys(reads["modality"])) == ["0", "1"]
    assert len(reads) == 114 * 5 * 2
    # first and last lines of the file: reader 0, case 1 rated 1 (modality 0) and 3 (modality 1); reader 4's last
    # abnormal case rated 2 and 3
    first = reads[(reads.case_id == "1") & (reads.reader == "0")].set_index("modality")["score"]
    last = reads[(reads.case_id == "114") & (reads.reader == "4")].set_index("modality")["score"]
    assert first.to_dict() == {"0": 1.0, "1": 3.0} and last.to_dict() == {"0": 2.0, "1": 3.0}


def test_vd_aucs(vd_result: ORResult) -> None:
    trt0 = [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066]
    trt1 = [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169]
    for got, ref in zip(vd_result.auc.ravel(), trt0 + trt1, strict=True):
        assert close(got, ref)
    assert close(vd_result.auc_mean[0], 0.89703704) and close(vd_result.auc_mean[1], 0.94083736)


def test_vd_rrrc(vd_result: ORResult) -> None:
    r = vd_result.rrrc
    assert close(r.f, 4.4563187) and close(r.ddf, 15.259675) and close(r.p, 0.051665686)
    (d,) = r.ci_diff
    assert (d.modality_a, d.modality_b) == ("0", "1")
    assert close(d.estimate, -0.043800322) and close(d.std_err, 0.020748618) and close(d.stat, -2.1109995)
    assert close(d.low, -0.087959499) and close(d.high, 0.00035885444) and close(d.p, 0.051665686)
    each = {c.modality: c for c in r.ci_each}
    for mod, (est, se, df, lo, hi) in {"0": (0.89703704, 0.033173597, 12.744648, 0.82522360, 0.96885048),
                                       "1": (0.94083736, 0.021566368, 12.710190, 0.89413783, 0.98753689)}.items():
        c = each[mod]
        assert close(c.estimate, est) and close(c.std_err, se) and close(c.df, df)
        assert close(c.low, lo) and close(c.high, hi)


def test_vd_frrc(vd_result: ORResult) -> None:
    r = vd_result.frrc
    assert close(r.chisq, 5.4759532) and r.ndf == 1 and close(r.p, 0.019279843)
    (d,) = r.ci_diff
    assert close(d.std_err, 0.018717483) and close(d.stat, -2.3400755)
    assert close(d.low, -0.080485914) and close(d.high, -0.0071147303)
    each = {c.modality: c for c in r.ci_each}
    assert close(each["0"].std_err, 0.024289710) and close(each["0"].low, 0.84943008)
    assert close(each["1"].std_err, 0.016776324) and close(each["1"].high, 0.97371835)
    per = {c.reader: c for c in r.ci_diff_each_reader}
    assert close(per["0"].estimate, -0.028180354) and close(per["0"].std_err, 0.025512133)
    assert close(per["0"].p, 0.269338854) and close(per["0"].low, -0.078183215) and close(per["0"].high, 0.0218225068)
    assert close(per["4"].stat, -2.27341816) and close(per["4"].p, 0.023000993)
    assert close(per["4"].low, -0.186512066) and close(per["4"].high, -0.0138099949)


def test_vd_rrfc(vd_result: ORResult) -> None:
    r = vd_result.rrfc
    assert close(r.f, 8.704, rel=1e-4) and (r.ndf, r.ddf) == (1, 4) and close(r.p, 0.041958752)
    (d,) = r.ci_diff
    assert close(d.std_err, 0.014846287) and close(d.stat, -2.9502542)
    assert close(d.low, -0.085020224) and close(d.high, -0.0025804202)
    each = {c.modality: c for c in r.ci_each}
    assert close(each["0"].low, 0.82809808) and close(each["0"].high, 0.96597599)
    assert close(each["1"].low, 0.89598936) and close(each["1"].high, 0.98568536)


def test_vd_variance_components(vd_result: ORResult) -> None:
    v = vd_result.components
    assert close(v.var, 0.00080228827) and close(v.cov1, 0.00034661371)
    assert close(v.cov2, 0.00034407483) and close(v.cov3, 0.00023902837)
    assert close(v.var_tr, 0.00020040252) and close(v.var_r, 0.00153499935)
    assert close(v.ms_t, 0.00479617053) and close(v.ms_r, 0.00383619999) and close(v.ms_tr, 0.00055103062)


# ---------------------------------------------------------------------------------------------------------------
# Standalone CAD vs radiologists (RJafroc dataset09)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nico() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = pd.read_csv(DATA / "dataset09.csv")
    assert len(d) == 200 and int(d["truth"].sum()) == 80
    return d["cad"].to_numpy(float), d[[f"r{j}" for j in range(1, 10)]].to_numpy(float).T, d["truth"].to_numpy()


def test_cad_1t_rrrc_matches_rjafroc_reference_values(nico: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    cad, rad, y = nico
    s = standalone_vs_readers(cad, rad, y)
    ref = {
        "model_auc": 0.8169270833333333, "readers_mean": 0.8486631944444445, "diff": 0.03173611111111114,
        "var_r": 0.0008777926974826393, "var": 0.0013995490916340135, "cov2": 0.0009241680013129357,
        "t": 0.9928688833840893, "df": 877.886378333107, "p": 0.3210474342573218,
    }
    for name, value in ref.items():
        assert close(getattr(s, name), value, rel=1e-9), name
    fom_rad = [0.8415625, 0.8411979166666667, 0.8997395833333334, 0.838125, 0.8563541666666666, 0.8786979166666666,
               0.8583854166666667, 0.79703125, 0.826875]
    assert all(close(a, b, rel=1e-12) for a, b in zip(s.reader_auc, fom_rad, strict=True))
    assert close(s.ci_diff[0], -0.03099876877455298, rel=1e-9) and close(s.ci_diff[1], 0.09447099099677525, rel=1e-9)
    assert close(s.ci_readers[0], 0.7859283145587803, rel=1e-9)
    assert close(s.ci_readers[1], 0.9113980743301086, rel=1e-9)
    # as printed in the book chapter (three significant digits)
    assert f"{s.f:.2e}" == "9.86e-01" and f"{s.df:.2e}" == "8.78e+02" and f"{s.p:.4f}" == "0.3210"
    assert f"{s.var:.1e}" == "1.4e-03" and f"{s.cov2:.2e}" == "9.24e-04" and f"{s.var_r:.2e}" == "8.78e-04"


def test_cad_1t_rrfc_matches_printed_example(nico: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    cad, rad, y = nico
    s = standalone_vs_readers(cad, rad, y)
    assert close(s.rrfc_t, 3.213505, rel=1e-6) and s.rrfc_df == 8 and close(s.rrfc_p, 0.012359088)
    assert close(s.rrfc_ci_diff[0], 0.0089623475) and close(s.rrfc_ci_diff[1], 0.0545098747)


def test_cad_2t_rrrc_replicated_cad_gives_the_1t_test(nico: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    cad, rad, y = nico
    s = standalone_vs_readers(cad, rad, y)
    o = or_analysis(np.stack([rad, np.repeat(cad[None], len(rad), 0)]), y)
    assert o.rrrc.f == pytest.approx(s.f, rel=1e-10) and o.rrrc.ddf == pytest.approx(s.df, rel=1e-10)
    assert o.rrrc.p == pytest.approx(s.p, rel=1e-10)
    v = o.components  # the book's 2T-RRRC row (three significant digits)
    assert abs(v.var_r) < 1e-15
    assert [f"{x:.2e}" for x in (v.var_tr, v.cov1, v.cov2, v.cov3, v.var)] == [
        "2.01e-04", "2.62e-04", "7.24e-04", "2.62e-04", "9.62e-04"]
