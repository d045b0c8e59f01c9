"""Shared test fixtures.

The real spine MRI samples live in ``../shared/data/real`` beside the repository (CI lays a
copy of shared/ beside its clone).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the real spine MRI samples (see each PROVENANCE.md)."""
    assert REAL_DATA.is_dir(), f"real data folder missing: {REAL_DATA} (shared/ must lie beside the repo)"
    return REAL_DATA


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder for one test module's shared files, removed when the module ends.

    With ``tmp_path_retention_policy = "failed"`` (pyproject.toml) each passing test's ``tmp_path`` goes when the
    test ends; this does the same for module fixtures, so the suite's disk use stays at what one module needs
    (a CI machine may have little free disk: every fold model is tens of MB).
    """
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


# The suite's own disk use. A CI machine once had too little free disk: the suite filled it, every later
# test errored and pytest itself crashed. After each test (before its fixtures are torn down) the size of
# pytest's temporary folder is measured; the session fails if its peak passes the budget (MB; the environment
# variable SPINEDX_TEST_DISK_BUDGET_MB overrides it).
DISK_BUDGET_MB = 1000
_disk = {"peak_mb": 0.0, "where": ""}


def _tree_mb(root: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total / 2**20


def pytest_runtest_teardown(item: pytest.Item) -> None:
    factory = getattr(item.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    mb = _tree_mb(factory._basetemp)
    if mb > _disk["peak_mb"]:
        _disk["peak_mb"], _disk["where"] = mb, item.nodeid


def _budget_mb() -> float:
    return float(os.environ.get("SPINEDX_TEST_DISK_BUDGET_MB", DISK_BUDGET_MB))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _disk["peak_mb"] > _budget_mb() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    budget = _budget_mb()
    verdict = "over the budget: FAILED" if _disk["peak_mb"] > budget else "within the budget"
    terminalreporter.write_line(f"temporary files: peak {_disk['peak_mb']:.0f} MB after {_disk['where']} "
                                f"({verdict} of {budget:.0f} MB)")
