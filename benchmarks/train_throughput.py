"""Training throughput of the paper's model: the project's training step vs a plain eager fp32 loop.

Both run in the same process, interleaved round by round, so load from other processes on a
shared machine hits both alike; the ratio is what counts. The project step is what
``spinedx cv`` runs per batch: gather the batch on the device, random affine augmentation
(:class:`spinedx.training.augment.BatchAffine`), bf16 autocast + channels-last forward/backward
and fused Adam (:class:`spinedx.training.engine.Trainer`), optionally ``torch.compile``d. The
baseline is a plain torchvision-style loop on a ready-made fp32 batch (no augmentation), with
the same model, loss and Adam settings.

    python benchmarks/train_throughput.py [--backbone resnet50] [--rounds 4] [--threads N] [--compile]

Ends with ``RESULT train_speedup <ratio>`` (best project variant / eager fp32).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from spinedx.models import build_model
from spinedx.training.augment import AffineRanges, BatchAffine
from spinedx.training.engine import Trainer, bf16_supported, resolve_device


def _baseline(backbone: str, x: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    model, _ = build_model(backbone, pretrained="none")
    model = model.to(x.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x).reshape(-1), y)
        loss.backward()
        opt.step()

    return step


def _project(backbone: str, xt: torch.Tensor, yt: torch.Tensor, device: torch.device, compile: bool, bs: int):
    torch.manual_seed(0)
    model, _ = build_model(backbone, pretrained="none")
    trainer = Trainer(model, device, bf16=bf16_supported(device), channels_last=True, compile=compile)
    opt = trainer.make_optimizer(1e-4, (0.5, 0.999), 1e-4)
    aug = BatchAffine(AffineRanges(), seed=0)
    gen = np.random.default_rng(0)

    def step() -> None:
        idx = torch.as_tensor(gen.integers(0, xt.shape[0], bs), device=device)
        xb = aug(xt.index_select(0, idx)).contiguous(memory_format=torch.channels_last)
        trainer.train_step(xb, yt.index_select(0, idx), opt)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also measure the torch.compile'd step (slow to build)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bs = args.batch_size
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(256, 6, 64, 64, generator=g).to(device)  # a training set held on the device
    yt = (torch.rand(256, generator=g) > 0.5).float().to(device)
    variants = {"eager fp32 (baseline)": _baseline(args.backbone, xt[:bs].clone(), yt[:bs].clone()),
                "project eager (bf16 + channels_last + fused Adam + device augmentation)":
                    _project(args.backbone, xt, yt, device, False, bs)}
    if args.compile:
        variants["project compiled"] = _project(args.backbone, xt, yt, device, True, bs)
    print(f"device {device}, threads {torch.get_num_threads()}, bf16 {bf16_supported(device)}, "
          f"{args.backbone} batch {bs} 64x64")
    for name, step in variants.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        step()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    total = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for name, step in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            total[name] += time.perf_counter() - t0
    n_img = args.rounds * args.steps * bs
    base = total["eager fp32 (baseline)"]
    for name, secs in total.items():
        print(f"{name}: {n_img / secs:.1f} img/s  ({base / secs:.2f}x)")
    best = max(base / s for n, s in total.items() if n.startswith("project"))
    print(f"RESULT train_speedup {best:.2f}")


if __name__ == "__main__":
    main()
