"""The run profiles: ``paper`` stays the paper's protocol, ``quick`` and ``cpu`` change only what they say."""

from __future__ import annotations

import pytest

from spinedx.errors import SpinedxError
from spinedx.training.config import CPU_PROFILE, PROFILES, CVConfig


def test_paper_profile_is_the_papers_protocol() -> None:
    paper = CVConfig.from_profile("paper")
    assert (paper.backbone, paper.epochs, paper.patience, paper.views_benign, paper.views_malignant) == (
        "resnet50", 100, 10, 20, 40)
    assert (paper.lr, paper.lr_schedule, paper.betas, paper.weight_decay, paper.batch_size) == (
        1e-4, "constant", (0.5, 0.999), 1e-4, 32)
    assert (paper.folds, paper.threshold, paper.aggregation, paper.early_stop_on) == (10, 0.5, "max", "inner")


def test_cpu_profile_values_and_everything_else_is_the_papers() -> None:
    assert "cpu" in PROFILES
    cpu = CVConfig.from_profile("cpu")
    paper = CVConfig.from_profile("paper")
    assert (cpu.backbone, cpu.epochs, cpu.patience, cpu.views_benign, cpu.views_malignant, cpu.lr,
            cpu.lr_schedule, cpu.betas, cpu.early_stop_on) == (
        "mobilenet_v3_small", 14, 0, 2, 4, 1e-3, "onecycle", (0.9, 0.999), "none")
    changed = {k for k, v in cpu.to_dict().items() if v != paper.to_dict()[k]}
    assert changed == set(CPU_PROFILE) | {"profile"}
    # the pipeline around the network is untouched: folds, the inner split (held out, monitored), aggregation, threshold
    assert (cpu.folds, cpu.inner_val_fraction, cpu.aggregation, cpu.threshold, cpu.optimistic) == (
        10, 0.1, "max", 0.5, False)


def test_the_main_job_uses_the_cpu_profile() -> None:
    import inspect

    from spinedx.demo import run_demo

    assert inspect.signature(run_demo).parameters["profile"].default == "cpu"


def test_quick_profile_unchanged() -> None:
    quick = CVConfig.from_profile("quick")
    assert (quick.backbone, quick.epochs, quick.patience, quick.views_benign, quick.views_malignant, quick.lr,
            quick.lr_schedule) == ("resnet50", 8, 4, 1, 2, 1e-4, "constant")


def test_profile_overrides_and_record_round_trip() -> None:
    cpu = CVConfig.from_profile("cpu", epochs=3, seed=5, lr_schedule=None)
    assert (cpu.epochs, cpu.seed, cpu.lr_schedule) == (3, 5, "onecycle")
    assert CVConfig.from_record(cpu.to_dict(), "config.yaml") == cpu


def test_unknown_schedule_refused() -> None:
    with pytest.raises(SpinedxError, match="lr_schedule must be constant or onecycle"):
        CVConfig.from_profile("cpu", lr_schedule="cosine")
    # a run written before the setting existed trained at a constant rate, and reads back so
    record = CVConfig.from_profile("quick").to_dict()
    del record["lr_schedule"]
    assert CVConfig.from_record(record, "config.yaml") == CVConfig.from_profile("quick")


def test_cli_leaves_early_stopping_to_the_profile() -> None:
    # spinedx cv passes --early-stop-on only when given: the cpu profile keeps its "none", paper its "inner"
    assert CVConfig.from_profile("cpu", early_stop_on=None).early_stop_on == "none"
    assert CVConfig.from_profile("paper", early_stop_on=None).early_stop_on == "inner"
    assert CVConfig.from_profile("cpu", early_stop_on="inner").early_stop_on == "inner"
    with pytest.raises(SpinedxError, match="inner, outer or none"):
        CVConfig.from_profile("paper", early_stop_on="never")
    import typer.main

    from spinedx.cli import app

    cv = next(c for c in typer.main.get_command(app).commands.values() if c.name == "cv")
    assert next(p for p in cv.params if p.name == "early_stop_on").default is None
