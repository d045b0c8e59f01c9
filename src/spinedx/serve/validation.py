"""Annotation input: the ``PUT .../annotation`` body as a Pydantic schema, checked with the manifest's own parsers.

:class:`AnnotationBody` is the body FastAPI takes: ``lesion_slices`` and ``box`` go through
:func:`spinedx.cohort.parse_slices` / :func:`spinedx.cohort.parse_box` (the manifest's parsers), labels, features and
reader calls through the manifest's vocabularies, and unknown fields are refused. Its errors become one line naming
each field (:func:`body_problem`), raised as :class:`InvalidInput` (HTTP 422). :func:`check_against_t2` then checks
slices and box against the T2 series with :func:`spinedx.preprocess.mapping.validate_annotation` (what
``spinedx extract`` and ``spinedx predict`` check).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema

from spinedx.cohort import READER_VALUES, parse_box, parse_slices
from spinedx.features import FEATURE_NAMES, LABELS
from spinedx.serve.datastore import InvalidInput

_FIELDS = ("label", "lesion_slices", "box", "features", "readers")
_NOT_AN_OBJECT = "the body must be a JSON object with label, lesion_slices, box, features, readers"


def _as_text(value: Any, sep: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in value):
            raise ValueError(f"'{value}' is not a list of integers")
        return sep.join(str(v) for v in value)
    raise ValueError(f"'{value}' is not a list of integers")


def _label(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or value.lower() not in LABELS:
        raise ValueError(f"'{value}' must be benign or malignant")
    return value.lower()


def _slices(value: Any) -> tuple[int, ...]:
    return () if value in (None, "", []) else parse_slices(_as_text(value, ";"))


def _box(value: Any) -> tuple[int, int, int, int] | None:
    return None if value in (None, "", []) else parse_box(_as_text(value, ","))


def _feature_name(name: str) -> str:
    short = name.removeprefix("feature_")
    if short not in FEATURE_NAMES:
        raise ValueError(f"unknown feature; known: {', '.join(FEATURE_NAMES)}")
    return short


def _feature_value(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or value not in (0, 1, "0", "1"):
        raise ValueError(f"'{value}' is not 0 or 1")
    return int(value)


def _reader_column(name: str) -> str:
    col = name if name.startswith("reader_") else f"reader_{name}"
    if not col[len("reader_"):].replace("_", "").isalnum():
        raise ValueError("reader names are letters, digits and _")
    return col


def _reader_call(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or value.lower() not in READER_VALUES:
        raise ValueError(f"'{value}' must be benign, malignant or empty")
    return value.lower()


def _object(what: str) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"must be an object {what}")
        return value
    return check


_INTS_OR_TEXT = {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "string"}, {"type": "null"}]}
FeatureName = Annotated[str, BeforeValidator(_feature_name)]
FeatureValue = Annotated[int | None, BeforeValidator(_feature_value),
                         WithJsonSchema({"enum": [0, 1, "0", "1", None]})]
ReaderColumn = Annotated[str, BeforeValidator(_reader_column)]
ReaderCall = Annotated[str | None, BeforeValidator(_reader_call),
                       WithJsonSchema({"enum": ["benign", "malignant", "", None]})]


class AnnotationBody(BaseModel):
    """The body of ``PUT /api/cases/{id}/annotation``: fields absent from it are not changed, null clears one.

    ``features`` keys may carry the ``feature_`` prefix or not, ``readers`` keys the ``reader_`` prefix or not; a
    feature value of null (or "") clears that feature, a reader call of null (or "") clears the call.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"label": "malignant", "lesion_slices": [6, 7, 8], "box": [250, 198, 321, 269], "features": {"fluid_sign": 0},
         "readers": {"reader_senior": "benign"}}]})

    label: Annotated[str | None, BeforeValidator(_label),
                     WithJsonSchema({"enum": ["benign", "malignant", "", None]})] = None
    lesion_slices: Annotated[tuple[int, ...], BeforeValidator(_slices), WithJsonSchema(
        {**_INTS_OR_TEXT, "description": "0-based T2 slice indices, e.g. [6, 7, 8] or \"6;7;8\""})] = ()
    box: Annotated[tuple[int, int, int, int] | None, BeforeValidator(_box), WithJsonSchema(
        {**_INTS_OR_TEXT, "description": "T2 box x0,y0,x1,y1 (half-open), e.g. [250, 198, 321, 269]"})] = None
    features: Annotated[dict[FeatureName, FeatureValue],
                        BeforeValidator(_object("feature name -> 0, 1 or null"))] = {}
    readers: Annotated[dict[ReaderColumn, ReaderCall],
                       BeforeValidator(_object("reader_<name> -> benign, malignant or null"))] = {}

    def changes(self) -> dict[str, Any]:
        """The fields the body gave, validated (``datastore.save_annotation``'s ``changes``)."""
        return {name: getattr(self, name) for name in _FIELDS if name in self.model_fields_set}


def _column(loc: Sequence[int | str]) -> str:
    """The manifest column an error location names: ``features.fluid_sign`` -> ``feature_fluid_sign``."""
    if loc[0] == "features" and len(loc) > 1:
        return f"feature_{str(loc[1]).removeprefix('feature_')}"
    if loc[0] == "readers" and len(loc) > 1:
        name = str(loc[1])
        return name if name.startswith("reader_") else f"reader_{name}"
    return str(loc[0])


def body_problem(errors: Sequence[Any]) -> str:
    """Pydantic's errors of an :class:`AnnotationBody` as one line: ``[field] problem; ...``, as the CLI words them.

    Args:
        errors: ``ValidationError.errors()`` (locations relative to the body), or FastAPI's request validation
            errors with their leading ``"body"``.
    """
    unknown: list[str] = []
    parts: list[str] = []
    for err in errors:
        loc = list(err.get("loc") or ())
        if loc and loc[0] == "body":
            loc = loc[1:]
        kind = err.get("type")
        if kind == "extra_forbidden" and len(loc) == 1:
            unknown.append(str(loc[0]))
        elif kind == "json_invalid":
            parts.append(f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'cannot be parsed')})")
        elif not loc or kind in ("model_type", "model_attributes_type", "dict_type", "missing"):
            parts.append(_NOT_AN_OBJECT)
        else:
            error = (err.get("ctx") or {}).get("error")
            parts.append(f"[{_column(loc)}] {error if isinstance(error, ValueError) else err.get('msg')}")
    if unknown:
        parts.insert(0, f"unknown field(s) {sorted(unknown)}; known: {', '.join(_FIELDS)}")
    return "; ".join(dict.fromkeys(parts)) or _NOT_AN_OBJECT


def parse_changes(body: Any, *, where: str) -> dict[str, Any]:
    """Validate a PUT body given as parsed JSON (fields absent from the body are not changed; null clears).

    Raises:
        InvalidInput: naming each field and what is wrong.
    """
    if not isinstance(body, dict):
        raise InvalidInput(_NOT_AN_OBJECT, where=where)
    try:
        return AnnotationBody.model_validate(body).changes()
    except ValidationError as exc:
        raise InvalidInput(body_problem(exc.errors()), where=where) from None


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
