"""Latency of one case (3 slices) through the 10 fold models: the two engines of the one inference path.

Builds 10 randomly initialised fold models of the paper's network with random BatchNorm
statistics (weights do not change the cost; non-trivial statistics make the agreement check
mean something), then times, interleaved round by round in one process, one
:meth:`~spinedx.inference.TorchEngine.predict` call per case of each engine (:mod:`spinedx.inference`, fp32):

* ``torch``: :class:`spinedx.inference.TorchEngine`, the fold models (what ``spinedx predict`` runs by default and
  ``spinedx cv`` runs out of fold);
* ``onnxruntime``: :class:`spinedx.inference.OnnxRuntimeEngine` on the graph ``spinedx export --format onnx`` writes
  (what the workstation runs), exported and loaded once (the one-off time is printed).

It prints each engine's median and minimum, its ratio to the torch engine, and the largest difference of its
probabilities from the torch engine's.

    python benchmarks/predict_latency.py [--models 10] [--repeats 20] [--threads N] [--backbone resnet50]
        [--tta none|affine8]

``--tta affine8`` gives every engine the test-time views of the ``cpu`` profile (9 images per patch).

Ends with ``RESULT predict_ms <median milliseconds of the ONNX Runtime engine>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from spinedx.inference import OnnxRuntimeEngine, TorchEngine
from spinedx.models import build_model
from spinedx.models.tta import TTAViews


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
    torch_engine = TorchEngine(models, views=views)
    reference = torch_engine.predict(case)
    t0 = time.perf_counter()
    onnx_engine = OnnxRuntimeEngine.from_models(models, patch_size=64, views=views, threads=args.threads)
    prep = time.perf_counter() - t0
    variants = {"torch": torch_engine, "onnxruntime": onnx_engine}
    info = {"torch": "the fold models", "onnxruntime": f"graph exported and loaded once in {prep:.1f} s, max |p - "
            f"torch| {float(np.abs(onnx_engine.predict(case) - reference).max()):.1e}"}
    for eng in list(variants.values()) * 2:  # warm-up: oneDNN primitives, layouts, onnxruntime arenas
        eng.predict(case)
    times: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.repeats):
        for name, eng in variants.items():
            t0 = time.perf_counter()
            eng.predict(case)
            times[name].append((time.perf_counter() - t0) * 1000)
    base = statistics.median(times["torch"])
    print(f"{args.models} x {args.backbone}, one case of {args.slices} slices, threads {torch.get_num_threads()}, "
          f"fp32, test-time views {views.n_views}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: median {med:.1f} ms, min {min(ts):.1f} ms, {base / med:.2f}x  ({info[name]})")
    print(f"RESULT predict_ms {statistics.median(times['onnxruntime']):.1f}")


if __name__ == "__main__":
    main()
