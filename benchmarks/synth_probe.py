"""How much of the label first-order statistics of the patches carry, per difficulty (docs/synth.md table).

Usage::

    nice .venv/bin/python benchmarks/synth_probe.py --workers 2  # docs table: 3 levels x seeds 1, 3000, 60 patients
    nice .venv/bin/python benchmarks/synth_probe.py --difficulty medium --seeds 1 2 --patients 100

For each difficulty and cohort seed: ``spinedx synth`` (``--patients``, ``--malignant``), ``spinedx
extract --no-register``, then the probes of :mod:`spinedx.synth.probe` (skewness, quantiles, pooled
patch, the 15 features), each an L2 logistic regression in 5-fold cross-validation by patient,
scored by out-of-fold patient AUC with a 95% patient-bootstrap interval. Seeds in
``spinedx.synth.seeds.DEVELOPMENT_SEEDS`` may be tuned on; the others are untouched (``--seeds``
must never include the evaluation seed, which is refused). The baseline in the same run is the
``features`` probe (what the simulated readers see). Ends with ``RESULT synth_probe_medium_skewness_auc
<value>`` (the mean over the seeds run at medium, or the first difficulty run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def fast_patches(seed: int, n: int, n_mal: int, difficulty: str, size: int = 64) -> dict[str, np.ndarray]:
    """A quick stand-in for synth + extract, for tuning only (``--fast``; never for the reported table).

    Evaluates the phantom directly at the patch's sample points: the square around the fractured body's
    bounding box on the mid-sagittal plane (plus 4 mm), five planes 4 mm apart around the midline, the
    acquisition resolution as a Gaussian blur, the coil's gain near the spine, Rician noise of the difficulty,
    then z-scoring per channel like ``spinedx extract``. No DICOM, no motion, no zero-filling ringing.
    """
    from scipy.ndimage import gaussian_filter

    from spinedx.synth.phantom import DIFFICULTY, evaluate, sample_anatomy
    from spinedx.synth.study import STREAM_ACQ, assign_labels, patient_rng, sample_patient

    labels = assign_labels(n, n_mal, seed)
    xs, ys, pids = [], [], []
    for i in range(n):
        truth = sample_patient(seed, i, int(labels[i]))
        anat = sample_anatomy(seed, i, truth, difficulty)
        rng = patient_rng(seed, i, STREAM_ACQ + 100)
        c = anat.lesion_centre()
        g = np.arange(-45, 45, 0.7)
        yy, zz = np.meshgrid(g, g, indexing="ij")
        pts = np.stack([np.zeros(yy.size), c[1] + yy.ravel(), c[2] + zz.ravel()], 1).astype(np.float32)
        body = evaluate(anat, pts, 1).body.reshape(yy.shape)
        iy, iz = np.nonzero(body)
        y0, y1, z0, z1 = yy[iy, 0].min(), yy[iy, 0].max(), zz[0, iz].min(), zz[0, iz].max()
        side = max(y1 - y0, z1 - z0) + 8.0 + 0.7
        cy, cz = c[1] + (y0 + y1) / 2, c[2] + (z0 + z1) / 2
        frac = (np.arange(size) + 0.5) / size - 0.5
        off = rng.uniform(-2.0, 2.0)
        planes = []
        for ch, (res_si, res_ap) in ((0, (300 / 320, 300 / 192)), (1, (300 / 448, 300 / 224))):
            for dx in (-8, -4, 0, 4, 8):
                gz, gy = np.meshgrid(cz - frac * side, cy + frac * side, indexing="ij")
                p = np.stack([np.full(gz.size, dx + off), gy.ravel(), gz.ravel()], 1).astype(np.float32)
                sig = evaluate(anat, p, ch).signal.reshape(size, size)
                px = side / size
                sig = gaussian_filter(sig, (0.45 * res_si / px, 0.45 * res_ap / px))
                sigma = DIFFICULTY[difficulty]["noise"] * rng.uniform(0.85, 1.15) / 0.75
                noisy = np.abs(sig + sigma * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape)))
                planes.append(noisy)
        t1, t2 = np.stack(planes[:5]), np.stack(planes[5:])
        for s in (1, 2, 3):
            x = np.concatenate([t1[s - 1:s + 2], t2[s - 1:s + 2]]).astype(np.float64)
            x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-6)
            xs.append(x.astype(np.float32))
            ys.append(int(labels[i]))
            pids.append(f"P{i:04d}")
    return {"x": np.stack(xs), "label": np.array(ys), "patient_id": np.array(pids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--difficulty", nargs="+", default=["easy", "medium", "hard"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 3000])
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--malignant", type=int, default=24)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="keep the cohorts and patches in this folder")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--fast", action="store_true",
                    help="tuning stand-in: phantom sampled at the patch points, no DICOM (never for reported figures)")
    ap.add_argument("--cnn", action="store_true", help="also train the small CNN probe (minutes per cohort)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="tuning only: override DIFFICULTY parameters of the difficulties run")
    args = ap.parse_args()
    if args.set:
        from spinedx.synth.seeds import DEVELOPMENT_SEEDS as _dev

        if args.workers != 1 or any(seed not in _dev for seed in args.seeds) or args.keep is None:
            raise SystemExit("--set is for tuning: development seeds only, --workers 1 (overrides live in this "
                             "process), and --keep a folder for these tuning cohorts")
        from spinedx.synth.phantom import DIFFICULTY

        for item in args.set:
            key, value = item.split("=")
            for d in args.difficulty:
                DIFFICULTY[d][key] = float(value)
        print("overrides:", args.set)

    from spinedx.preprocess import ExtractConfig, extract_cohort
    from spinedx.synth import generate_cohort
    from spinedx.synth.probe import probe_patches
    from spinedx.synth.seeds import DEVELOPMENT_SEEDS, EVALUATION_SEED

    if EVALUATION_SEED in args.seeds:
        raise SystemExit(f"seed {EVALUATION_SEED} is the evaluation seed: never probe or tune on it")
    work = args.keep or Path(tempfile.mkdtemp(prefix="spinedx_probe_"))
    results = []
    if args.fast:
        from spinedx.synth.probe import cv_patient_auc, pooled_features, quantile_features, skewness_features

        for difficulty in args.difficulty:
            for seed in args.seeds:
                t0 = time.perf_counter()
                z = fast_patches(seed, args.patients, args.malignant, difficulty)
                res = {name: cv_patient_auc(fn(z["x"]), z["label"], z["patient_id"], c=c) for name, fn, c in
                       (("skewness", skewness_features, 1.0), ("quantiles", quantile_features, 1.0),
                        ("pooled", pooled_features, 0.01))}
                if args.cnn:
                    from spinedx.synth.probe import cnn_patient_auc

                    res["cnn"] = cnn_patient_auc(z["x"], z["label"], z["patient_id"])
                line = "  ".join(f"{k} {v['auc']:.3f} [{v['auc_low']:.2f}, {v['auc_high']:.2f}]"
                                 for k, v in res.items())
                print(f"FAST {difficulty:6s} seed {seed:5d}: {line}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        return
    try:
        for difficulty in args.difficulty:
            for seed in args.seeds:
                folder = work / f"{difficulty}_seed{seed}_n{args.patients}"
                t0 = time.perf_counter()
                if not (folder / "cohort" / "cohort.csv").is_file():
                    generate_cohort(folder / "cohort", args.patients, args.malignant, seed=seed, difficulty=difficulty,
                                    workers=args.workers, progress=False, overwrite=True)
                t_synth = time.perf_counter() - t0
                if not (folder / "patches" / "patches.npz").is_file():
                    extract_cohort(folder / "cohort" / "cohort.csv", folder / "patches", ExtractConfig(register=False),
                                   workers=args.workers, progress=False)
                res = probe_patches(folder / "patches" / "patches.npz", folder / "cohort" / "cohort.csv", cnn=args.cnn)
                row = {"difficulty": difficulty, "seed": seed, "tuning_allowed": seed in DEVELOPMENT_SEEDS,
                       "patients": args.patients, "malignant": args.malignant,
                       "seconds": round(time.perf_counter() - t0, 1), "synth_seconds": round(t_synth, 1), **res}
                results.append(row)
                line = "  ".join(f"{k} {v['auc']:.3f} [{v['auc_low']:.2f}, {v['auc_high']:.2f}]"
                                 for k, v in res.items())
                print(f"{difficulty:6s} seed {seed:5d} ({'dev' if row['tuning_allowed'] else 'untouched'}): {line}",
                      flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    med = [r["skewness"]["auc"] for r in results if r["difficulty"] == "medium"] or \
          [r["skewness"]["auc"] for r in results if r["difficulty"] == results[0]["difficulty"]]
    base = [r["features"]["auc"] for r in results]
    ratio = sum(med) / len(med) / (sum(base) / len(base))
    print(f"ratio skewness/features AUC (first difficulty or medium): {ratio:.3f}")
    print(f"RESULT synth_probe_medium_skewness_auc {sum(med) / len(med):.3f}")


if __name__ == "__main__":
    main()
