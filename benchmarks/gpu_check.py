"""GPU check (issue 4 item 11): the paper profile on a 190-patient synthetic cohort, 2 folds, a few epochs.

Prepared for a session that is lent a GPU machine; it also runs (slowly) on a CPU, which is how
it is kept working. It makes the default synthetic cohort (or takes ``--patches``), extracts its
patches, runs ``spinedx cv --profile paper`` with ``--epochs E`` and stops after ``--run-folds``
folds, then prints the training throughput (augmented images per second, from each epoch's
wall time, validation included) and the projected time of the full protocol: 10 folds x up to
100 epochs (an upper bound: early stopping usually ends folds sooner).

Goal (issue 4): the full paper protocol projected under 10 minutes on one H100.

    python benchmarks/gpu_check.py --out /tmp/gpu_check            # GPU machine
    python benchmarks/gpu_check.py --out /tmp/gc --patients 12 --folds 2 --epochs 1 --run-folds 1 \\
        --backbone resnet18                                          # CPU smoke test

Ends with ``RESULT paper_protocol_projected_min <minutes>``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


class _StopAfter(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="working folder (cohort, patches, run)")
    ap.add_argument("--patches", type=Path, default=None, help="existing patches folder (skip synth + extract)")
    ap.add_argument("--patients", type=int, default=190)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per fold in the check")
    ap.add_argument("--run-folds", type=int, default=2, help="folds actually run (of --folds)")
    ap.add_argument("--folds", type=int, default=10,
                    help="folds of the split (paper 10; fewer for a tiny smoke cohort); the projection is for 10")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()

    import torch

    from spinedx.evaluation.cv import run_cv
    from spinedx.evaluation.splits import minimum_per_label
    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.synth import generate_cohort
    from spinedx.training.config import CVConfig

    args.out.mkdir(parents=True, exist_ok=True)
    patches = args.patches
    if patches is None:
        t0 = time.perf_counter()
        # the paper's proportion, but at least what the folds and their inner splits need (the CPU smoke test's 12)
        n_mal = max(round(args.patients * 50 / 190), min(minimum_per_label(args.folds), args.patients // 2))
        manifest = generate_cohort(args.out / "cohort", n_patients=args.patients, n_malignant=n_mal, seed=0,
                                   workers=args.workers, progress=False)
        patches = args.out / "patches"
        extract_cohort(manifest, patches, ExtractConfig(), workers=args.workers, progress=False)
        print(f"cohort + patches: {time.perf_counter() - t0:.1f} s")

    config = CVConfig.from_profile("paper", folds=args.folds, epochs=args.epochs, patience=0, backbone=args.backbone,
                                   device=args.device, compile=args.compile)
    run_dir = args.out / f"run_paper_e{args.epochs}_{args.backbone}"

    def stop(k: int) -> None:
        if k + 1 >= args.run_folds:
            raise _StopAfter

    t0 = time.perf_counter()
    try:
        run_cv(patches, run_dir, config, progress=False, on_fold_done=stop)
    except _StopAfter:
        pass
    wall = time.perf_counter() - t0

    data = np.load(Path(patches) / "patches.npz", allow_pickle=False)
    labels = pd.Series(data["label"], index=data["patient_id"])
    splits = json.loads((run_dir / "splits.json").read_text())["splits"]
    per_epoch, images = [], 0
    for split in splits[: args.run_folds]:
        k = int(split["fold"])
        hist = pd.read_csv(run_dir / "folds" / str(k) / "history.csv")
        held = set(split["val"]) | set(split.get("inner_val", []))
        train = labels[~labels.index.isin(held)]
        n_img = int((train == 0).sum() * config.views_benign + (train == 1).sum() * config.views_malignant)
        # the first epoch of the first fold carries warm-up (and compilation): leave it out when possible
        secs = hist["seconds"].to_numpy()
        steady = secs[1:] if len(secs) > 1 else secs
        per_epoch.extend(steady.tolist())
        images = n_img
    epoch_s = float(np.median(per_epoch))
    img_s = images / epoch_s
    if args.folds == 10:
        images_10 = images
    else:  # a 10-fold training set: 9/10 of the patients, less the inner early-stopping share
        all_views = int((labels == 0).sum() * config.views_benign + (labels == 1).sum() * config.views_malignant)
        images_10 = round(all_views * 0.9 * (1 - config.inner_val_fraction))
    projected_min = images_10 / img_s * 100 * 10 / 60
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    print(f"device {dev}; backbone {args.backbone}; {images} augmented images per epoch (x20 benign, x40 malignant)"
          + (f"; {images_10} in a 10-fold training set" if args.folds != 10 else ""))
    print(f"ran {args.run_folds} fold(s) x {args.epochs} epoch(s) in {wall:.1f} s")
    print(f"steady epoch: {epoch_s:.2f} s -> {img_s:.0f} img/s (validation included)")
    print(f"projected full paper protocol (10 folds x 100 epochs, no early stop): {projected_min:.1f} min "
          f"(goal on one H100: < 10 min)")
    print(f"RESULT paper_protocol_projected_min {projected_min:.2f}")


if __name__ == "__main__":
    main()
