"""Compare explanation methods on a cross-validation run whose patches carry lesion masks.

Every lesion slice is explained by the fold model that scored it out of fold (a model that never saw the
patient, as for a new case), with every method of :data:`spinedx.explain.METHODS` and two baselines that
ignore the image (random map, centre prior). Each map is scored against the slice's lesion mask by the
pointing game and the energy share (:mod:`spinedx.explain.metrics`).

Two units of analysis:

* ``case``: one slice per patient, the one that set the patient's probability (the slice the report's
  gallery shows); patients are independent, so the pointing game gets a Wilson interval
  (``statsmodels.stats.proportion.proportion_confint``) and the energy share a bootstrap interval.
* ``slice``: every lesion slice; slices of one patient are not independent, so both intervals come from
  a bootstrap that resamples patients.

Groups: all patients, malignant, benign, correct and wrong out-of-fold calls (at the run's threshold).
Run as ``python -m spinedx.explain.compare RUN_DIR --out DIR`` (docs/explanations.md).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinedx.errors import SpinedxError
from spinedx.explain.metrics import (
    centre_prior_maps,
    empty_maps,
    energy_share,
    pointing_game,
    random_maps,
)

BASELINES = ("random", "centre-prior")
BASELINE_LABELS = {"random": "Random map (baseline)", "centre-prior": "Centre prior (baseline)"}
GROUPS = ("all", "malignant", "benign", "correct", "wrong")


@dataclass
class Cases:
    """The run's out-of-fold lesion slices with their patches and masks.

    Attributes:
        x: patches ``(N, C, H, W)``.
        mask: lesion masks ``(N, H, W)``.
        slices: one row per patch: ``patient_id``, ``slice_index``, ``fold``, ``label``, ``probability``
            (the slice's out-of-fold probability), ``patient_probability``, ``prediction``, ``correct``,
            ``deciding`` (the slice that set the patient's probability), ``mask_area``.
        threshold: the run's decision threshold.
        synthetic: the patches come from a synthetic cohort (``patches.npz["synthetic"]``).
    """

    x: np.ndarray
    mask: np.ndarray
    slices: pd.DataFrame
    threshold: float
    synthetic: bool = False


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _run_tables(run_dir: Path, patches: str | Path | None) -> tuple[Path, float, pd.DataFrame, pd.DataFrame]:
    """patches.npz, threshold, out-of-fold slices and patients of a run folder.

    Run folders of this spinedx (``format`` in config.yaml) are read with the strict readers of
    :mod:`spinedx.runfolder`, and their patches must be the ones the run was trained on (sha256); folders of
    earlier versions by their CSV files and the ``patches_file`` they recorded.
    """
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise SpinedxError("config.yaml missing: not a spinedx cv run folder", where=str(run_dir))
    cfg = _read_yaml(cfg_path)
    if "format" in cfg:
        from spinedx.provenance import sha256_file
        from spinedx.runfolder import open_run

        rf, record = open_run(run_dir)
        splits = rf.read_splits()
        sl, pat = rf.read_oof_slices(splits), rf.read_oof_patients(record, splits)
        npz_path = Path(patches) if patches is not None else Path(record.patches.path)
        if npz_path.is_dir():
            npz_path = npz_path / "patches.npz"
        if npz_path.is_file() and sha256_file(npz_path) != record.patches.sha256:
            raise SpinedxError("these patches are not the ones the run was trained on (sha256 differs): pass the "
                               "run's patches.npz", where=str(npz_path))
        return npz_path, record.threshold, sl, pat
    for name in ("oof_slices.csv", "oof_patients.csv"):
        if not (run_dir / name).is_file():
            raise SpinedxError(f"{name} missing: finish the cross-validation (spinedx cv) first", where=str(run_dir))
    npz_path = Path(patches) if patches is not None else Path(str(cfg.get("patches_file", "")))
    sl = pd.read_csv(run_dir / "oof_slices.csv", dtype={"patient_id": str})
    pat = pd.read_csv(run_dir / "oof_patients.csv", dtype={"patient_id": str})
    return npz_path, float((cfg.get("config") or {}).get("threshold", 0.5)), sl, pat


def load_cases(run_dir: str | Path, patches: str | Path | None = None) -> Cases:
    """The out-of-fold slices of a finished run, joined with their patches and lesion masks.

    Args:
        run_dir: a ``spinedx cv`` run folder (``config.yaml``, ``oof_slices.csv``, ``oof_patients.csv``).
        patches: ``patches.npz`` (default: the one the run records).

    Raises:
        SpinedxError: unfinished run, patches without a ``mask`` array, or patches that are not the run's.
    """
    run_dir = Path(run_dir)
    npz_path, threshold, sl, pat = _run_tables(run_dir, patches)
    if not npz_path.is_file():
        raise SpinedxError("patches.npz not found; pass --patches", where=str(npz_path))
    with np.load(npz_path, allow_pickle=False) as npz:
        if "mask" not in npz.files:
            raise SpinedxError("the patches carry no lesion mask: extract them from a manifest with a lesion_mask "
                               "column (spinedx synth writes one)", where=str(npz_path))
        x, mask = npz["x"], npz["mask"]
        pid, sidx = npz["patient_id"].astype(str), npz["slice_index"].astype(int)
        synthetic = bool(npz["synthetic"]) if "synthetic" in npz.files else False
    sl = sl.astype({"patient_id": str})
    pat = pat.astype({"patient_id": str})
    key = {(p, s): i for i, (p, s) in enumerate(zip(pid, sidx, strict=True))}
    rows = [key.get((p, int(s))) for p, s in zip(sl["patient_id"], sl["slice_index"], strict=True)]
    if any(r is None for r in rows):
        raise SpinedxError("the run's out-of-fold slices are not all in these patches: pass the run's patches.npz",
                           where=str(npz_path))
    order = np.asarray(rows, dtype=int)
    sl = sl.merge(pat[["patient_id", "probability", "prediction"]].rename(
        columns={"probability": "patient_probability"}), on="patient_id", how="left", validate="many_to_one")
    sl["correct"] = sl["prediction"].astype(int) == sl["label"].astype(int)
    best = sl.groupby("patient_id")["probability"].idxmax()
    sl["deciding"] = False
    sl.loc[best.to_numpy(), "deciding"] = True
    m = mask[order]
    sl["mask_area"] = (m >= 0.5).mean(axis=(1, 2))
    return Cases(x=x[order], mask=m, slices=sl.reset_index(drop=True), threshold=threshold, synthetic=synthetic)


def compute_maps(
    run_dir: str | Path,
    cases: Cases,
    methods: Sequence[str],
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Maps of every method for every slice, each from the fold model that scored the slice out of fold.

    Returns:
        ``{method: (N, H, W) float32}`` and the seconds each method took in all (occlusion alone; the CAMs
        are timed one method at a time so each figure is that method's own cost).
    """
    from spinedx.explain.methods import explain
    from spinedx.models.run import load_fold_model

    run_dir = Path(run_dir)
    n, _, h, w = cases.x.shape
    maps = {m: np.zeros((n, h, w), np.float32) for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for fold in sorted(cases.slices["fold"].unique()):
        idx = np.flatnonzero(cases.slices["fold"].to_numpy() == fold)
        model = load_fold_model(run_dir / "folds" / str(int(fold)) / "model.pt", fold=int(fold))
        for m in methods:
            t0 = time.perf_counter()
            maps[m][idx] = explain(model, cases.x[idx], m)
            seconds[m] += time.perf_counter() - t0
        log(f"fold {int(fold)}: {len(idx)} slices explained")
    return maps, seconds


def baseline_maps(name: str, n: int, h: int, w: int) -> np.ndarray:
    """Maps of a baseline (``random``: seed 0; ``centre-prior``: Gaussian, sigma a quarter of the side)."""
    if name == "random":
        return random_maps(n, h, w, seed=0)
    if name == "centre-prior":
        return centre_prior_maps(n, h, w)
    raise ValueError(f"unknown baseline {name!r}")


def score(cases: Cases, maps: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (method, slice): ``hit`` (pointing game), ``energy`` (share in the mask), ``empty``.

    Slices whose mask is empty (the lesion does not reach that slice) are left out.
    """
    keep = cases.slices["mask_area"].to_numpy() > 0
    frames = []
    for name, mp in maps.items():
        df = cases.slices.loc[keep].copy()
        df.insert(0, "method", name)
        df["hit"] = pointing_game(mp[keep], cases.mask[keep])
        df["energy"] = energy_share(mp[keep], cases.mask[keep])
        df["empty"] = empty_maps(mp[keep])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _group(df: pd.DataFrame, group: str) -> pd.DataFrame:
    if group == "all":
        return df
    if group == "malignant":
        return df[df["label"].astype(int) == 1]
    if group == "benign":
        return df[df["label"].astype(int) == 0]
    if group == "correct":
        return df[df["correct"]]
    if group == "wrong":
        return df[~df["correct"]]
    raise ValueError(f"unknown group {group!r}")


def cluster_bootstrap(df: pd.DataFrame, column: str, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean of ``column`` when patients (not rows) are resampled."""
    if df.empty:
        return float("nan"), float("nan")
    sums = df.groupby("patient_id")[column].agg(["sum", "count"])
    s, c = sums["sum"].to_numpy(dtype=float), sums["count"].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(s), size=(n_boot, len(s)))
    stats = s[pick].sum(axis=1) / c[pick].sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(scores: pd.DataFrame, *, unit: str = "case", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Pointing game and energy share with 95% intervals per method and group.

    Args:
        scores: from :func:`score`.
        unit: ``case`` (each patient's deciding slice; Wilson interval for the pointing game) or ``slice``
            (every slice; patient bootstrap for both).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
    """
    from statsmodels.stats.proportion import proportion_confint

    if unit not in ("case", "slice"):
        raise ValueError(f"unit must be case or slice, not {unit!r}")
    data = scores[scores["deciding"]] if unit == "case" else scores
    rows = []
    for method, df in data.groupby("method", sort=False):
        for group in GROUPS:
            g = _group(df, group)
            n, hits = len(g), int(g["hit"].sum())
            if unit == "case" and n:
                p_lo, p_hi = proportion_confint(hits, n, alpha=0.05, method="wilson")
            else:
                p_lo, p_hi = cluster_bootstrap(g.assign(hit=g["hit"].astype(float)), "hit", n_boot, seed)
            e_lo, e_hi = cluster_bootstrap(g, "energy", n_boot, seed)
            rows.append({"method": method, "unit": unit, "group": group, "n": n,
                         "patients": int(g["patient_id"].nunique()), "hits": hits,
                         "pointing": hits / n if n else float("nan"), "pointing_lo": float(p_lo),
                         "pointing_hi": float(p_hi), "energy": float(g["energy"].mean()) if n else float("nan"),
                         "energy_lo": e_lo, "energy_hi": e_hi, "empty": int(g["empty"].sum()),
                         "mask_area": float(g["mask_area"].mean()) if n else float("nan")})
    return pd.DataFrame(rows)


def paired(scores: pd.DataFrame, reference: str, *, unit: str = "case", groups: Sequence[str] = ("all", "malignant",
           "benign"), n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each method against ``reference`` on the same slices: differences with 95% intervals.

    The pointing-game difference gets a patient bootstrap interval and, per case, McNemar's exact test on
    the discordant cases (``statsmodels.stats.contingency_tables.mcnemar``); the energy-share difference a
    patient bootstrap interval. Positive differences favour ``reference``.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    data = scores[scores["deciding"]] if unit == "case" else scores
    keys = ["patient_id", "slice_index"]
    wide_hit = data.pivot_table(index=keys, columns="method", values="hit", aggfunc="first")
    wide_en = data.pivot_table(index=keys, columns="method", values="energy", aggfunc="first")
    meta = data.drop_duplicates(keys).set_index(keys)[["label", "correct"]]
    rows = []
    for method in [m for m in data["method"].unique() if m != reference]:
        both = pd.DataFrame({"ref_hit": wide_hit[reference].astype(bool), "hit": wide_hit[method].astype(bool),
                             "d_energy": wide_en[reference] - wide_en[method]}).join(meta).reset_index()
        both["d_hit"] = both["ref_hit"].astype(float) - both["hit"].astype(float)
        for group in groups:
            g = _group(both, group)
            b = int((g["ref_hit"] & ~g["hit"]).sum())  # reference hits, method misses
            c = int((~g["ref_hit"] & g["hit"]).sum())
            p = float(mcnemar([[0, b], [c, 0]], exact=True).pvalue) if unit == "case" and b + c else float("nan")
            h_lo, h_hi = cluster_bootstrap(g, "d_hit", n_boot, seed)
            e_lo, e_hi = cluster_bootstrap(g, "d_energy", n_boot, seed)
            rows.append({"reference": reference, "method": method, "unit": unit, "group": group, "n": len(g),
                         "pointing_diff": float(g["d_hit"].mean()), "pointing_diff_lo": h_lo,
                         "pointing_diff_hi": h_hi, "only_reference_hits": b, "only_method_hits": c,
                         "mcnemar_p": p, "energy_diff": float(g["d_energy"].mean()), "energy_diff_lo": e_lo,
                         "energy_diff_hi": e_hi})
    return pd.DataFrame(rows)


def example_figure(cases: Cases, maps: dict[str, np.ndarray], labels: dict[str, str], rows: Sequence[int],
                   titles: Sequence[str], *, synthetic: bool = True, panel_inches: float = 1.35):
    """Rows of cases: T2W crop with the mask outline, then each method's map on T2W with the same outline."""
    from matplotlib.figure import Figure

    from spinedx.explain.overlay import channel_index
    from spinedx.explain.render import blend_heat, window

    names = list(maps)
    fig = Figure(figsize=(panel_inches * (len(names) + 1), panel_inches * len(rows) + 0.5), dpi=110)
    axes = np.atleast_2d(fig.subplots(len(rows), len(names) + 1))
    for r, (i, title) in enumerate(zip(rows, titles, strict=True)):
        t2 = window(cases.x[i, channel_index("T2 s")])
        for c in range(len(names) + 1):
            ax = axes[r, c]
            heat = maps[names[c - 1]][i] if c > 0 else None
            ax.imshow(blend_heat(t2, heat, alpha=0.65), interpolation="nearest")
            if heat is not None:
                if heat.max() > heat.min():  # the centre of the pixels at the maximum (a flat corner for 2x2 maps)
                    peak = np.argwhere(heat == heat.max()).mean(axis=0)
                    ax.plot(peak[1], peak[0], marker="+", color="white", markersize=7, mew=1.5)
            ax.contour(cases.mask[i], levels=[0.5], colors=["lime"], linewidths=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("T2W + mask" if c == 0 else labels.get(names[c - 1], names[c - 1]), fontsize=7)
            if c == 0:
                ax.set_ylabel(title, fontsize=6.5)
    what = "Synthetic cohort, simulated lesions: maps" if synthetic else "Maps"
    fig.suptitle(f"{what} of the out-of-fold model (green: lesion mask, +: map maximum)", fontsize=7.5)
    fig.tight_layout(pad=0.3)
    return fig


def pick_examples(cases: Cases, seed: int = 0) -> tuple[list[int], list[str]]:
    """One deciding slice per outcome (TP, FN, TN, FP) where present, drawn at random (not chosen by eye)."""
    sl = cases.slices
    rng = np.random.default_rng(seed)
    rows, titles = [], []
    for name, label, correct in (("TP", 1, True), ("FN", 1, False), ("TN", 0, True), ("FP", 0, False)):
        cand = sl[sl["deciding"] & (sl["label"].astype(int) == label) & (sl["correct"] == correct)
                  & (sl["mask_area"] > 0)]
        if cand.empty:
            continue
        i = int(rng.choice(cand.index.to_numpy()))
        rows.append(i)
        titles.append(f"{name} {sl.at[i, 'patient_id']}\np={sl.at[i, 'patient_probability']:.2f}")
    return rows, titles


def run_comparison(
    run_dir: str | Path,
    out: str | Path,
    *,
    patches: str | Path | None = None,
    methods: Sequence[str] | None = None,
    n_boot: int = 2000,
    log: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Explain every out-of-fold slice with every method, score, and write the comparison folder.

    ``out`` gets ``scores.csv`` (per method and slice), ``summary.csv`` (both units, every group),
    ``paired.csv`` (every method against :data:`~spinedx.explain.DEFAULT_METHOD`, see :func:`paired`),
    ``maps.npz`` (float16 maps, to redraw figures), ``examples.png`` and ``comparison.json`` (settings,
    timings, the run's AUC); it is written whole or not at all.

    Returns:
        The summary table.
    """
    from spinedx.explain.methods import DEFAULT_METHOD, METHODS
    from spinedx.fsutil import atomic_dir

    methods = list(methods) if methods else list(METHODS)
    cases = load_cases(run_dir, patches)
    maps, seconds = compute_maps(run_dir, cases, methods, log=log)
    n, _, h, w = cases.x.shape
    all_maps: dict[str, np.ndarray] = {**maps, **{b: baseline_maps(b, n, h, w) for b in BASELINES}}
    scores = score(cases, all_maps)
    summary = pd.concat([summarise(scores, unit=u, n_boot=n_boot) for u in ("case", "slice")], ignore_index=True)
    reference = DEFAULT_METHOD if DEFAULT_METHOD in methods else methods[0]
    pairs = pd.concat([paired(scores, reference, unit=u, n_boot=n_boot) for u in ("case", "slice")],
                      ignore_index=True)
    labels = {m: METHODS[m].label for m in methods} | BASELINE_LABELS
    rows, titles = pick_examples(cases)
    fig = example_figure(cases, {m: maps[m] for m in methods} | {"centre-prior": all_maps["centre-prior"]},
                         labels, rows, titles, synthetic=cases.synthetic)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text()) if (Path(run_dir) / "metrics.json").is_file() \
        else {}
    record = {"run_dir": str(Path(run_dir).resolve()), "methods": methods, "baselines": list(BASELINES),
              "seconds": seconds, "n_slices": int(n), "n_patients": int(cases.slices["patient_id"].nunique()),
              "threshold": cases.threshold, "paired_reference": reference, "run_auc": metrics.get("auc"),
              "bootstrap_resamples": n_boot, "synthetic": cases.synthetic,
              "examples": [str(t).replace("\n", " ") for t in titles]}
    with atomic_dir(out) as tmp:
        scores.to_csv(tmp / "scores.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        pairs.to_csv(tmp / "paired.csv", index=False)
        half: dict[str, Any] = {k: v.astype(np.float16) for k, v in maps.items()}
        with open(tmp / "maps.npz", "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(fh, **half)
        fig.savefig(tmp / "examples.png", dpi=fig.dpi, bbox_inches="tight", pad_inches=0.04)
        (tmp / "comparison.json").write_text(json.dumps(record, indent=1, default=str))
    return summary


def format_table(summary: pd.DataFrame, unit: str = "case", groups: Sequence[str] = GROUPS) -> str:
    """A Markdown table: one row per method, pointing game and energy share (95% intervals) per group."""
    df = summary[summary["unit"] == unit]
    head = "| method | " + " | ".join(f"{g} pointing | {g} energy" for g in groups) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(groups))]
    for method, g in df.groupby("method", sort=False):
        cells = []
        for group in groups:
            r = g[g["group"] == group].iloc[0]
            cells.append(f"{r['pointing']:.2f} ({r['pointing_lo']:.2f}-{r['pointing_hi']:.2f}) n={r['n']}")
            cells.append(f"{r['energy']:.2f} ({r['energy_lo']:.2f}-{r['energy_hi']:.2f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spinedx.explain.compare RUN_DIR --out DIR [--patches FILE] [--methods a,b] [--bootstrap N]``."""
    parser = argparse.ArgumentParser(prog="python -m spinedx.explain.compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patches", type=Path, default=None)
    parser.add_argument("--methods", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        summary = run_comparison(args.run_dir, args.out, patches=args.patches,
                                 methods=args.methods.split(",") if args.methods else None, n_boot=args.bootstrap)
    except SpinedxError as exc:
        print(f"error: {exc}")
        return 2
    if json.loads((args.out / "comparison.json").read_text()).get("synthetic"):
        print("synthetic cohort, simulated lesions")
    print(format_table(summary, "case", ("all", "malignant", "benign")))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
