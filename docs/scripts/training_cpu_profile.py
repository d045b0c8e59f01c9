"""Draw docs/img/training_cpu_profile.png from docs/data/training_dev_seed5.json (issue 13).

The JSON holds the development-cohort runs behind docs/training.md, "Why the CNN trailed, and the CPU profile":
10 folds by patient on the seed-5 synthetic cohort, per epoch the pooled out-of-fold patient AUC (a diagnostic:
it never chose anything inside a run), each fold's outer AUC, training and inner validation losses.

    python docs/scripts/training_cpu_profile.py
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "mv3s_bnmomentum0.01_earlystop": "MobileNetV3-S, torchvision BN momentum 0.01, early stop",
    "mv3s_earlystop": "MobileNetV3-S, BN momentum 0.1, 10 epochs, early stop (restored epoch)",
    "cpu_profile_14ep_last": "cpu profile: MobileNetV3-S, 14 epochs, last epoch kept",
}


def main() -> None:
    data = json.loads((ROOT / "data" / "training_dev_seed5.json").read_text())
    fig = Figure(figsize=(14, 4.4), dpi=90)
    ax_pool, ax_fold, ax_loss = fig.subplots(1, 3)
    for i, (name, v) in enumerate(data["variants"].items()):
        e = range(1, len(v["pooled_auc_per_epoch"]) + 1)
        ax_pool.plot(e, v["pooled_auc_per_epoch"], marker="o", ms=3, color=f"C{i}",
                     label=f"{LABELS[name]}: {v['pooled_auc']:.3f}")
    ax_pool.axhline(data["radiomics_pooled_auc"], color="k", ls="--",
                    label=f"radiomics baseline, same folds: {data['radiomics_pooled_auc']:.3f}")
    ax_pool.set_title("pooled out-of-fold patient AUC after each epoch\n(the value after the legend: what the run "
                      "kept)", fontsize=9)
    ax_pool.set_xlabel("epoch")
    ax_pool.set_ylabel("patient AUC (10 folds, 190 patients)")
    ax_pool.set_ylim(0.45, 1.1)
    ax_pool.legend(fontsize=6.5, loc="upper left")
    cpu = data["variants"]["cpu_profile_14ep_last"]
    es = data["variants"]["mv3s_earlystop"]
    for f in cpu["folds"]:
        rows = f["rows"]
        ax_fold.plot([r["epoch"] for r in rows], [r["outer_auc"] for r in rows], color="C2", alpha=0.5, lw=1)
        ax_loss.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], color="C0", alpha=0.5, lw=1)
        ax_loss.plot([r["epoch"] for r in rows], [r["val_loss"] for r in rows], color="C1", alpha=0.5, lw=1)
    restored = [f["best_epoch"] for f in es["folds"]]
    for b in restored:
        ax_fold.axvline(b, color="C1", ls=":", alpha=0.4)
    ax_fold.set_title("cpu profile: each outer fold's patient AUC per epoch (19 patients each);\ndotted: epochs the "
                      f"inner early stop restored with 10 epochs ({min(restored)}-{max(restored)})", fontsize=9)
    ax_fold.set_xlabel("epoch")
    ax_fold.set_ylim(0.3, 1.02)
    ax_loss.plot([], [], color="C0", label="training loss (augmented views)")
    ax_loss.plot([], [], color="C1", label="inner validation loss (~17 patients)")
    ax_loss.set_title("cpu profile: losses per fold", fontsize=9)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("BCE")
    ax_loss.legend(fontsize=7)
    fig.suptitle("SYNTHETIC development cohort (seed 5, never an evaluation seed): why the cpu profile keeps the last "
                 "epoch", fontsize=10)
    fig.tight_layout()
    fig.savefig(ROOT / "img" / "training_cpu_profile.png", format="png")


if __name__ == "__main__":
    main()
