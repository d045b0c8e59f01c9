"""Strict records: JSON documents and CSV tables read with one-line errors, keys checked, JSON written atomically.

Every folder spinedx passes between stages has one owner that reads and writes it (:mod:`spinedx.runfolder` the
run folder, :mod:`spinedx.patchset` the patches folder). Their records are read and checked here, once: a missing
file, a file that is not text or not JSON, a document with missing or unknown keys, a table whose columns or values
are not what spinedx writes is refused with one line naming the file and what to do (``remedy``), raised as the
owner's error class (``error``: a :class:`~spinedx.errors.SpinedxError` subclass, e.g.
:class:`spinedx.runrecord.RunFolderError`).

Only the standard library and the light :mod:`spinedx.errors`, :mod:`spinedx.common` and :mod:`spinedx.fsutil`
are imported at module level (numpy and pandas inside :func:`read_table`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.common import json_clean
from spinedx.errors import SpinedxError
from spinedx.fsutil import atomic_write_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["is_int", "is_num", "read_json", "read_table", "strict_keys", "write_json"]


def is_int(v: Any) -> bool:
    """A whole number that is not a bool (``True`` is an ``int`` to Python, never to a record)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_json(path: Path, what: str, remedy: str, *, error: type[SpinedxError] = SpinedxError) -> Any:
    """The parsed JSON document at ``path``.

    Args:
        path: the file.
        what: its name in messages (``done.json``).
        remedy: what the user should do, ending each message.
        error: the error class to raise.

    Raises:
        SpinedxError: (``error``) the file is missing, not UTF-8 text, or not valid JSON.
    """
    if not path.is_file():
        raise error(f"{what} missing; {remedy}", where=str(path))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"not a text file ({exc.reason}); {remedy}", where=str(path)) from None
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON (line {exc.lineno}: {exc.msg}); {remedy}", where=str(path)) from None


def strict_keys(data: Any, expected: Sequence[str], what: str, where: Path | str, remedy: str, *,
                error: type[SpinedxError] = SpinedxError) -> dict[str, Any]:
    """``data`` as a dict with exactly the ``expected`` keys (no alias keys, no silent defaults).

    Raises:
        SpinedxError: (``error``) not a mapping, or keys missing or unknown (all named).
    """
    if not isinstance(data, dict):
        raise error(f"{what} must be a mapping, found {type(data).__name__}; {remedy}", where=str(where))
    missing = [k for k in expected if k not in data]
    unknown = sorted(str(k) for k in data if k not in expected)
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise error(f"{what}: {'; '.join(parts)} (not what this spinedx version writes); {remedy}", where=str(where))
    return data


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` atomically as JSON (indent 1, NaN as null, numpy values as Python's, a final newline)."""
    return atomic_write_json(path, json_clean(doc))


def read_table(path: Path, columns: Sequence[str], remedy: str, *,
               error: type[SpinedxError] = SpinedxError) -> pd.DataFrame:
    """A CSV with exactly ``columns``, in that order, and at least one row: ``patient_id`` as non-empty text;
    ``probability`` a finite number in [0, 1]; every other column whole numbers (``label`` and ``prediction`` 0 or
    1), read as int64.

    Raises:
        SpinedxError: (``error``) the file is missing or not a readable CSV, other columns, no rows, or a bad value
            (the first named by column and line).
    """
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise error(f"{path.name} missing; {remedy}", where=str(path))
    try:
        df = pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"not a readable CSV ({' '.join(str(exc).split())}); {remedy}", where=str(path)) from None
    if list(df.columns) != list(columns):
        raise error(f"columns {list(df.columns)}, expected {list(columns)}; {remedy}", where=str(path))
    if df.empty:
        raise error(f"no rows; {remedy}", where=str(path))
    for col in columns:
        if col == "patient_id":
            if (df[col].str.strip() == "").any():
                raise error(f"empty patient_id; {remedy}", where=str(path))
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0]) + 2
            raise error(f"{col} on line {row} is not a number ({df[col].iloc[row - 2]!r}); {remedy}",
                        where=str(path))
        if col == "probability":
            if not np.isfinite(values).all() or ((values < 0) | (values > 1)).any():
                raise error(f"probabilities must lie in [0, 1]; {remedy}", where=str(path))
            df[col] = values.astype(float)
        else:
            if (values != values.round()).any():
                raise error(f"{col} must hold whole numbers; {remedy}", where=str(path))
            df[col] = values.astype(np.int64)
            if col in ("label", "prediction") and not df[col].isin((0, 1)).all():
                raise error(f"{col} must be 0 or 1; {remedy}", where=str(path))
    return df
