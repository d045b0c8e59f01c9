"""Training throughput of the paper's model: the project's training step vs a plain eager fp32 loop.

All variants run in the same process, interleaved round by round, so load from other processes
on a shared machine hits them alike; the ratio is what counts. The project step is what
``spinedx cv`` runs per batch: gather the batch on the device, random affine augmentation
(:class:`spinedx.training.augment.BatchAffine`), bf16 autocast as ``bf16: auto`` resolves it
(:func:`spinedx.training.engine.use_bf16`: CUDA only) + channels-last forward/backward and fused
Adam (:class:`spinedx.training.engine.Trainer`), optionally ``torch.compile``d. The baseline is a plain
torchvision-style loop on a ready-made fp32 batch (no augmentation), with the same model, loss and Adam settings.

``--explore`` adds the variants tried while looking for more speed (contiguous layout instead of
channels-last, foreach instead of fused Adam, no augmentation, bf16 forced on). ``--fold-processes
P`` also measures folds run side by side: P processes with ``cores / P`` threads each, every one
running the project step, against one process with a thread per core (same run, alternating); the
folds of a cross-validation are independent, so this is what an executor running P folds at once
gains in images per second.

    python benchmarks/train_throughput.py [--backbone resnet50] [--rounds 4] [--threads N] [--compile]
        [--explore] [--fold-processes 2]

Ends with ``RESULT train_speedup <ratio>`` (best single-process project variant / eager fp32).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np
import torch
from torch import nn

from spinedx.models import build_model
from spinedx.training.augment import AffineRanges, BatchAffine
from spinedx.training.engine import Trainer, bf16_supported, resolve_device, use_bf16


def _model(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(backbone, pretrained="none")[0]


def _baseline(backbone: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model = _model(backbone).to(x.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x).reshape(-1), y)
        loss.backward()
        opt.step()

    return step


def _project(backbone: str, xt: torch.Tensor, yt: torch.Tensor, device: torch.device, compile: bool, bs: int, *,
             bf16: bool | None = None, channels_last: bool = True, adam: str = "fused",
             augment: bool = True) -> Callable[[], None]:
    trainer = Trainer(_model(backbone), device, bf16=use_bf16("auto", device) if bf16 is None else bf16,
                      channels_last=channels_last, compile=compile)
    opt = trainer.make_optimizer(1e-4, (0.5, 0.999), 1e-4)
    if adam == "foreach":
        opt = torch.optim.Adam(trainer.model.parameters(), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4,
                               foreach=True)
    aug = BatchAffine(AffineRanges(), seed=0)
    gen = np.random.default_rng(0)

    def step() -> None:
        idx = torch.as_tensor(gen.integers(0, xt.shape[0], bs), device=device)
        xb = xt.index_select(0, idx)
        if augment:
            xb = aug(xb)
        trainer.train_step(xb.contiguous(memory_format=trainer.memory_format), yt.index_select(0, idx), opt)

    return step


def _data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(256, 6, 64, 64, generator=g).to(device)  # a training set held on the device
    yt = (torch.rand(256, generator=g) > 0.5).float().to(device)
    return xt, yt


def _fold_worker(conn: Connection, backbone: str, threads: int, bs: int) -> None:
    """One 'fold' process: builds the project step once, then runs N steps per request and reports the time."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    xt, yt = _data(device)
    step = _project(backbone, xt, yt, device, False, bs)
    step()
    conn.send("ready")
    while True:
        n = conn.recv()
        if n is None:
            return
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        conn.send(time.perf_counter() - t0)


def _fold_processes(args: argparse.Namespace, step: Callable[[], None]) -> float:
    """Images/s of P processes side by side over images/s of this process alone; prints both."""
    p = args.fold_processes
    own = torch.get_num_threads()
    threads = os.cpu_count() or 1  # one process with every core against P processes sharing them
    per = max(1, threads // p)
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    try:
        for _ in range(p):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_fold_worker, args=(child, args.backbone, per, args.batch_size), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for conn in pipes:
            assert conn.recv() == "ready"
        one, side = [], []
        n_img = args.steps * args.batch_size
        for _ in range(args.rounds):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            one.append(n_img / (time.perf_counter() - t0))
            torch.set_num_threads(own)
            for conn in pipes:
                conn.send(args.steps)
            secs = [conn.recv() for conn in pipes]
            side.append(p * n_img / max(secs))
    finally:
        for conn in pipes:
            conn.send(None)
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    ratios = [s / o for s, o in zip(side, one, strict=True)]
    print(f"1 process x {threads} threads: {statistics.median(one):.1f} img/s; {p} processes x {per} thread(s) "
          f"side by side: {statistics.median(side):.1f} img/s in all  ({statistics.median(ratios):.2f}x, "
          f"per round {' '.join(f'{r:.2f}' for r in ratios)})")
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also measure the torch.compile'd step (slow to build)")
    ap.add_argument("--explore", action="store_true", help="also measure the variants tried (layout, Adam, ...)")
    ap.add_argument("--fold-processes", type=int, default=0,
                    help="also measure P fold processes side by side (CPU), threads split between them")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bs = args.batch_size
    xt, yt = _data(device)
    project_name = (f"project eager ({'bf16' if use_bf16('auto', device) else 'fp32'} as bf16: auto resolves + "
                    "channels_last + fused Adam + device augmentation)")
    variants = {"eager fp32 (baseline)": _baseline(args.backbone, xt[:bs].clone(), yt[:bs].clone()),
                project_name: _project(args.backbone, xt, yt, device, False, bs)}
    if args.explore:
        variants["project, contiguous (NCHW) layout"] = _project(args.backbone, xt, yt, device, False, bs,
                                                                 channels_last=False)
        variants["project, foreach Adam"] = _project(args.backbone, xt, yt, device, False, bs, adam="foreach")
        variants["project, no augmentation"] = _project(args.backbone, xt, yt, device, False, bs, augment=False)
        if not use_bf16("auto", device):
            what = "fast bf16 here" if bf16_supported(device) else "no fast bf16 here"
            variants[f"project, bf16 autocast forced on ({what})"] = _project(
                args.backbone, xt, yt, device, False, bs, bf16=True)
    if args.compile:
        variants["project compiled"] = _project(args.backbone, xt, yt, device, True, bs)
    print(f"device {device}, threads {torch.get_num_threads()}, fast bf16 {bf16_supported(device)}, "
          f"{args.backbone} batch {bs} 64x64")
    for name, step in variants.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        step()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    total = dict.fromkeys(variants, 0.0)
    rounds: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            total[name] += dt
            rounds[name].append(dt)
    n_img = args.rounds * args.steps * bs
    base = total["eager fp32 (baseline)"]
    for name, secs in total.items():
        per_round = [b / s for b, s in zip(rounds["eager fp32 (baseline)"], rounds[name], strict=True)]
        print(f"{name}: {n_img / secs:.1f} img/s  ({base / secs:.2f}x; per round median "
              f"{statistics.median(per_round):.2f}x, range {min(per_round):.2f}-{max(per_round):.2f})")
    best = max(base / s for n, s in total.items() if n.startswith("project"))
    if args.fold_processes > 1 and device.type == "cpu":
        gain = _fold_processes(args, variants[project_name])
        if torch.get_num_threads() == (os.cpu_count() or 1):  # the ratios above used every core too
            print(f"project step with {args.fold_processes} folds side by side vs eager fp32 in one process: "
                  f"{best * gain:.2f}x images per second")
    print(f"RESULT train_speedup {best:.2f}")


if __name__ == "__main__":
    main()
