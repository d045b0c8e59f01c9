"""Run folders for the report tests (written through spinedx.runfolder, see tests/runhelpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runhelpers import write_run


@pytest.fixture
def run_factory(tmp_path: Path):
    """Make a run folder under a fresh tmp dir: ``run_factory(**kwargs) -> run_dir`` (see ``write_run``)."""
    counter = iter(range(100))

    def _make(**kw) -> Path:
        root = tmp_path / f"r{next(counter)}"
        root.mkdir()
        return write_run(root, **kw)

    return _make
