"""The schema of one row of the cohort manifest: the cell parsers and the Pydantic model :class:`ManifestRow`.

:mod:`spinedx.cohort` reads the file (header, dialect, duplicates, the cohort-wide rules) and validates each row with
:class:`ManifestRow`; the columns are documented there and in ``docs/io.md``. The parsers of the box and the lesion
slices are shared with the workstation and ``spinedx predict``.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from spinedx.features import LABELS

#: The values of a reader column (empty = no call).
READER_VALUES = ("benign", "malignant")


# -- parsing ------------------------------------------------------------------------------------------
_SPLIT = re.compile(r"[;,\s]+")


def parse_slices(text: str) -> tuple[int, ...]:
    """Parse ``"7;8;9"`` (also ``,`` or spaces) into sorted unique 0-based indices.

    Raises:
        ValueError: empty, non-integer, negative or repeated values.
    """
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    if not parts:
        raise ValueError("no slice index given (expected e.g. 7;8;9)")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"'{text}' is not a list of integers (expected e.g. 7;8;9)") from None
    if any(v < 0 for v in vals):
        raise ValueError(f"'{text}' has a negative index (indices are 0-based)")
    if len(set(vals)) != len(vals):
        raise ValueError(f"'{text}' repeats an index")
    return tuple(sorted(vals))


def parse_box(text: str) -> tuple[int, int, int, int]:
    """Parse ``"x0,y0,x1,y1"`` (half-open pixel box) into four ints.

    Raises:
        ValueError: not four non-negative integers with ``x1 > x0`` and ``y1 > y0``.
    """
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    if len(parts) != 4:
        raise ValueError(f"'{text}' is not four numbers x0,y0,x1,y1")
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"'{text}' is not four integers x0,y0,x1,y1") from None
    if min(x0, y0, x1, y1) < 0:
        raise ValueError(f"'{text}' has a negative coordinate")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"'{text}' is empty: need x1 > x0 and y1 > y0 (half-open box)")
    return x0, y0, x1, y1


def parse_binary(text: str) -> int:
    t = text.strip()
    if t in ("0", "1"):
        return int(t)
    try:  # a spreadsheet may have written 1.0
        v = float(t)
    except ValueError:
        v = -1.0
    if v in (0.0, 1.0):
        return int(v)
    raise ValueError(f"'{text}' is not 0 or 1")


def path_problem(p: Path) -> str | None:
    """Why an image path cannot be used ('does not exist', a symlink loop, a broken link), or None."""
    if p.exists():
        return None
    if p.is_symlink():
        try:
            os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop (the link points back to itself through other links); fix the link"
        return f"is a broken symbolic link (to {os.readlink(p)}, which does not exist); fix the link"
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "lies behind a symbolic link loop; fix the link"
    return "does not exist"



# -- the row schema ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowContext:
    """What validating a row depends on besides the row (given to Pydantic as the validation context).

    Attributes:
        base: the manifest's folder (relative image paths resolve against it).
        require_images: see :func:`load_manifest`.
        check_files: see :func:`load_manifest`.
        draft: see :func:`load_manifest`.
    """

    base: Path
    require_images: bool = True
    check_files: bool = True
    draft: bool = False


def _context(info: ValidationInfo) -> RowContext:
    ctx = info.context.get("row") if isinstance(info.context, dict) else None
    return ctx if isinstance(ctx, RowContext) else RowContext(base=Path.cwd())


def _parse_synthetic(text: str) -> bool:
    try:
        return bool(parse_binary(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (1 = simulated patient, 0 = real)") from None


def _parse_reader_call(text: str) -> str | None:
    call = text.lower()
    if call and call not in READER_VALUES:
        raise ValueError(f"'{text}' must be benign, malignant or empty")
    return call or None


_EMPTY_IMAGE = {
    "t1": "empty (a DICOM folder or image file is needed)",
    "t2": "empty (a DICOM folder or image file is needed)",
    "lesion_mask": ("empty (a lesion mask file is needed on every row when the column is present; or drop the "
                    "column)"),
}


class ManifestRow(BaseModel):
    """The known columns of one manifest row, validated (the schema of a row; see the module docstring).

    The input is the row's cells as text (stripped), only for the columns the header has; feature columns go in
    ``features`` (name without ``feature_``) and reader columns in ``readers``. Other columns are no fields: the
    user's own columns are carried beside the row (:attr:`CaseRecord.extra`), so an unknown key here is an error.
    Validation needs a :class:`RowContext` (``context={"row": ...}``). Every problem is reported at once, each
    located at its column, with the message the manifest's one-line error shows.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # fields in the order problems are listed (Pydantic validates, and reports, in field order)
    patient_id: str = ""
    label: str | None = None
    t1: Path | None = None
    t2: Path | None = None
    lesion_mask: Path | None = None
    lesion_slices: tuple[int, ...] = ()
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    features: dict[str, Annotated[int, BeforeValidator(parse_binary)]] = Field(default_factory=dict)
    synthetic: Annotated[bool, BeforeValidator(_parse_synthetic)] = False
    readers: dict[str, Annotated[str | None, BeforeValidator(_parse_reader_call)]] = Field(default_factory=dict)
    t1_series_uid: str | None = None
    t2_series_uid: str | None = None

    @field_validator("patient_id", mode="before")
    @classmethod
    def _patient_id(cls, value: str) -> str:
        if not value:
            raise ValueError("empty")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, value: str, info: ValidationInfo) -> str | None:
        if not value and _context(info).draft:
            return None  # not yet known
        if value.lower() not in LABELS:
            raise ValueError(f"'{value}' must be benign or malignant")
        return value.lower()

    @field_validator("t1", "t2", "lesion_mask", mode="before")
    @classmethod
    def _image(cls, value: str, info: ValidationInfo) -> Path | None:
        ctx = _context(info)
        if not value:
            if ctx.require_images:
                raise ValueError(_EMPTY_IMAGE[str(info.field_name)])
            return None
        p = Path(os.path.expanduser(value))
        p = Path(os.path.normpath(p if p.is_absolute() else ctx.base / p))
        problem = path_problem(p) if ctx.require_images and ctx.check_files else None
        if problem:
            raise ValueError(f"'{value}' {problem} (relative paths are taken from {ctx.base})")
        return p

    @field_validator("lesion_slices", mode="before")
    @classmethod
    def _slices(cls, value: str, info: ValidationInfo) -> tuple[int, ...]:
        return parse_slices(value) if value or _context(info).require_images else ()

    @field_validator("box", mode="before")
    @classmethod
    def _box(cls, value: str, info: ValidationInfo) -> tuple[int, int, int, int]:
        return parse_box(value) if value or _context(info).require_images else (0, 0, 0, 0)

    @field_validator("t1_series_uid", "t2_series_uid", mode="before")
    @classmethod
    def _uid(cls, value: str) -> str | None:
        return value or None



def row_problems(exc: ValidationError, who: str) -> list[tuple[str, str, str]]:
    """The errors of a :class:`ManifestRow` as the manifest's ``(row, column, message)`` problems."""
    out = []
    for err in exc.errors():
        loc = err["loc"]
        if loc[0] == "features" and len(loc) > 1:
            col = f"feature_{loc[1]}"
        elif loc[0] == "readers" and len(loc) > 1:
            col = str(loc[1])
        else:
            col = str(loc[0])
        error = (err.get("ctx") or {}).get("error")
        if err["type"] == "extra_forbidden":
            msg = "not a column of the schema (load_manifest carries the user's own columns in CaseRecord.extra)"
        else:
            msg = str(error) if isinstance(error, ValueError) else err["msg"]
        out.append((who, col, msg))
    return out
