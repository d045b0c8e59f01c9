r"""Log lines that cannot be forged: every control character a request brings is escaped before it is logged.

A request path is percent-decoded before the app sees it, so ``GET /api/x%0d%0a12:00:00 GET /api/cases 200`` would
write a second, made-up line into a log that printed the path as is. :func:`escape_controls` writes every control
character (C0, DEL, C1, and the Unicode line and paragraph separators) as a Python-style escape (``\r``, ``\n``,
``\x1b``, ``\u2028``) and doubles backslashes, so a logged value reads back unambiguously and stays on its line; the
access log escapes its values so (``spinedx.serve.security``). :class:`SafeFormatter` then makes every record of the
server's loggers (``spinedx.serve`` and uvicorn's) safe whatever it holds: control characters of the message escaped
(backslashes left alone, so values escaped before are not escaped twice), a traceback escaped line by line and
indented under its record, so that a line starting in column 0 is always a record.

The formatter also takes out patient identifiers: :func:`register_identifiers` names each patient identifier the
server knows (the manifest's ``patient_id``, the DICOM PatientID and PatientName of a series it read) with the
opaque case key that replaces it, so a warning or a third-party message that quotes one (a file path under a
patient's folder, a library's message) is logged with the key instead.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(code: int) -> str:
    ch = chr(code)
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: str.translate tables: C0 controls, DEL, C1 controls (NEL is a line break to some readers), U+2028/U+2029; and
#: the same with backslashes doubled.
_CONTROLS = {c: _escape_char(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}
_TABLE = {**_CONTROLS, ord("\\"): "\\\\"}


def escape_controls(text: Any, *, backslash: bool = True) -> str:
    """``str(text)`` with every control character escaped (see the module docstring): always one line.

    Args:
        text: the value to log.
        backslash: also double backslashes, so that the escapes read back unambiguously.
    """
    return str(text).translate(_TABLE if backslash else _CONTROLS)


_ids_lock = threading.Lock()
_ids: dict[str, str] = {}
_ids_pattern: re.Pattern[str] | None = None


def register_identifiers(mapping: dict[str, str]) -> None:
    """Add patient identifiers (``identifier -> replacement``, e.g. a PatientID and its case key) that every log
    line written through :class:`SafeFormatter` shows replaced. Identifiers shorter than 3 characters are ignored
    (they would replace parts of ordinary words)."""
    global _ids_pattern
    with _ids_lock:
        new = {k: v for k, v in mapping.items() if k and len(k) >= 3 and _ids.get(k) != v}
        if not new:
            return
        _ids.update(new)
        names = sorted(_ids, key=len, reverse=True)  # the longest first: SYN00010 before SYN0001
        _ids_pattern = re.compile("|".join(re.escape(n) for n in names))


def redact(text: str) -> str:
    """``text`` with every registered identifier replaced (:func:`register_identifiers`)."""
    pattern = _ids_pattern
    if pattern is None or not text:
        return text
    return pattern.sub(lambda m: _ids[m.group(0)], text)


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose every line is safe: the message's control characters escaped (one line),
    an exception's traceback escaped line by line and indented under its record, registered patient identifiers
    replaced by their case keys (:func:`register_identifiers`)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage(), backslash=False)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        s = self.formatMessage(record)
        blocks = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            s += "".join("\n    " + escape_controls(line, backslash=False) for line in block.splitlines())
        return s


def uvicorn_log_config(level: str = "WARNING") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's loggers that writes through :class:`SafeFormatter` to stderr
    (uvicorn's own configuration prints messages as they come)."""
    handler = {"class": "logging.StreamHandler", "formatter": "safe", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"safe": {"()": f"{__name__}.SafeFormatter", "fmt": "%(asctime)s %(levelname)s %(message)s",
                                "datefmt": "%H:%M:%S"}},
        "handlers": {"default": handler},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
                    "uvicorn.error": {"level": level},
                    "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
                    # Python warnings (logging.captureWarnings in spinedx.serve.server): through the same formatter
                    "py.warnings": {"handlers": ["default"], "level": "WARNING", "propagate": False}},
    }
