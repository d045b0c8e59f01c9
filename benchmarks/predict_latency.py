"""Latency of one case (3 slices) through the 10 fold models: today's loop vs the batched ensemble.

Builds 10 randomly initialised fold models of the paper's network with random BatchNorm
statistics (weights do not change the cost; non-trivial statistics make the agreement check
mean something), then times, interleaved round by round in one process:

* ``loop``: :func:`spinedx.models.predict_patches` over the models (one model at a time,
  channels-last, bf16 autocast where the CPU supports it), what ``spinedx predict`` runs today;
* ``ensemble <backend> <precision>``: :class:`spinedx.models.Ensemble` built once, then one
  :meth:`~spinedx.models.Ensemble.predict` call per case, for every backend/precision that runs
  here.

It prints each variant's median and minimum, its ratio to the loop, the one-off preparation
time, and the largest difference of its probabilities from the loop's fp32 result.

    python benchmarks/predict_latency.py [--models 10] [--repeats 20] [--threads N] [--backbone resnet50]
        [--tta none|affine8]

``--tta affine8`` gives every variant the test-time views of the ``cpu`` profile (9 images per patch), to see
what they cost against the patch alone (run it twice, or compare the loop's line with and without).

Ends with ``RESULT predict_ms <median milliseconds of the default ensemble>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from spinedx.models import Ensemble, build_model, predict_patches
from spinedx.models.ensemble import onnxruntime_available
from spinedx.models.tta import TTAViews
from spinedx.training.engine import bf16_supported


def _models(backbone: str, n: int) -> list[nn.Module]:
    out = []
    for k in range(n):
        torch.manual_seed(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(backbone, pretrained="none")[0]
        g = torch.Generator().manual_seed(100 + k)
        for mod in model.modules():  # statistics as after training, so BatchNorm folding is exercised
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                mod.weight.data.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.data.copy_(0.1 * torch.randn(c, generator=g))
        out.append(model.eval())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--tta", default="none", choices=["none", "affine8"])
    args = ap.parse_args()
    views = TTAViews.make(args.tta)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = _models(args.backbone, args.models)
    case = np.random.default_rng(0).normal(size=(args.slices, 6, 64, 64)).astype(np.float32)
    reference = predict_patches(models, case, bf16=False, views=views)

    variants: dict[str, object] = {"loop (predict_patches)": lambda: predict_patches(models, case, views=views)}
    info: dict[str, str] = {"loop (predict_patches)": f"bf16 autocast {bf16_supported(torch.device('cpu'))}"}
    combos = [("auto", "fp32"), ("torch", "fp32"), ("torch", "bf16")]
    default_name = None
    for backend, precision in combos:
        t0 = time.perf_counter()
        ens = Ensemble.from_models(models, backend=backend, precision=precision, views=views)
        prep = time.perf_counter() - t0
        name = f"ensemble {ens.backend} {ens.precision}"
        if name in variants:
            continue
        if backend == "auto":
            default_name = name
        diff = float(np.abs(ens.predict(case) - reference).max())
        variants[name] = lambda ens=ens: ens.predict(case)
        info[name] = f"prepared once in {prep:.1f} s, max |p - loop fp32| {diff:.1e}"
    for fn in list(variants.values()) * 2:  # warm-up: oneDNN primitives, layouts, onnxruntime arenas
        fn()
    times: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    base = statistics.median(times["loop (predict_patches)"])
    print(f"{args.models} x {args.backbone}, one case of {args.slices} slices, threads {torch.get_num_threads()}, "
          f"cpu bf16 {bf16_supported(torch.device('cpu'))}, onnxruntime {onnxruntime_available()}, "
          f"test-time views {views.n_views}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: median {med:.1f} ms, min {min(ts):.1f} ms, {base / med:.2f}x  ({info[name]})")
    print(f"RESULT predict_ms {statistics.median(times[default_name]):.1f}")


if __name__ == "__main__":
    main()
