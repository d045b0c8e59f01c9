"""User-facing errors.

Every problem caused by the user's input (a bad file, a bad manifest row, a box
outside the image, a missing weights file) raises :class:`SpinedxError` (or a
subclass). The CLI turns it into one line on stderr and exit code 2, with no
traceback. The message must say *where* (file or patient) and *what to do*.
"""

from __future__ import annotations


class SpinedxError(Exception):
    """An error the user can fix. ``where`` names the file or patient."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def one_line(self) -> str:
        """The error as a single line (newlines folded)."""
        return " ".join(str(self).split())


class ImageReadError(SpinedxError):
    """An image file or DICOM series cannot be read or is not usable."""


class ManifestError(SpinedxError):
    """The cohort manifest has one or more bad rows.

    ``problems`` lists every problem found, as ``(patient_or_row, column, message)``.
    """

    def __init__(self, problems: list[tuple[str, str, str]], *, where: str | None = None) -> None:
        self.problems = problems
        parts = [f"{p} [{c}] {m}" for p, c, m in problems]
        msg = f"{len(problems)} problem(s) in the manifest: " + "; ".join(parts)
        super().__init__(msg + ". Fix these rows and run again.", where=where)


class PreprocessError(SpinedxError):
    """A case cannot be turned into patches (box outside image, too few slices, ...)."""


class WeightsError(SpinedxError):
    """Model weights are missing or unusable."""
