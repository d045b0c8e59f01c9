"""Check DICOM objects with dicom3tools' ``dciodvfy`` (IOD and module rules of PS3.3, value rules of PS3.5)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spinedx.errors import SpinedxError


@dataclass
class Validation:
    """``dciodvfy``'s verdict on one file.

    Attributes:
        path: the file.
        iod: the IOD it was checked against (first line of the output).
        errors: ``Error - ...`` lines.
        warnings: ``Warning - ...`` lines.
    """

    path: Path
    iod: str
    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors


def dciodvfy(path: str | Path, timeout: float = 60.0) -> Validation:
    """Run ``dciodvfy`` on ``path`` and sort its messages.

    Raises:
        SpinedxError: dciodvfy is not installed (Debian/Ubuntu package ``dicom3tools``).
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise SpinedxError("dciodvfy not found; install dicom3tools (apt-get install dicom3tools)", where="dciodvfy")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    iod = next((ln for ln in lines if not ln.startswith(("Error", "Warning"))), "")
    return Validation(Path(path), iod, [ln for ln in lines if ln.startswith("Error")],
                      [ln for ln in lines if ln.startswith("Warning")])
