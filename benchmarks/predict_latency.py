"""Latency of one case (3 slices) through the 10 fold models, as ``spinedx predict`` runs it.

Builds 10 randomly initialised fold models of the paper's network (weights do not change the
cost), then times :func:`spinedx.models.predict_patches` on a (3, 6, 64, 64) case: bf16
autocast where supported, channels-last, inference mode. An eager fp32 loop over the same
models is measured in the same run for comparison.

    python benchmarks/predict_latency.py [--models 10] [--repeats 20] [--threads N]

Ends with ``RESULT predict_ms <median milliseconds>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from spinedx.models import build_model, predict_patches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for k in range(args.models):
        torch.manual_seed(k)
        models.append(build_model(args.backbone, pretrained="none")[0].eval())
    case = np.random.default_rng(0).normal(size=(3, 6, 64, 64)).astype(np.float32)
    xt = torch.from_numpy(case)

    def eager_fp32() -> None:
        with torch.no_grad():
            for m in models:
                torch.sigmoid(m(xt))

    def project() -> None:
        predict_patches(models, case)

    for fn in (eager_fp32, project, project):  # warm-up: oneDNN primitives, layouts
        fn()
    times: dict[str, list[float]] = {"eager fp32": [], "predict_patches": []}
    for _ in range(args.repeats):
        for name, fn in (("eager fp32", eager_fp32), ("predict_patches", project)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    print(f"{args.models} x {args.backbone}, one case of 3 slices, threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.1f} ms, min {min(ts):.1f} ms")
    print(f"RESULT predict_ms {statistics.median(times['predict_patches']):.1f}")


if __name__ == "__main__":
    main()
