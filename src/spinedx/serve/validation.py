"""Annotation input checked with the same functions and messages as the manifest and the CLI.

``lesion_slices`` and ``box`` go through :func:`spinedx.cohort.parse_slices` / :func:`spinedx.cohort.parse_box`
(the manifest's parsers) and then :func:`spinedx.preprocess.mapping.validate_annotation` against the T2 series
(what ``spinedx extract`` and ``spinedx predict`` check), labels, features and reader calls through the
manifest's vocabularies. Every problem raises :class:`InvalidInput` with that message (HTTP 422).
"""

from __future__ import annotations

from typing import Any

from spinedx.serve.datastore import InvalidInput

_FIELDS = ("label", "lesion_slices", "box", "features", "readers")


def _as_text(value: Any, sep: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in value):
            raise ValueError(f"'{value}' is not a list of integers")
        return sep.join(str(v) for v in value)
    raise ValueError(f"'{value}' is not a list of integers")


def parse_changes(body: Any, *, where: str) -> dict[str, Any]:
    """Turn a PUT body into validated changes (fields absent from the body are not changed; null clears).

    Raises:
        InvalidInput: naming the field and what is wrong.
    """
    from spinedx.cohort import READER_VALUES, parse_box, parse_slices
    from spinedx.features import FEATURE_NAMES, LABELS

    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with label, lesion_slices, box, features, readers",
                           where=where)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; known: {', '.join(_FIELDS)}", where=where)
    out: dict[str, Any] = {}
    if "label" in body:
        label = body["label"]
        if label in (None, ""):
            out["label"] = None
        elif not isinstance(label, str) or label.lower() not in LABELS:
            raise InvalidInput(f"[label] '{label}' must be benign or malignant", where=where)
        else:
            out["label"] = label.lower()
    if "lesion_slices" in body:
        value = body["lesion_slices"]
        if value in (None, "", []):
            out["lesion_slices"] = ()
        else:
            try:
                out["lesion_slices"] = parse_slices(_as_text(value, ";"))
            except ValueError as exc:
                raise InvalidInput(f"[lesion_slices] {exc}", where=where) from None
    if "box" in body:
        value = body["box"]
        if value in (None, "", []):
            out["box"] = None
        else:
            try:
                out["box"] = parse_box(_as_text(value, ","))
            except ValueError as exc:
                raise InvalidInput(f"[box] {exc}", where=where) from None
    if "features" in body:
        feats = body["features"]
        if not isinstance(feats, dict):
            raise InvalidInput("[features] must be an object feature name -> 0, 1 or null", where=where)
        clean: dict[str, int | None] = {}
        for name, v in feats.items():
            short = name.removeprefix("feature_")
            if short not in FEATURE_NAMES:
                raise InvalidInput(f"[feature_{short}] unknown feature; known: {', '.join(FEATURE_NAMES)}",
                                   where=where)
            if v is None or v == "":
                clean[short] = None
            elif isinstance(v, bool) or v not in (0, 1, "0", "1"):
                raise InvalidInput(f"[feature_{short}] '{v}' is not 0 or 1", where=where)
            else:
                clean[short] = int(v)
        out["features"] = clean
    if "readers" in body:
        readers = body["readers"]
        if not isinstance(readers, dict):
            raise InvalidInput("[readers] must be an object reader_<name> -> benign, malignant or null", where=where)
        clean_r: dict[str, str | None] = {}
        for name, v in readers.items():
            col = name if name.startswith("reader_") else f"reader_{name}"
            if not col[len("reader_"):].replace("_", "").isalnum():
                raise InvalidInput(f"[{col}] reader names are letters, digits and _", where=where)
            if v in (None, ""):
                clean_r[col] = None
            elif not isinstance(v, str) or v.lower() not in READER_VALUES:
                raise InvalidInput(f"[{col}] '{v}' must be benign, malignant or empty", where=where)
            else:
                clean_r[col] = v.lower()
        out["readers"] = clean_r
    return out


def check_against_t2(t2: Any, slices: tuple[int, ...], box: tuple[int, int, int, int] | None, *, where: str) -> None:
    """Check slices and box against the T2 series with ``spinedx.preprocess``'s own check (its messages).

    Raises:
        InvalidInput: lesion slices out of range, a box outside the image, a series of fewer than 3 slices.
    """
    from spinedx.errors import PreprocessError
    from spinedx.preprocess.mapping import validate_annotation

    if not slices and box is None:
        return
    nz, _ny, _nx = t2.shape
    # validate_annotation checks both at once; a stand-in for the part not given keeps its messages for the other.
    probe_slices = slices or (min(1, nz - 1),)
    probe_box = box or (0, 0, 1, 1)
    try:
        validate_annotation(t2, probe_slices, probe_box, where=where)
    except PreprocessError as exc:
        raise InvalidInput(exc.message, where=where) from None
