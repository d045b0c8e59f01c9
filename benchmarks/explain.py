"""Cost of each explanation method for one case (3 slices) through the 10 fold models.

Builds 10 randomly initialised fold models of the paper's network (weights do not change the cost)
and times :func:`spinedx.explain.explain` on a (3, 6, 64, 64) case for every method, next to the
prediction itself (the torch engine, :class:`spinedx.inference.TorchEngine`, the baseline measured in the same run):
the ratio says how much an explanation adds to ``spinedx predict``. The Grad-CAM of spinedx before
this module (a deep copy of each model, then ``pytorch-grad-cam``) is timed as well. CAM methods are
repeated and interleaved; occlusion (one forward pass per window position) is timed
``--occlusion-repeats`` times.

    python benchmarks/explain.py [--backbone resnet50] [--models 10] [--repeats 5] [--threads 2]

Ends with ``RESULT explain_ms <median milliseconds of spinedx.explain.DEFAULT_METHOD>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from spinedx.explain import DEFAULT_METHOD, METHODS, explain
from spinedx.inference import TorchEngine
from spinedx.models import build_model


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def legacy_gradcam(models: list[torch.nn.Module], case: np.ndarray) -> np.ndarray:
    """The earlier spinedx Grad-CAM: per model a deep copy with out-of-place ReLUs, then pytorch-grad-cam."""
    import copy

    from pytorch_grad_cam import GradCAM

    from spinedx.explain import MalignantLogitTarget

    heats = []
    for model in models:
        clone = copy.deepcopy(model).eval()
        for m in clone.modules():
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        cam = GradCAM(model=clone, target_layers=[clone.backbone.layer4[-1]])
        try:
            heats.append(cam(input_tensor=torch.from_numpy(case).requires_grad_(True),
                             targets=[MalignantLogitTarget()] * len(case)))
        finally:
            cam.activations_and_grads.release()
    return np.mean(heats, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--occlusion-repeats", type=int, default=1, help="0 skips occlusion (minutes on 2 cores)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no ImageNet file: irrelevant for timing
        for k in range(args.models):
            torch.manual_seed(k)
            models.append(build_model(args.backbone, pretrained="none")[0].eval())
    case = np.random.default_rng(0).normal(size=(3, 6, 64, 64)).astype(np.float32)

    cams = [m for m in METHODS if METHODS[m].kind != "occlusion"]
    engine = TorchEngine(models)
    jobs: dict[str, Callable[[], object]] = {"prediction (baseline)": lambda: engine.predict(case)}
    if hasattr(models[0].backbone, "layer4"):
        jobs["earlier gradcam (copy+pgc)"] = lambda: legacy_gradcam(models, case)
    jobs.update({m: (lambda m=m: explain(models, case, m)) for m in cams})
    for fn in jobs.values():  # warm-up: oneDNN primitives, layouts, autograd
        fn()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, fn in jobs.items():
            times[name].append(_time(fn))
    occ = [m for m in METHODS if METHODS[m].kind == "occlusion"] if args.occlusion_repeats > 0 else []
    for m in occ:
        times[m] = [_time(lambda m=m: explain(models, case, m)) for _ in range(args.occlusion_repeats)]

    base = statistics.median(times["prediction (baseline)"])
    print(f"{args.models} x {args.backbone}, one case of 3 slices (64x64), threads {torch.get_num_threads()}; "
          f"median of {args.repeats} (occlusion: {args.occlusion_repeats})")
    for name, ts in times.items():
        med = statistics.median(ts)
        star = "  <- DEFAULT_METHOD" if name == DEFAULT_METHOD else ""
        print(f"{name:28s} {med:9.1f} ms  (min {min(ts):9.1f})  x{med / base:6.2f} of the prediction{star}")
    print(f"RESULT explain_ms {statistics.median(times[DEFAULT_METHOD]):.1f}")


if __name__ == "__main__":
    main()
