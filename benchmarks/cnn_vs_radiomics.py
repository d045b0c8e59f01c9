"""CNN training variants against the radiomics baseline on the same outer folds, with learning curves.

Diagnosis tool for issue 13 item 1 (docs/training.md, "Why the CNN trailed, and the CPU profile"). It trains
the pipeline's own :class:`spinedx.training.engine.Trainer` (same splits as ``spinedx cv``: 10 folds by patient,
inner early-stopping patients, patient probability = max, threshold 0.5) for each named variant on a few outer
folds, records per epoch the training loss, the inner validation loss and AUC, and (diagnostic only, never used
to choose anything inside a run) the outer fold's patient AUC; and fits the radiomics baseline
(:mod:`spinedx.baselines`) on exactly the same outer folds.

Use development cohorts only (seeds in :data:`spinedx.synth.seeds.DEVELOPMENT_SEEDS`).

    python benchmarks/cnn_vs_radiomics.py PATCHES_DIR --variants quick,r18 --folds-used 0,1,2,3 --out res.json
    python benchmarks/cnn_vs_radiomics.py --plot res.json --png docs/img/curves.png

Ends with ``RESULT cnn_vs_radiomics <AUC(best variant) - AUC(radiomics)>`` on the folds used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Variants: overrides of the ``quick`` profile (CVConfig fields).
VARIANTS: dict[str, dict[str, Any]] = {
    "quick": {},
    "r18": {"backbone": "resnet18"},
    "r18_v4": {"backbone": "resnet18", "views_benign": 4, "views_malignant": 8},
    "r18_v4_oc": {"backbone": "resnet18", "views_benign": 4, "views_malignant": 8, "lr": 1e-3,
                  "lr_schedule": "onecycle"},
    "r18_v2_oc": {"backbone": "resnet18", "views_benign": 2, "views_malignant": 4, "lr": 1e-3,
                  "lr_schedule": "onecycle"},
    "r18_v4_oc_b": {"backbone": "resnet18", "views_benign": 4, "views_malignant": 8, "lr": 1e-3,
                    "lr_schedule": "onecycle", "betas": (0.9, 0.999)},
    "r18_v4_oc_np": {"backbone": "resnet18", "views_benign": 4, "views_malignant": 8, "lr": 1e-3,
                     "lr_schedule": "onecycle", "patience": 0},
    "r18_v4_oc12": {"backbone": "resnet18", "views_benign": 4, "views_malignant": 8, "lr": 1e-3,
                    "lr_schedule": "onecycle", "epochs": 12, "patience": 0},
    "r34_v4_oc": {"backbone": "resnet34", "views_benign": 4, "views_malignant": 8, "lr": 1e-3,
                  "lr_schedule": "onecycle"},
    "mv3s_es": {"backbone": "mobilenet_v3_small", "epochs": 10, "patience": 0, "views_benign": 2,
                "views_malignant": 4, "lr": 1e-3, "lr_schedule": "onecycle", "betas": (0.9, 0.999)},
    "mv3s_last": {"backbone": "mobilenet_v3_small", "epochs": 10, "patience": 0, "views_benign": 2,
                  "views_malignant": 4, "lr": 1e-3, "lr_schedule": "onecycle", "betas": (0.9, 0.999),
                  "early_stop_on": "none"},
    "cpu_no_bn": {"backbone": "mobilenet_v3_small", "epochs": 14, "patience": 0, "views_benign": 2,
                  "views_malignant": 4, "lr": 1e-3, "lr_schedule": "onecycle", "betas": (0.9, 0.999),
                  "early_stop_on": "none"},  # the cpu profile before its BatchNorm re-estimation
    "cpu_no_tta": {"backbone": "mobilenet_v3_small", "epochs": 14, "patience": 0, "views_benign": 2,
                   "views_malignant": 4, "lr": 1e-3, "lr_schedule": "onecycle", "betas": (0.9, 0.999),
                   "early_stop_on": "none", "recalibrate_bn": True},  # the cpu profile before test-time augmentation
    "cpu": {},  # the landed cpu profile itself (profile name below): mobilenet_v3_small, 14 epochs, last epoch kept,
                # BatchNorm statistics re-estimated on the training patches, test-time augmentation (affine8)
}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(np.asarray(y).tolist())) == 2 else float("nan")


def _patient_max(pid: np.ndarray, y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pats = sorted(set(pid.tolist()))
    yy = np.array([int(y[pid == q].max()) for q in pats])
    pp = np.array([float(p[pid == q].max()) for q in pats])
    return yy, pp


def run(patches_dir: str, variants: list[str], folds_used: list[int], seed: int, threads: int,
        radiomics_from: str | None = None, save: str | None = None) -> dict[str, Any]:
    import torch

    from spinedx.evaluation.splits import make_splits, patient_labels
    from spinedx.inference import TorchEngine
    from spinedx.models.net import build_model
    from spinedx.models.tta import TTAViews
    from spinedx.runfolder import load_patches
    from spinedx.training.config import PROFILES, CVConfig
    from spinedx.training.engine import Trainer, fold_seed, initial_state, recalibrate_batchnorm

    torch.set_num_threads(threads)
    ps = load_patches(patches_dir)
    pid, y, x = ps.patient_id.astype(str), ps.label.astype(int), ps.x
    splits = make_splits(patient_labels(pid, y), 10, seed, 0.1)
    fold_of = splits["fold_of"]
    fold_arr = np.array([fold_of[q] for q in pid])
    used = np.isin(fold_arr, folds_used)
    out: dict[str, Any] = {"patches": str(ps.path), "sha256": ps.sha256, "folds_used": folds_used, "seed": seed,
                           "threads": threads, "n_patients_scored": int(len(set(pid[used].tolist()))),
                           "variants": {}}
    t0 = time.process_time()
    old = json.loads(Path(radiomics_from).read_text()) if radiomics_from else None
    if old is not None and old["sha256"] == ps.sha256 and old["folds_used"] == folds_used and old["seed"] == seed:
        out["radiomics"] = old["radiomics"]  # same patches, folds and seed: same baseline (it is deterministic)
    else:
        out["radiomics"] = _radiomics(x, y, pid, fold_of, folds_used, used, seed)
        out["radiomics"]["cpu_s"] = time.process_time() - t0
    print(f"radiomics AUC {out['radiomics']['auc']:.3f} on folds {folds_used}", flush=True)
    _save(out, save)
    out["radiomics"]["per_fold"] = {int(k): v for k, v in out["radiomics"]["per_fold"].items()}
    for name in variants:
        over = dict(VARIANTS[name])
        profile = "cpu" if name == "cpu" and "cpu" in PROFILES else "quick"
        cfg = CVConfig.from_profile(profile, **over)
        model, _ = build_model(cfg.backbone, "none", dropout=cfg.dropout)
        trainer = Trainer(model, torch.device("cpu"), bf16=False, channels_last=cfg.channels_last, compile=False)
        oof = np.full(len(y), np.nan)
        per_epoch = np.full((cfg.epochs, len(y)), np.nan)  # each epoch's out-of-fold predictions (diagnostic)
        curves, per_fold = [], {}
        w0, c0 = time.perf_counter(), time.process_time()
        for k in folds_used:
            sp = next(s for s in splits["splits"] if s["fold"] == k)
            val = np.isin(pid, sp["val"])
            es = np.isin(pid, sp["inner_val"])
            tr = ~val & ~es
            sk = fold_seed(cfg.seed, k)

            def build(cfg: CVConfig = cfg) -> torch.nn.Module:
                return build_model(cfg.backbone, "none", dropout=cfg.dropout)[0]

            trainer.reset(initial_state(build, sk))
            torch.manual_seed(sk)
            rows: list[dict[str, float]] = []

            def on_epoch(row: dict[str, float], val: np.ndarray = val, es: np.ndarray = es,
                         rows: list[dict[str, float]] = rows, trainer: Trainer = trainer,
                         per_epoch: np.ndarray = per_epoch) -> None:
                m = trainer.model
                pv = TorchEngine([m]).predict(x[es])[0]
                po = TorchEngine([m]).predict(x[val])[0]
                per_epoch[int(row["epoch"]) - 1:, val] = po  # an early stop repeats its last epoch
                m.train()
                rows.append({**row, "inner_auc": _auc(*_patient_max(pid[es], y[es], pv)),
                             "outer_auc": _auc(*_patient_max(pid[val], y[val], po))})

            fit = trainer.fit(x[tr], y[tr], x[es], y[es], seed=sk, epochs=cfg.epochs, patience=cfg.patience,
                              views_benign=cfg.views_benign, views_malignant=cfg.views_malignant,
                              batch_size=cfg.batch_size, lr=cfg.lr, betas=cfg.betas,
                              weight_decay=cfg.weight_decay, augment=cfg.augment, on_epoch=on_epoch,
                              lr_schedule=cfg.lr_schedule, restore_best=cfg.restores_best_epoch)
            if cfg.recalibrate_bn:  # as spinedx cv: precise BatchNorm statistics of the training patches
                recalibrate_batchnorm(trainer.model, x[tr])
            # as spinedx cv: the run's test-time views (affine8 in the cpu profile)
            oof[val] = TorchEngine([trainer.model], views=TTAViews.from_config(cfg)).predict(x[val])[0]
            per_fold[k] = _auc(*_patient_max(pid[val], y[val], oof[val]))
            curves.append({"fold": k, "best_epoch": fit.best_epoch, "rows": rows})
            out["variants"][name] = {"config": cfg.to_dict(), "per_fold": per_fold, "curves": curves,
                                     "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                                     "partial": True, "auc": _auc(*_patient_max(
                                         pid[np.isin(fold_arr, list(per_fold))], y[np.isin(fold_arr, list(per_fold))],
                                         oof[np.isin(fold_arr, list(per_fold))]))}
            _save(out, save)  # the slow machine may stop us: keep every finished fold
            print(f"  {name} fold {k}: AUC {per_fold[k]:.3f} best epoch {fit.best_epoch}/{len(fit.history)} "
                  f"(radiomics {out['radiomics']['per_fold'][k]:.3f})", flush=True)
        yy, pp = _patient_max(pid[used], y[used], oof[used])
        pooled = [_auc(*_patient_max(pid[used], y[used], per_epoch[e, used])) for e in range(cfg.epochs)]
        out["variants"][name] = {"config": cfg.to_dict(), "auc": _auc(yy, pp), "per_fold": per_fold,
                                 "wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                                 "curves": curves, "pooled_auc_per_epoch": pooled}
        print(f"{name}: AUC {out['variants'][name]['auc']:.3f} vs radiomics {out['radiomics']['auc']:.3f}; "
              f"{out['variants'][name]['wall_s']:.0f} s wall, {out['variants'][name]['cpu_s']:.0f} s CPU", flush=True)
        _save(out, save)
    return out


def _save(out: dict[str, Any], path: str | None) -> None:
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=float))
        tmp.replace(path)


def _radiomics(x: np.ndarray, y: np.ndarray, pid: np.ndarray, fold_of: dict[str, int], folds_used: list[int],
               used: np.ndarray, seed: int) -> dict[str, Any]:
    from spinedx.baselines import fit_predict, radiomics_features

    feats, _ = radiomics_features(x)
    fold = np.array([fold_of[q] for q in pid])
    prob = np.full(len(y), np.nan)
    for k in folds_used:  # as spinedx.baselines.cross_validate (same inner seed), only for the folds used
        test = fold == k
        prob[test] = fit_predict(feats[~test], y[~test], pid[~test], feats[test], seed=seed + k)[0]
    yy, pp = _patient_max(pid[used], y[used], prob[used])
    return {"auc": _auc(yy, pp), "per_fold": {k: _auc(*_patient_max(pid[fold == k], y[fold == k], prob[fold == k]))
                                              for k in folds_used}}


def plot(results: list[dict[str, Any]], png: str, names: list[str] | None = None) -> None:
    from matplotlib.figure import Figure

    variants: dict[str, Any] = {}
    for r in results:
        variants.update(r["variants"])
    names = names or list(variants)
    fig = Figure(figsize=(4.2 * len(names), 6.4), dpi=90)
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        v = variants[name]
        for c in v["curves"]:
            e = [r["epoch"] for r in c["rows"]]
            axes[0, j].plot(e, [r["train_loss"] for r in c["rows"]], color="C0", alpha=0.6)
            axes[0, j].plot(e, [r["val_loss"] for r in c["rows"]], color="C1", alpha=0.6)
            axes[1, j].plot(e, [r["inner_auc"] for r in c["rows"]], color="C1", alpha=0.6)
            axes[1, j].plot(e, [r["outer_auc"] for r in c["rows"]], color="C2", alpha=0.6)
            axes[1, j].axvline(c["best_epoch"], color="grey", ls=":", alpha=0.5)
        axes[0, j].set_title(f"{name}: AUC {v['auc']:.3f} (folds {', '.join(map(str, v['per_fold']))})", fontsize=9)
        axes[0, j].set_ylabel("BCE loss")
        axes[1, j].set_ylabel("patient AUC")
        axes[1, j].set_xlabel("epoch")
        axes[1, j].set_ylim(0.3, 1.02)
    axes[0, 0].plot([], [], color="C0", label="train (augmented)")
    axes[0, 0].plot([], [], color="C1", label="inner validation")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].plot([], [], color="C1", label="inner validation (early stop)")
    axes[1, 0].plot([], [], color="C2", label="outer fold (diagnostic only)")
    axes[1, 0].plot([], [], color="grey", ls=":", label="restored epoch")
    axes[1, 0].legend(fontsize=7)
    fig.suptitle("Synthetic development cohort: one line per outer fold", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, format="png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("patches", nargs="?")
    ap.add_argument("--variants", default="quick")
    ap.add_argument("--folds-used", default="0,1,2,3")
    ap.add_argument("--seed", type=int, default=0, help="cv seed (splits and initialisation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--radiomics-from", help="a result JSON of the same patches, folds and seed: reuse its baseline")
    ap.add_argument("--plot", nargs="*", help="result JSON files to plot")
    ap.add_argument("--png")
    ap.add_argument("--names", help="variants to plot, comma-separated")
    a = ap.parse_args(argv)
    if a.plot:
        plot([json.loads(Path(p).read_text()) for p in a.plot], a.png,
             a.names.split(",") if a.names else None)
        return 0
    res = run(a.patches, a.variants.split(","), [int(k) for k in a.folds_used.split(",")], a.seed, a.threads,
              a.radiomics_from, a.out)
    best = max(v["auc"] for v in res["variants"].values())
    print(f"RESULT cnn_vs_radiomics {best - res['radiomics']['auc']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
