"""Which model aided a reader study: its identity, and the run folder behind it.

``spinedx serve --study`` records the identity of the model that answered the aided reads in the store's ``meta``
(``model``) and with every aided read: ``<folder name>:<sha256 prefix>`` over the run's ``config.yaml`` and fold
models (:func:`model_identity`). A model bundle holds the same files byte for byte (``spinedx export``), so a
bundle and its run share the digest part; the folder name only says where it was served from.

The store does not hold the run's path; the model's answers kept in ``STUDY/aided/<model>/<case>/prediction.json``
do (``model.run_dir``), so :func:`find_study_model` can find the run again while it has not moved.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def model_identity(model_dir: Path) -> str:
    """``<folder name>:<sha256 prefix>`` over the run's ``config.yaml`` and fold models: which model aided."""
    h = hashlib.sha256()
    files = [model_dir / "config.yaml", *sorted(model_dir.glob("folds/*/model.pt"))]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(model_dir)).encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return f"{model_dir.name}:{h.hexdigest()[:16]}"


def identity_digest(identity: str) -> str:
    """The digest part of an identity (``run:c4406442...`` -> ``c4406442...``): the same files, wherever served."""
    return identity.rsplit(":", 1)[-1]


def same_model(a: str, b: str) -> bool:
    """True when two identities name the same config and fold models (their digests agree)."""
    return identity_digest(a) == identity_digest(b)


def find_study_model(study_dir: Path, identity: str) -> Path | None:
    """The run folder whose answers a study's aided reads showed, from the kept answers (``prediction.json``'s
    ``model.run_dir``); None when no answer names a folder that still holds that model."""
    folder = study_dir / "aided" / identity.replace(":", "-")
    if not folder.is_dir():
        return None
    for pred in sorted(folder.glob("*/prediction.json")):
        try:
            doc = json.loads(pred.read_text(encoding="utf-8"))
            run_dir = doc["model"]["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(run_dir, str) and Path(run_dir).is_dir() and same_model(model_identity(Path(run_dir)),
                                                                                identity):
            return Path(run_dir)
    return None
