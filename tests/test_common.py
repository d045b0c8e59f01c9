"""Shared constants and helpers (spinedx.common), and what light modules import."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinedx.common import (
    AGGREGATIONS,
    CHANNEL_NAMES,
    LABEL_NAMES,
    LABELS,
    aggregate,
    call,
    format_p,
    json_clean,
    label_code,
)
from spinedx.errors import SpinedxError

REPO = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_imports_neither_torch_nor_simpleitk() -> None:
    mods = _modules_after("from spinedx.cli import app\n"
                          "try:\n    app(['--help'])\nexcept SystemExit:\n    pass")
    assert "spinedx.cli.cv" in mods and "typer" in mods  # the commands really were registered
    heavy = {"torch", "SimpleITK", "pandas", "sklearn", "scipy", "matplotlib"} & {m.split(".")[0] for m in mods}
    assert not heavy, heavy


def test_light_modules_stay_light() -> None:
    mods = {m.split(".")[0] for m in _modules_after("import spinedx.common, spinedx.runfolder, spinedx.training.config,"
                                                    " spinedx.features")}
    assert not {"torch", "SimpleITK", "pandas", "numpy"} & mods
    mods = {m.split(".")[0] for m in _modules_after("import spinedx.evaluation.study, spinedx.evaluation.cv")}
    assert "torch" not in mods and "SimpleITK" not in mods  # statistics and the cv driver import torch lazily
    mods = {m.split(".")[0] for m in _modules_after("import spinedx.models.net, spinedx.predict")}
    assert "SimpleITK" not in mods  # the network no longer reaches the channel names through preprocess
    mods = _modules_after("import spinedx.predict")
    assert not any(m.startswith("spinedx.report") for m in mods)


def test_one_label_map_and_channel_order() -> None:
    from spinedx import features
    from spinedx.preprocess import CHANNEL_NAMES as preprocess_channels
    from spinedx.preprocess.extract import LABEL_NAMES as extract_labels

    assert LABELS == {"benign": 0, "malignant": 1} and LABEL_NAMES == {0: "benign", 1: "malignant"}
    assert features.LABELS is LABELS and extract_labels is LABEL_NAMES
    assert preprocess_channels is CHANNEL_NAMES and len(CHANNEL_NAMES) == 6


@pytest.mark.parametrize("value, code", [("benign", 0), (" Malignant ", 1), ("0", 0), (1, 1), ("1.0", 1)])
def test_label_code(value: object, code: int) -> None:
    assert label_code(value) == code


@pytest.mark.parametrize("value", ["tumour", "", "2", True, None])
def test_label_code_refuses(value: object) -> None:
    with pytest.raises(SpinedxError, match="neither benign nor malignant"):
        label_code(value, where="x.csv")


def test_aggregation_call_and_json() -> None:
    p = np.array([[0.1, 0.7, 0.4], [0.2, 0.2, 0.5]])
    assert AGGREGATIONS == ("max", "mean")
    np.testing.assert_allclose(aggregate(p, "max"), [0.7, 0.5])
    np.testing.assert_allclose(aggregate(p, "mean"), [0.4, 0.3])
    with pytest.raises(SpinedxError, match="aggregation"):
        aggregate(p, "median")
    assert call(0.5, 0.5) == "malignant" and call(0.49, 0.5) == "benign"
    doc = json_clean({"a": np.float32(0.5), "b": [np.int64(3), math.nan, np.inf], "c": np.array([1, 2]),
                      "d": (Path("/x"), np.bool_(True)), 4: None})
    assert doc == {"a": 0.5, "b": [3, None, None], "c": [1, 2], "d": ["/x", True], "4": None}
    json.dumps(doc, allow_nan=False)


def test_format_p() -> None:
    assert format_p(0.0004) == "< 0.001" and format_p(0.0004, space=False) == "<0.001"
    assert format_p(0.0123) == "0.012" and format_p(None) == "n/a" and format_p(math.nan) == "n/a"


def test_format_metric_with_and_without_interval() -> None:
    from spinedx.common import format_metric

    assert format_metric({"auc": 0.8123, "auc_low": 0.7, "auc_high": 0.9051}, "auc") == "auc 0.812 [0.700, 0.905]"
    assert format_metric({"auc": 0.8123}, "auc") == "auc 0.812"
    assert format_metric({}, "ppv") == "ppv n/a"


def test_a_closed_output_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`spinedx ... | head -1`: the reader goes away; the command stops quietly (exit 1, Python's convention for
    SIGPIPE), with no `error: Broken pipe` line and no traceback (found by the integrity probe)."""
    script = tmp_path / "spam.py"
    script.write_text(
        "import typer\n"
        "from spinedx.cli._app import command\n"
        "app = typer.Typer()\n"
        "@command('spam', target=app)\n"
        "def spam() -> None:\n"
        "    for i in range(200000):\n"
        "        typer.echo(f'line {i}')\n"
        "@app.command('other')\n"
        "def other() -> None:\n"
        "    pass\n"
        "app()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = f"'{sys.executable}' '{script}' spam | head -1; echo \"rc=${{PIPESTATUS[0]}}\""
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout.splitlines() == ["line 0", "rc=1"], res.stdout
    assert "error" not in res.stderr and "Traceback" not in res.stderr, res.stderr
