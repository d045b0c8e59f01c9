"""The training loop: learns, stops early on the validation loss and restores the best weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spinedx.errors import SpinedxError
from spinedx.training.engine import Trainer, fold_seed


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 6, 16, 16)).astype(np.float32)
    x[y == 1, :, 4:12, 4:12] += 1.5  # a bright centre marks class 1
    return x, y


def _fit(epochs: int, patience: int, lr: float = 1e-2, restore_best: bool = True) -> tuple[Trainer, object]:
    torch.manual_seed(0)
    trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False)
    xt, yt = _data(64, 0)
    xv, yv = _data(32, 1)
    fit = trainer.fit(xt, yt, xv, yv, seed=3, epochs=epochs, patience=patience, views_benign=1, views_malignant=2,
                      batch_size=16, lr=lr, restore_best=restore_best)
    return trainer, fit


@pytest.mark.slow
def test_learns_and_restores_best_weights() -> None:
    trainer, fit = _fit(epochs=12, patience=0)
    hist = fit.history
    assert len(hist) == 12 and [r["epoch"] for r in hist] == list(range(1, 13))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    best = min(hist, key=lambda r: r["val_loss"])
    assert fit.best_epoch == best["epoch"] and fit.best_val_loss == best["val_loss"]
    xv, yv = _data(32, 1)
    restored = trainer.evaluate_loss(torch.from_numpy(xv), torch.from_numpy(yv.astype(np.float32)))
    assert abs(restored - fit.best_val_loss) < 1e-6
    assert not trainer.model.training


@pytest.mark.slow
def test_patience_stops_early() -> None:
    # a learning rate this high makes the validation loss bounce: patience 1 must stop before 30 epochs
    _, fit = _fit(epochs=30, patience=1, lr=0.5)
    assert len(fit.history) < 30
    assert len(fit.history) - fit.best_epoch == 1


@pytest.mark.slow
def test_without_early_stopping_every_epoch_runs_and_the_last_weights_stay() -> None:
    # early_stop_on "none": the bouncing validation loss of a high rate neither stops training nor picks an epoch
    trainer, fit = _fit(epochs=8, patience=1, lr=0.5, restore_best=False)
    hist = fit.history
    assert len(hist) == 8 and fit.best_epoch == 8 and fit.best_val_loss == hist[-1]["val_loss"]
    assert min(r["val_loss"] for r in hist) < hist[-1]["val_loss"]  # a lower loss existed and was not restored
    xv, yv = _data(32, 1)
    kept = trainer.evaluate_loss(torch.from_numpy(xv), torch.from_numpy(yv.astype(np.float32)))
    assert abs(kept - hist[-1]["val_loss"]) < 1e-6


def test_same_seed_same_result() -> None:
    _, a = _fit(epochs=2, patience=0)
    _, b = _fit(epochs=2, patience=0)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_fold_seed_depends_on_seed_and_fold() -> None:
    assert fold_seed(0, 1) == fold_seed(0, 1)
    assert len({fold_seed(0, 0), fold_seed(0, 1), fold_seed(1, 0)}) == 3


def test_progress_reported_every_batch_on_cpu() -> None:
    torch.manual_seed(0)
    trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False)
    xt, yt = _data(40, 0)
    xv, yv = _data(8, 1)
    seen: list[tuple[int, int, int, float]] = []
    trainer.fit(xt, yt, xv, yv, seed=0, epochs=1, patience=0, views_benign=1, views_malignant=1, batch_size=16,
                on_batch=lambda e, b, n, loss: seen.append((e, b, n, loss)))
    assert [s[1] for s in seen] == [1, 2, 3] and all(s[2] == 3 and np.isfinite(s[3]) for s in seen)


def test_compile_mode_defaults() -> None:
    trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False)
    assert trainer.compile_mode is None and not trainer.compiled and not trainer.cuda_graphs
    assert Trainer(_Tiny(), torch.device("cpu"), bf16=False, compile_mode="max-autotune").compile_mode == "max-autotune"


def test_unusable_compiler_falls_back_to_eager_with_a_note() -> None:
    trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False, compile=True, compile_backend="no-such-backend")
    assert not trainer.compiled and "torch.compile unavailable" in trainer.notes[0]


@pytest.mark.slow
def test_compiled_step_matches_eager() -> None:
    # the "eager" backend captures the step with dynamo but runs torch's own kernels: same numbers as
    # eager, so this checks the compiled path's wiring (loss copy, optimiser, history) without a C++ build
    def run(compile: bool) -> tuple[Trainer, object]:
        torch.manual_seed(0)
        trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False, compile=compile, compile_backend="eager")
        xt, yt = _data(40, 0)
        xv, yv = _data(8, 1)
        fit = trainer.fit(xt, yt, xv, yv, seed=3, epochs=2, patience=0, views_benign=1, views_malignant=2,
                          batch_size=16, lr=1e-2)
        return trainer, fit

    compiled, fit_c = run(True)
    eager, fit_e = run(False)
    assert compiled.compiled and fit_c.compiled and not fit_c.notes
    np.testing.assert_allclose([r["train_loss"] for r in fit_c.history], [r["train_loss"] for r in fit_e.history],
                               rtol=1e-5)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_onecycle_schedule_warms_up_then_anneals_per_batch() -> None:
    torch.manual_seed(0)
    trainer = Trainer(_Tiny(), torch.device("cpu"), bf16=False)
    xt, yt = _data(64, 0)
    xv, yv = _data(32, 1)
    # 32 benign x 1 + 32 malignant x 2 = 96 views = 6 batches of 16 per epoch, 30 steps in all
    fit = trainer.fit(xt, yt, xv, yv, seed=3, epochs=5, patience=0, views_benign=1, views_malignant=2,
                      batch_size=16, lr=1e-2, lr_schedule="onecycle")
    lrs = [r["lr"] for r in fit.history]  # the rate after each epoch's last step
    sched = torch.optim.lr_scheduler.OneCycleLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-2),
                                                max_lr=1e-2, total_steps=30, pct_start=0.3, cycle_momentum=False)
    expected = []
    for step in range(1, 31):
        sched.optimizer.step()
        sched.step()
        if step % 6 == 0:
            expected.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[0] < 1e-2 and max(lrs) <= 1e-2 and lrs[-1] < 1e-4


def test_constant_schedule_keeps_the_rate_and_unknown_is_refused() -> None:
    trainer, fit = _fit(epochs=2, patience=0, lr=3e-3)
    assert [r["lr"] for r in fit.history] == [3e-3, 3e-3]
    xt, yt = _data(8, 0)
    with pytest.raises(SpinedxError, match="learning-rate schedule"):
        trainer.fit(xt, yt, xt, yt, seed=0, epochs=1, patience=0, views_benign=1, views_malignant=1,
                    batch_size=4, lr_schedule="cosine")
