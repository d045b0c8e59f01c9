"""Training of one fold: the paper's loss, optimiser and early stopping, on a fast path.

Yeh et al. 2022, "Augmentation and training configurations": cross-entropy loss (binary, on
one logit: ``BCEWithLogitsLoss``), Adam with learning rate 1e-4 and beta1 0.5, an L2 term
(``weight_decay``), batch 32, 100 epochs, early stopping on the lowest validation loss.

Speed: the whole training set lives on the training device as one tensor; batches are gathered
by index and augmented there (:mod:`spinedx.training.augment`), so there is no DataLoader and no
host-device copy per batch. The forward pass runs in channels-last layout, under bf16 autocast
where the run's ``bf16`` setting resolves to on (:func:`use_bf16`: CUDA by default), Adam is the
fused kernel, and ``compile`` optionally wraps the forward-backward in :func:`torch.compile` (with
an eager fallback if compilation fails).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from spinedx.errors import SpinedxError
from spinedx.training.augment import AffineRanges, BatchAffine, epoch_indices
from spinedx.training.config import LR_SCHEDULES

log = logging.getLogger(__name__)

#: Least seconds between two progress reports (device syncs) on an accelerator.
PROGRESS_SECONDS = 0.5
#: ``on_batch(epoch, batch, n_batches, running_loss)``
BatchCallback = Callable[[int, int, int, float], None]
#: ``on_epoch(history_row)``
EpochCallback = Callable[[dict[str, float]], None]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise SpinedxError(f"unknown device {name!r}; use auto, cpu or cuda", where="--device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpinedxError("CUDA asked for but not available; use --device cpu or auto", where="--device")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on ``device`` (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def use_bf16(setting: str, device: torch.device) -> bool:
    """Resolve a ``bf16`` setting for ``device``: ``on`` always, ``off`` never, ``auto`` on CUDA with bf16 only.

    ``auto`` stays fp32 on every CPU, AVX512-BF16/AMX included: there oneDNN's bf16 convolutions gave NaN losses at
    random on small patches, and a run's figures would depend on the CPU's instruction set (docs/training.md).
    """
    return setting == "on" or (setting == "auto" and device.type == "cuda" and bf16_supported(device))


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


#: Environment variables read once at start-up that change which CPU kernels run (so the last bits of a result):
#: recorded with each fold, since no process can change them afterwards.
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
                "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")


def _backend_flags() -> list[tuple[Any, str, Any]]:
    """``(module, attribute, fixed value)`` of every process-wide torch flag that changes a fold's floating point.

    cuDNN's autotuner (``benchmark``) may pick another algorithm per process, ``deterministic`` rules out the
    atomic-add ones, TF32 rounds fp32 inputs to 10 mantissa bits; oneDNN must stay on (its kernels are the ones
    every executor uses) and in IEEE fp32 (``fp32_precision`` ``bf16``/``tf32`` would down-convert).
    """
    b = torch.backends
    flags: list[tuple[Any, str, Any]] = [(b.cudnn, "benchmark", False), (b.cudnn, "deterministic", True),
                                         (b.cudnn, "allow_tf32", False), (b.cuda.matmul, "allow_tf32", False),
                                         (b.mkldnn, "enabled", True)]
    if getattr(b.mkldnn, "fp32_precision", "none") not in ("none", "ieee"):
        flags.append((b.mkldnn, "fp32_precision", "ieee"))
    return flags


@contextlib.contextmanager
def fold_numerics(threads: int | None) -> Iterator[None]:
    """Fix what decides a fold's floating-point results besides its data and seeds; restore the process's own after.

    torch's intra-op thread count (``threads``: float sums are split between threads, so another count gives other
    last bits), the cuDNN/TF32/oneDNN flags of :func:`_backend_flags` and fp32 matmul precision ``highest``. Every
    executor trains and predicts a fold inside this block, so ``spinedx cv --jobs 1`` (this process), ``--jobs N``
    (worker processes), Ray and a resume compute the same bytes; the caller's settings come back when it ends.

    Args:
        threads: the fold's intra-op threads (``CVConfig.threads``); None (runs written before it was recorded):
            the process's own count, as such runs had.
    """
    saved_threads = torch.get_num_threads()
    saved_matmul = torch.get_float32_matmul_precision()
    flags = _backend_flags()
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in flags]
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        for mod, name, value in flags:
            setattr(mod, name, value)
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)
        torch.set_float32_matmul_precision(saved_matmul)
        torch.set_num_threads(saved_threads)


def numerics_record(device: torch.device, bf16: bool, compiled: bool) -> dict[str, Any]:
    """What decided a fold's floating point, as trained (inside :func:`fold_numerics`), for its ``done.json``.

    Folds whose records differ were computed differently (another thread count, device, kernel set); their
    probabilities are valid but are not the bytes one setting gives (``finish_run`` says so in the notes).
    """
    return {"device": device.type, "threads": torch.get_num_threads(), "bf16": bool(bf16), "compiled": bool(compiled),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        history: One row per epoch: epoch, train_loss, val_loss, lr, seconds.
        best_epoch: Epoch (1-based) whose weights the model holds: the lowest validation loss (early stopping),
            or the last epoch when the best is not restored.
        best_val_loss: That loss.
        compiled: Whether the compiled training step was used.
        notes: Warnings raised while training (e.g. a compile fallback).
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    compiled: bool = False
    notes: list[str] = field(default_factory=list)


class Trainer:
    """Trains a model in place; reusable across folds (one compile per process).

    Args:
        model: The network (moved to ``device``; reinitialise it between folds with
            :meth:`reset`).
        device: Training device.
        bf16: bf16 autocast on or off.
        channels_last: Channels-last memory format for model and batches.
        compile: Wrap the forward-backward in :func:`torch.compile`.
        compile_mode: :func:`torch.compile` mode; None: ``reduce-overhead`` on CUDA (the small,
            fixed-shape step is replayed as a CUDA graph, so the GPU does not wait for Python to
            launch ~500 kernels per step), the default mode elsewhere.
        compile_backend: :func:`torch.compile` backend (``inductor``; ``eager``/``aot_eager``
            trace without generating code, for debugging).
    """

    def __init__(self, model: nn.Module, device: torch.device, bf16: bool = True, channels_last: bool = True,
                 compile: bool = False, compile_mode: str | None = None, compile_backend: str = "inductor") -> None:
        self.device = device
        self.bf16 = bf16
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device).to(memory_format=self.memory_format)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.compile_requested = compile
        self.compile_mode = compile_mode or ("reduce-overhead" if device.type == "cuda" else None)
        self._step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._forward_backward
        self.compiled = False
        self.notes: list[str] = []
        if compile:
            try:
                # dynamic=False: every batch has one shape (the short last batch of an epoch gets its own graph)
                self._step_fn = torch.compile(self._forward_backward, mode=self.compile_mode,
                                              backend=compile_backend, dynamic=False)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 - no compiler toolchain, unsupported platform: run eagerly
                self._note(f"torch.compile unavailable ({exc}); training eagerly")

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled step is replayed as CUDA graphs."""
        return self.compiled and self.device.type == "cuda" and "reduce-overhead" in str(self.compile_mode)

    def _note(self, msg: str) -> None:
        log.warning(msg)
        self.notes.append(msg)

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.bf16):
            logits = self.model(x)
        loss = self.loss_fn(logits.float().reshape(-1), y)
        loss.backward()
        return loss.detach()

    def reset(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load fresh initial weights in place (keeps any compiled graph valid)."""
        self.model.load_state_dict(state_dict)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        """One optimisation step on a batch already on the device; returns the loss (on device)."""
        optimizer.zero_grad(set_to_none=True)
        try:
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # one training iteration per replay
            loss = self._step_fn(x, y)
            if self.compiled:
                # a CUDA graph's outputs are overwritten by its next replay: keep a copy of the loss
                loss = loss.clone()
        except Exception as exc:  # lazy compile errors of any type: fall back to eager
            if not self.compiled:
                raise
            # Compilation happens lazily on the first call: fall back to eager, once, loudly.
            self._note(f"torch.compile failed ({type(exc).__name__}: {exc}); training eagerly")
            self._step_fn, self.compiled = self._forward_backward, False
            optimizer.zero_grad(set_to_none=True)
            loss = self._step_fn(x, y)
        optimizer.step()
        return loss

    def make_optimizer(self, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
        """Adam with L2 weight decay (the paper's optimiser), fused where the device allows it."""
        params = list(self.model.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
            except (RuntimeError, TypeError):
                return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)

    @torch.no_grad()
    def evaluate_loss(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
        """Mean BCE over un-augmented patches, in eval mode (the model's mode is restored)."""
        was_training = self.model.training
        self.model.eval()
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].contiguous(memory_format=self.memory_format)
            with autocast(self.device, self.bf16):
                logits = self.model(xb)
            total += float(nn.functional.binary_cross_entropy_with_logits(
                logits.float().reshape(-1), y[i:i + batch_size], reduction="sum"))
        self.model.train(was_training)
        return total / max(1, x.shape[0])

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
        patience: int,
        views_benign: int,
        views_malignant: int,
        batch_size: int = 32,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-4,
        augment: AffineRanges | None = None,
        on_batch: BatchCallback | None = None,
        on_epoch: EpochCallback | None = None,
        lr_schedule: str = "constant",
        restore_best: bool = True,
    ) -> FitResult:
        """Train with early stopping on the validation loss and restore the best weights.

        Args:
            x_train, y_train: Training patches (N, 6, 64, 64) and labels (0/1).
            x_val, y_val: Early-stopping patches and labels (never augmented).
            seed: Seeds the augmentation, the epoch order and dropout-free training noise.
            epochs: Maximum number of epochs.
            patience: Stop after this many epochs without a lower validation loss (0: never).
            views_benign, views_malignant: Views per slice per epoch (paper: 20 and 40).
            on_batch, on_epoch: Progress callbacks.
            lr_schedule: ``constant`` (the paper's fixed rate) or ``onecycle`` (warm-up over the first 30% of
                the ``epochs * batches`` steps to ``lr``, then cosine annealing; stepped every batch, so an early
                stop ends it part-way).

        Returns:
            The history and the best epoch; the model holds the best weights, in eval mode.
        """
        dev = self.device
        xt = torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.float32, device=dev)
        yt = torch.as_tensor(np.asarray(y_train), dtype=torch.float32, device=dev)
        xv = torch.as_tensor(np.ascontiguousarray(x_val), dtype=torch.float32, device=dev)
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.float32, device=dev)
        rng = np.random.default_rng([seed, 1])
        aug = BatchAffine(augment or AffineRanges(), seed=int(np.random.SeedSequence([seed, 2]).generate_state(1)[0]))
        optimizer = self.make_optimizer(lr, betas, weight_decay)
        n_per_epoch = int(np.where(np.asarray(y_train) == 1, views_malignant, views_benign).sum())
        steps_per_epoch = n_per_epoch // batch_size + (1 if n_per_epoch % batch_size >= 2 else 0)
        scheduler = make_scheduler(optimizer, lr_schedule, lr, epochs * max(1, steps_per_epoch))
        self.model.train()
        history: list[dict[str, float]] = []
        best_loss, best_epoch, best_state, stale = math.inf, 0, None, 0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = epoch_indices(y_train, views_benign, views_malignant, rng)
            n_batches = len(order) // batch_size + (1 if len(order) % batch_size >= 2 else 0)
            order_t = torch.as_tensor(order, device=dev)
            losses = []
            running = 0.0
            last_report = time.perf_counter()
            for b in range(n_batches):
                idx = order_t[b * batch_size:(b + 1) * batch_size]
                xb = aug(xt.index_select(0, idx)).contiguous(memory_format=self.memory_format)
                loss = self.train_step(xb, yt.index_select(0, idx), optimizer)
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss)
                # Reading the running loss waits for the device; on a GPU that would stall the
                # queue of kernels every batch, so report at most twice a second there.
                if on_batch is not None and (dev.type == "cpu" or b + 1 == n_batches
                                             or time.perf_counter() - last_report >= PROGRESS_SECONDS):
                    running = float(torch.stack(losses[-20:]).mean())
                    on_batch(epoch, b + 1, n_batches, running)
                    last_report = time.perf_counter()
            train_loss = float(torch.stack(losses).mean()) if losses else math.nan
            val_loss = self.evaluate_loss(xv, yv)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "lr": float(optimizer.param_groups[0]["lr"]),
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if not restore_best:
                best_loss, best_epoch = val_loss, epoch
            elif val_loss < best_loss:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                stale += 1
                if patience and stale >= patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return FitResult(history, best_epoch, best_loss, self.compiled, list(self.notes))


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, lr: float,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-batch learning-rate scheduler of ``schedule`` (None for ``constant``, the paper's).

    ``onecycle`` is :class:`torch.optim.lr_scheduler.OneCycleLR` (Smith & Topin 2019) peaking at ``lr`` after
    30% of ``total_steps``, cosine annealing, with Adam's beta1 left as configured (no momentum cycling).
    """
    if schedule == "constant":
        return None
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(2, total_steps),
                                                   pct_start=0.3, anneal_strategy="cos", cycle_momentum=False)
    raise SpinedxError(f"unknown learning-rate schedule {schedule!r}; use {' or '.join(LR_SCHEDULES)}",
                       where="lr_schedule")


def recalibrate_batchnorm(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm layer's running mean and variance on ``x`` ("precise BN").

    One forward pass in training mode, no gradient and no weight change (``torch.optim.swa_utils.update_bn``:
    each layer's statistics become the average over the batches). The batches are of equal size (a small last
    batch would weigh as much as a full one in that average). The model's mode and momenta are restored.

    Args:
        model: The network (on its device).
        x: Patches (N, C, H, W), un-augmented.
        batch_size: At most this many patches per forward pass.

    Returns:
        The number of BatchNorm layers re-estimated.
    """
    from torch.optim.swa_utils import update_bn

    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(x) == 0:
        return 0
    device = next(model.parameters()).device
    chunks = np.array_split(np.arange(len(x)), max(1, math.ceil(len(x) / batch_size)))
    loader = [torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)).to(device)
              .contiguous(memory_format=torch.channels_last) for idx in chunks]
    update_bn(loader, model)  # restores the model's mode and the layers' momenta itself
    return len(layers)


def fold_seed(seed: int, fold: int) -> int:
    """A 31-bit seed derived from ``(seed, fold)``: every fold is reproducible on its own (resume)."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0] & 0x7FFFFFFF)


def initial_state(build: Callable[[], nn.Module], seed: int) -> dict[str, Any]:
    """State dict of ``build()`` made under ``torch.manual_seed(seed)`` (the fold's initial weights)."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build().state_dict()
