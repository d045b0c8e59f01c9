"""Provenance: versions, git commit, device. Written into every output folder."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "spinedx", "torch", "torchvision", "numpy", "SimpleITK", "pydicom", "highdicom", "nibabel",
    "scipy", "scikit-learn", "statsmodels", "pandas", "matplotlib",
)
# listed only when installed: pytorch-grad-cam is no dependency (the heatmaps are spinedx.explain's own code), only
# the tests' reference for it
_OPTIONAL_PACKAGES = ("grad-cam",)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out: dict[str, str] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    for name in _OPTIONAL_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The git commit of the spinedx source tree, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    commit = res.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
        timeout=5, check=False,
    )
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance() -> dict:
    """Everything needed to say how an output was made."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_commit": git_commit(),
    }
