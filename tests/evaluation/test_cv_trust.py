"""`spinedx cv` checks before it starts and leaves complete folds or none (issue 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from runhelpers import write_patches
from typer.testing import CliRunner

from spinedx.cli import app
from spinedx.errors import SpinedxError
from spinedx.evaluation.cv import run_cv, train_fold
from spinedx.runfolder import RunFolder
from spinedx.training.config import CVConfig

REPO = Path(__file__).resolve().parents[2]
PIDS = [f"P{i:02d}" for i in range(12)]
Y = np.array([i % 2 for i in range(12)])


def _patches(folder: Path, **kw: object) -> Path:
    return write_patches(folder, PIDS, Y, size=16, **kw)  # type: ignore[arg-type]


def _cfg(**kw: object) -> CVConfig:
    """The configuration the command line of :func:`_cli` makes (so the CLI can resume these runs)."""
    base: dict[str, object] = {"folds": 2, "backbone": "resnet18", "pretrained": "none", "epochs": 1, "threads": 1,
                               "compile": "off"}
    return CVConfig.from_profile("quick", **{**base, **kw})  # type: ignore[arg-type]


def _cli(*args: str) -> list[str]:
    return ["cv", *args, "--folds", "2", "--profile", "quick", "--backbone", "resnet18", "--pretrained", "none",
            "--epochs", "1", "--threads", "1", "--compile", "off", "--quiet"]


def _one_error(args: list[str], *needles: str) -> str:
    res = CliRunner().invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], res.output
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


class _Stop(Exception):
    pass


def test_other_seed_before_any_fold_finished_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Bug 7: a resume with another --seed kept the old splits.json while config.yaml recorded the new seed."""
    import spinedx.evaluation.cv as cv_mod

    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"

    def interrupted(*a: object, **k: object) -> dict:
        raise _Stop  # the first fold never finishes

    with monkeypatch.context() as m:
        m.setattr(cv_mod, "train_fold", interrupted)
        with pytest.raises(_Stop):
            run_cv(patches, run, _cfg(seed=0), progress=False)
    assert json.loads((run / "splits.json").read_text())["seed"] == 0 and not (run / "folds").exists()
    with pytest.raises(SpinedxError, match=r"seed: 0 there, 1 now"):
        run_cv(patches, run, _cfg(seed=1), progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["seed"] == 0  # untouched
    _one_error(_cli(str(patches), "--out", str(run), "--seed", "1"), "other settings", "seed", "--overwrite")
    # --overwrite starts over, as nothing finished: the splits now follow the new seed
    run_cv(patches, run, _cfg(seed=1), progress=False, overwrite=True)
    assert json.loads((run / "splits.json").read_text())["seed"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["seed"] == 1
    # with finished folds --overwrite is refused too, and other settings stay refused
    with pytest.raises(SpinedxError, match="already finished"):
        run_cv(patches, run, _cfg(seed=2), progress=False, overwrite=True)
    for change, needle in ((_cfg(seed=1, inner_val_fraction=0.3), "inner_val_fraction"),
                           (_cfg(folds=3, seed=1), "folds")):
        with pytest.raises(SpinedxError, match=needle):
            run_cv(patches, run, change, progress=False)


def test_other_patches_are_refused(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    run_cv(patches, run, _cfg(), progress=False)
    _patches(tmp_path / "p", seed=3)  # re-extracted: same patients, other pixels
    with pytest.raises(SpinedxError, match="patches"):
        run_cv(patches, run, _cfg(), progress=False)


def test_config_records_what_the_run_was_trained_on(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p", synthetic=True)
    run = tmp_path / "run"
    metrics = run_cv(patches, run, _cfg(), progress=False)
    rec = RunFolder(run).read_record()
    extract = json.loads((patches / "extract.json").read_text())
    assert rec.patches.extract == extract["config"] and rec.patches.patch_size == 16
    assert rec.patches.sha256 == extract["patches_sha256"] and rec.synthetic is True
    assert rec.patches.channel_names == tuple(extract["channel_names"])
    assert metrics["synthetic"] is True
    res = CliRunner().invoke(app, _cli(str(patches), "--out", str(run)))
    assert res.exit_code == 0 and "synthetic cohort, simulated readers" in res.output, res.output


def test_bad_patches_refused_up_front(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p")
    npz = patches / "patches.npz"
    data = dict(np.load(npz))
    # NaN: refused before any fold (today: crash after fold 0 with a half-written fold folder)
    x = data["x"].copy()
    x[5, 2, 3, 3] = np.nan
    with open(npz, "wb") as fh:
        np.savez(fh, **{**data, "x": x})
    (patches / "extract.json").unlink()
    _one_error(_cli(str(patches), "--out", str(tmp_path / "r1")), "patches.npz", "NaN or infinite",
               "patient P02, slice 8", "rerun spinedx extract")
    assert not (tmp_path / "r1" / "folds").exists()
    # truncated file (today: BadZipFile traceback)
    with open(npz, "wb") as fh:
        np.savez(fh, **data)
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    _one_error(_cli(str(patches), "--out", str(tmp_path / "r2")), "patches.npz", "damaged or truncated")
    # extract.json of other patches beside patches.npz
    with open(npz, "wb") as fh:
        np.savez(fh, **data)
    (patches / "extract.json").write_text(json.dumps({"patches_sha256": "0" * 64, "config": {"patch_size": 16}}))
    _one_error(_cli(str(patches), "--out", str(tmp_path / "r3")), "extract.json", "other patches")


def test_out_that_is_a_file_or_a_foreign_folder(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p")
    (tmp_path / "afile").write_text("x")
    _one_error(_cli(str(patches), "--out", str(tmp_path / "afile")), "afile", "not a folder")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_text("x")
    _one_error(_cli(str(patches), "--out", str(tmp_path / "photos")), "not a spinedx run folder")


def test_damaged_config_yaml_is_refused(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    run_cv(patches, run, _cfg(), progress=False)
    (run / "config.yaml").write_text("config: [1, 2\n")
    _one_error(_cli(str(patches), "--out", str(run)), "config.yaml", "not valid YAML")


def test_interrupted_fold_leaves_nothing_half_written(tmp_path: Path, monkeypatch) -> None:
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    from spinedx.models import run as models_run

    real_save = models_run.save_fold_model

    def save_then_interrupt(*a: object, **k: object) -> None:
        real_save(*a, **k)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # Ctrl-C after model.pt, before predictions.csv and done.json

    monkeypatch.setattr(models_run, "save_fold_model", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_cv(patches, run, _cfg(), progress=False)
    assert not (run / "folds").exists() or list((run / "folds").iterdir()) == []
    monkeypatch.setattr(models_run, "save_fold_model", real_save)
    trained: list[int] = []
    run_cv(patches, run, _cfg(), progress=False, on_fold_done=trained.append)
    assert trained == [0, 1]


def test_damaged_or_stray_fold_entries(tmp_path: Path) -> None:
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    run_cv(patches, run, _cfg(), progress=False)
    (run / "folds" / "1" / "done.json").unlink()
    with pytest.raises(SpinedxError, match=r"incomplete fold folder \(no done.json\)"):
        run_cv(patches, run, _cfg(), progress=False)
    (run / "folds" / "1" / "done.json").write_text(json.dumps({"fold": 1}))
    (run / "folds" / "1.bak").mkdir()
    _one_error(_cli(str(patches), "--out", str(run)), "1.bak", "unexpected entry")


def test_train_fold_is_a_function_of_the_run_folder(tmp_path: Path) -> None:
    """What a Ray worker would call: only (run folder, fold); it checks the patches and writes its own folder."""
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    full = run_cv(patches, run, _cfg(), progress=False)
    shutil_rm = __import__("shutil").rmtree
    before = (run / "folds" / "1" / "predictions.csv").read_text()
    shutil_rm(run / "folds" / "1")
    done = train_fold(run, 1)
    assert done["fold"] == 1 and (run / "folds" / "1" / "done.json").is_file()
    assert (run / "folds" / "1" / "predictions.csv").read_text() == before  # same seeds, same result
    assert train_fold(run, 1)["fold"] == 1  # a finished fold is not trained again
    from spinedx.evaluation.cv import finish_run

    assert finish_run(run)["auc"] == full["auc"]
    _patches(tmp_path / "p", seed=9)
    shutil_rm(run / "folds" / "0")
    with pytest.raises(SpinedxError, match="changed since this run started"):
        train_fold(run, 0)


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "spinedx", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_stops_cv_cleanly_and_a_rerun_resumes(tmp_path: Path, sig: int, code: int, word: str) -> None:
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    args = ["cv", str(patches), "--out", str(run), "--folds", "2", "--profile", "quick", "--backbone", "resnet18",
            "--pretrained", "none", "--epochs", "2", "--patience", "0", "--threads", "1", "--compile", "off", "--quiet"]
    proc = _spawn(args)
    try:
        _wait_for(run / "folds" / "0", proc)  # fold 0 finished; fold 1 is training
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and word in errors[0] and "rerun the same command" in errors[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in (run / "folds").iterdir()) == ["0"]  # fold 1: nothing, not even a temporary
    stamp = (run / "folds" / "0" / "model.pt").stat().st_mtime_ns
    trained: list[int] = []
    cfg = _cfg(epochs=2, patience=0)
    run_cv(patches, run, cfg, progress=False, on_fold_done=trained.append)
    assert trained == [1] and (run / "folds" / "0" / "model.pt").stat().st_mtime_ns == stamp
    assert (run / "metrics.json").is_file()


def test_the_thread_count_shapes_results_and_a_legacy_run_resumes(tmp_path: Path, caplog) -> None:
    """Issue 18: the per-fold thread count (default 1) changes the last digits, so it is recorded and a resume with
    another count is refused (it was ignored); --compile too. A run written before it was recorded (threads: null)
    resumes with the command's count, with a warning."""
    assert CVConfig().threads == 1 and CVConfig.from_profile("quick").threads == 1
    with pytest.raises(SpinedxError, match="threads must be a whole number"):
        CVConfig.from_profile("quick", threads=0)
    patches = _patches(tmp_path / "p")
    run = tmp_path / "run"
    # fp32: bf16 on a CPU with AVX512-BF16 gave NaN losses at random on these 16x16 patches (docs/training.md)

    def stop_after_first(k: int) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        run_cv(patches, run, _cfg(bf16="off"), progress=False, on_fold_done=stop_after_first)
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["threads"] == 1
    with pytest.raises(SpinedxError, match=r"threads: 1 there, 2 now"):
        run_cv(patches, run, _cfg(bf16="off", threads=2), progress=False)
    with pytest.raises(SpinedxError, match=r"compile: 'off' there, 'auto' now"):
        run_cv(patches, run, _cfg(bf16="off", compile="auto"), progress=False)
    args = _cli(str(patches), "--out", str(run))
    args[args.index("--threads") + 1] = "2"
    _one_error(args, "other settings", "threads: 1 there, 2 now")
    # written before the count was recorded: threads null reads as what it was (the process's own count) ...
    doc = yaml.safe_load((run / "config.yaml").read_text())
    doc["config"]["threads"] = None
    (run / "config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert RunFolder(run).read_record().config.threads is None
    # ... and resumes with the command's count, saying that the folds may differ in the last digits
    trained: list[int] = []
    with caplog.at_level("WARNING", logger="spinedx.evaluation.cv"):
        run_cv(patches, run, _cfg(bf16="off", threads=2), progress=False, on_fold_done=trained.append)
    assert trained == [1]
    assert any("threads: null" in r.getMessage() and "last digits" in r.getMessage() for r in caplog.records)
    assert RunFolder(run).read_record().config.threads == 2
    assert json.loads((run / "folds" / "1" / "done.json").read_text())["numerics"]["threads"] == 2
