"""Saving, loading and running the fold models of a cross-validation run.

Each fold's best model is ``RUN_DIR/folds/<k>/model.pt``: a plain dict (tensors, strings,
numbers) loadable with ``torch.load(..., weights_only=True)``, so loading a run never executes
pickled code. :func:`load_run` reads a run folder's fold models, each checked against the sha256 its ``done.json``
recorded at training time. Prediction is not here: :mod:`spinedx.inference` (the one inference path) runs these
models, and it is also the layer that tells run folders from model bundles (this module knows nothing of bundles).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from spinedx.common import CHANNEL_NAMES
from spinedx.errors import WeightsError
from spinedx.fsutil import atomic_path
from spinedx.interop.content import fingerprint_lines
from spinedx.models.net import SpineNet, build_model
from spinedx.models.tta import TTAViews
from spinedx.runfolder import RunFolder, RunRecord
from spinedx.training.config import CVConfig

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def save_fold_model(model: SpineNet, path: str | Path, fold: int, **meta: Any) -> None:
    """Write a fold model as a weights-only dict (``state_dict``, ``backbone``, ``channel_names``, ``fold``, ...)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"state_dict": state, "backbone": model.backbone_name, "channel_names": list(model.channel_names),
               "fold": int(fold), **meta}
    with atomic_path(path) as tmp:  # a killed run never leaves a half-written model
        torch.save(payload, tmp)


def _first_sentence(text: str) -> str:
    """The first sentence of an exception's message, whole (torch's messages run to paragraphs of advice; a message
    cut at a character count reads as a bug): up to the first ``.``, ``!`` or ``?`` that ends a sentence, else the
    whole first line, terminal escapes removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))  # torch emphasises words with terminal escapes
    line = next((" ".join(ln.split()) for ln in text.splitlines() if ln.strip()), "")
    m = re.match(r"(.+?[.!?])(?=\s+[A-Z(\[`]|$)", line)
    return (m.group(1) if m else line).rstrip(".")


def _redo(path: Path) -> str:
    return (f"delete the folder {path.parent} and rerun spinedx cv in the run folder to train that fold again"
            if path.parent.parent.name == "folds" else "rerun spinedx cv")


def read_checked(path: str | Path, sha256: str | None = None, recorded: str = "") -> tuple[bytes, str]:
    """The bytes of a file and their sha256, compared with ``sha256`` (what a record says the file must be).

    Reading the bytes once and loading from them (not from the path again) means the bytes checked are the bytes
    used, whatever happens to the file meanwhile.

    Raises:
        WeightsError: the digest differs from ``sha256``; the message names the file, both digests and ``recorded``
            (where the expected digest comes from).
    """
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"this file's sha256 is {digest}, {recorded or 'its record'} says {sha256}: it was changed "
                           f"or replaced after it was made, so it is not the model that was validated; "
                           f"{_redo(path)}", where=str(path))
    return data, digest


def load_fold_model(path: str | Path, device: torch.device | str = "cpu", *, fold: int | None = None,
                    backbone: str | None = None, sha256: str | None = None, recorded: str = "") -> SpineNet:
    """Load one ``model.pt`` (weights only) into a fresh network, in eval mode.

    The file is read once; the network is built from those bytes, after their sha256 is compared with ``sha256``
    (a damaged file is reported as damaged, a readable one with other bytes as changed or replaced).

    Args:
        path: the file.
        device: where to put the model.
        fold: when given, the fold the file must say it belongs to.
        backbone: when given, the backbone the file must hold.
        sha256: when given, the sha256 the file must have (recorded when it was made).
        recorded: where ``sha256`` was recorded, for the message.

    Raises:
        WeightsError: not a spinedx fold model (damaged, truncated, another program's file), not the bytes
            recorded, or not the fold or backbone expected; the message names the file and says how to retrain it.
    """
    return _load_fold_model(Path(path), device, fold, backbone, sha256, recorded)[0]


def _load_fold_model(path: Path, device: torch.device | str, fold: int | None, backbone: str | None,
                     sha256: str | None, recorded: str) -> tuple[SpineNet, str]:
    """:func:`load_fold_model` and the sha256 of the bytes the model was built from."""
    redo = _redo(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("backbone"), str):
            raise ValueError("no backbone name in the file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = build_model(payload["backbone"], pretrained="none")
        model.load_state_dict(payload["state_dict"])
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file; all mean the same
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's advice (load it unsafely) is not ours to give
            why = _first_sentence(text.split("WeightsUnpickler error:", 1)[1])
            what = ("it holds Python objects besides tensors and plain values, and spinedx loads weights only, "
                    f"never code ({why})")
        else:
            what = f"the file is damaged, truncated or not a torch checkpoint ({type(exc).__name__}: " \
                   f"{_first_sentence(text)})"
        raise WeightsError(f"not a readable spinedx fold model: {what}; {redo}", where=str(path)) from None
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"this file's sha256 is {digest}, {recorded or 'its record'} says {sha256}: it was changed "
                           "or replaced after it was made, so it is not the model that was validated; " + redo,
                           where=str(path))
    if fold is not None and payload.get("fold") != fold:
        raise WeightsError(f"holds fold {payload.get('fold')!r}, not fold {fold}; {redo}", where=str(path))
    if backbone is not None and payload["backbone"] != backbone:
        raise WeightsError(f"holds a {payload['backbone']} model, the run's backbone is {backbone}; {redo}",
                           where=str(path))
    names = tuple(payload.get("channel_names", ()))
    if names != tuple(CHANNEL_NAMES):
        raise WeightsError(f"expects channels {list(names)}, spinedx makes {list(CHANNEL_NAMES)}; {redo}",
                           where=str(path))
    model.channel_names = names
    return model.to(device).eval(), digest


@dataclass
class RunModels:
    """The fold models of a run and its record.

    Attributes:
        run_dir: The run folder.
        record: ``config.yaml`` (:class:`spinedx.runfolder.RunRecord`): configuration, what the run was
            trained on, weights, provenance.
        models: Fold models in fold order, eval mode.
        folds: Fold numbers of ``models``.
        missing_folds: Folds of the run without a model (only when loaded with ``allow_missing_folds``).
        model_sha256: sha256 of each loaded ``model.pt`` (the bytes the models were built from), by fold.
        digest: the bundle's digest (:attr:`spinedx.interop.bundle.BundleInfo.digest`) when loaded from a bundle.
        notes: what could not be checked (a run trained before fold models' sha256 were recorded).
        oof_inference: how the run's out-of-fold probabilities were computed (:func:`oof_inference`: engine,
            precision, views, and a note when they were not computed as the inference engines compute now).
    """

    run_dir: Path
    record: RunRecord
    models: list[SpineNet]
    folds: list[int]
    missing_folds: list[int] = field(default_factory=list)
    model_sha256: dict[int, str] = field(default_factory=dict)
    digest: str | None = None
    notes: list[str] = field(default_factory=list)
    oof_inference: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """sha256 fingerprint of the loaded models' bytes (:func:`fingerprint_lines`, the rule of
        :func:`spinedx.interop.model_fingerprint`), the hash a DICOM result names; None when the models were not
        loaded from files."""
        return fingerprint_lines(self.model_sha256.items()) if self.model_sha256 else None

    def select(self, folds: Sequence[int]) -> RunModels:
        """The same run restricted to ``folds`` (in the order given): its models, sha256 and fingerprint are those
        of the chosen folds only, so a prediction with them names the models that answered.

        Raises:
            WeightsError: a fold that is not among the loaded ones (named, with the loaded folds).
        """
        wanted = [int(k) for k in folds]
        absent = [k for k in wanted if k not in self.folds]
        if not wanted or absent or len(set(wanted)) != len(wanted):
            what = ("no fold chosen" if not wanted else f"fold(s) {', '.join(map(str, absent))} not in this model"
                    if absent else "a fold chosen twice")
            raise WeightsError(f"{what}: it has fold(s) {', '.join(map(str, self.folds))}", where="--fold")
        index = [self.folds.index(k) for k in wanted]
        return replace(self, models=[self.models[i] for i in index], folds=wanted,
                       model_sha256={k: self.model_sha256[k] for k in wanted if k in self.model_sha256})

    @property
    def config(self) -> CVConfig:
        """The run's configuration."""
        return self.record.config

    @property
    def threshold(self) -> float:
        """Decision threshold on the patient probability."""
        return self.record.threshold

    @property
    def aggregation(self) -> str:
        """``max`` or ``mean`` over a patient's slices."""
        return self.record.aggregation

    @property
    def backbone(self) -> str:
        """torchvision backbone name."""
        return self.record.config.backbone

    @property
    def optimistic(self) -> bool:
        """True when the run's early stopping used the outer folds."""
        return self.record.optimistic

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Input channel order of the models."""
        return self.record.channel_names

    @property
    def patch_size(self) -> int:
        """Side of the patches the models were trained on."""
        return self.record.patches.patch_size

    @property
    def tta(self) -> TTAViews:
        """The test-time views the run's probabilities average over (``config.tta``)."""
        return TTAViews.from_config(self.record.config)


def recorded_model_sha256(rf: RunFolder, fold: int) -> str | None:
    """The sha256 of fold ``fold``'s ``model.pt`` recorded in its ``done.json`` when it was trained (None for folds
    trained before spinedx recorded it).

    Raises:
        RunFolderError: a ``done.json`` whose ``model_sha256`` is not a sha256 (changed by hand).
    """
    from spinedx.runfolder import RunFolderError

    value = rf.read_done(fold).get("model_sha256")
    if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
        raise RunFolderError(f"model_sha256 {value!r} is not a sha256; delete {rf.fold_dir(fold)} and rerun spinedx cv",
                             where=str(rf.fold_dir(fold) / "done.json"))
    return value


#: Where a run fold's expected sha256 comes from (in messages).
_DONE_RECORD = "folds/{k}/done.json (model_sha256, recorded when the fold was trained)"


def _unchecked_note(rf: RunFolder, unchecked: list[int]) -> list[str]:
    """The warning for folds that record no model sha256 (logged; also returned for the caller's record)."""
    if not unchecked:
        return []
    note = (f"fold(s) {', '.join(map(str, unchecked))} of {rf.path} record no model sha256 (trained before spinedx "
            "recorded it), so their model.pt cannot be checked against training; retrain them to have it checked")
    log.warning("warning: %s", note)
    return [note]


def check_run_models(rf: RunFolder, paths: dict[int, Path]) -> tuple[dict[int, bytes], dict[int, str], list[str]]:
    """Each fold model's bytes, checked against the sha256 its ``done.json`` recorded at training time (what
    ``spinedx export`` copies).

    Returns:
        The bytes and their sha256 by fold, and a note when some folds record none (trained before spinedx recorded
        it: taken unchecked, with a warning).

    Raises:
        WeightsError: a model file whose bytes are not those recorded (naming the file and both digests).
    """
    data: dict[int, bytes] = {}
    digests: dict[int, str] = {}
    unchecked: list[int] = []
    for k, p in paths.items():
        expected = recorded_model_sha256(rf, k)
        if expected is None:
            unchecked.append(k)
        data[k], digests[k] = read_checked(p, expected, _DONE_RECORD.format(k=k))
    return data, digests, _unchecked_note(rf, unchecked)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", *,
             allow_missing_folds: bool = False) -> RunModels:
    """Load a ``spinedx cv`` run folder: its record and ``folds/<k>/model.pt`` for every fold.

    Every fold model is compared with the sha256 its ``done.json`` recorded when it was trained, and the models are
    built from the very bytes checked. A model bundle (``spinedx export``) is not a run folder: load either with
    :func:`spinedx.inference.load_model`, which tells them apart.

    Args:
        run_dir: The run folder.
        device: Where to put the models.
        allow_missing_folds: Use the finished folds when some have no model (the caller must record
            :attr:`RunModels.missing_folds`); by default a run with a missing fold model is refused.

    Raises:
        SpinedxError: not a run folder, a damaged ``config.yaml``, missing fold models (unless allowed),
            unexpected entries in ``folds/`` (``1.bak``), a damaged ``model.pt``, or a model file that is not the one
            recorded.
    """
    rf = RunFolder(run_dir)
    record = rf.read_record()
    found = rf.fold_models(allow_missing=allow_missing_folds)
    models = []
    digests: dict[int, str] = {}
    unchecked: list[int] = []
    for k, p in found.paths.items():
        expected = recorded_model_sha256(rf, k)
        if expected is None:
            unchecked.append(k)
        model, digests[k] = _load_fold_model(p, device, k, record.config.backbone, expected,
                                             _DONE_RECORD.format(k=k))
        models.append(model)
    return RunModels(rf.path, record, models, list(found.paths), list(found.missing), digests, None,
                     _unchecked_note(rf, unchecked), oof_inference(rf, list(found.paths), record))


#: The precision every inference engine computes in (:mod:`spinedx.inference`), and the out-of-fold probabilities
#: of runs trained since spinedx recorded it.
INFERENCE_PRECISION = "fp32"

#: Says that out-of-fold probabilities were not computed as spinedx's engines compute (see :func:`oof_inference`).
_BF16_NOTE = ("the run's out-of-fold probabilities (its reported performance) were computed under bf16 autocast{why}, "
              "not in fp32 as this prediction: a fold model's probability may differ from them by up to ~0.01")


def oof_inference(rf: RunFolder, folds: Sequence[int], record: RunRecord | None = None) -> dict[str, Any]:
    """How a run's out-of-fold probabilities were computed, from its folds' ``done.json``.

    Folds trained since spinedx records it say ``inference: {engine, precision, views}`` (the torch engine in fp32,
    as ``predict``, the workstation and the bundle compute). Older folds do not: they predicted out of fold in their
    training precision, which ``numerics.bf16`` records (or, before that, ``config.yaml`` ``device.bf16``), so a run
    trained under bf16 autocast (``bf16: auto`` on a CPU with AVX512-BF16, or on CUDA) has bf16 out-of-fold
    probabilities; when nothing says, they may be either.

    Returns:
        ``engine``, ``precision`` (``fp32``, ``bf16``, ``mixed`` or ``not recorded``), ``views``, ``recorded`` (every
        fold records it; a fold that does not but trained in fp32 predicted in fp32 too), ``per_fold`` (each fold's
        precision) and ``note``: None when every fold computed in fp32 as the engines do, else one sentence saying
        the out-of-fold probabilities were (or may have been) computed under bf16, for records, consoles and the
        report.
    """
    record = record or rf.read_record()
    per_fold: dict[int, str] = {}
    engines: set[str] = set()
    views: set[int] = set()
    recorded = True
    for k in folds:
        done = rf.read_done(k)
        inf = done.get("inference")
        if isinstance(inf, dict) and isinstance(inf.get("precision"), str):
            per_fold[k] = inf["precision"]
            engines.add(str(inf.get("engine")))
            if isinstance(inf.get("views"), int):
                views.add(inf["views"])
            continue
        recorded = False
        numerics = done.get("numerics")
        bf16 = numerics.get("bf16") if isinstance(numerics, dict) else (record.device or {}).get("bf16")
        per_fold[k] = "bf16" if bf16 is True else "fp32" if bf16 is False else "not recorded"
    return _oof_summary(per_fold, engines, views, recorded)


def _oof_summary(per_fold: dict[int, str], engines: set[str], views: set[int], recorded: bool) -> dict[str, Any]:
    kinds = set(per_fold.values())
    precision = kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "not recorded"
    bf16 = sorted(k for k, v in per_fold.items() if v == "bf16")
    unknown = sorted(k for k, v in per_fold.items() if v == "not recorded")
    note = None
    if bf16:
        which = "" if len(bf16) == len(per_fold) else f" in fold(s) {', '.join(map(str, bf16))}"
        why = (f"{which} (inference precision not recorded; the folds trained under bf16 autocast, and spinedx then "
               "predicted out of fold in the training precision)" if not recorded else which)
        note = _BF16_NOTE.format(why=why)
    elif unknown:
        note = ("inference precision not recorded: the run's out-of-fold probabilities (its reported performance) may "
                "have been computed under bf16 autocast (spinedx did so where the training used bf16), and may differ "
                "from this fp32 prediction by up to ~0.01")
    return {"engine": engines.pop() if len(engines) == 1 else "torch", "precision": precision,
            "views": views.pop() if len(views) == 1 else None, "recorded": recorded,
            "per_fold": {str(k): v for k, v in sorted(per_fold.items())}, "note": note}


def oof_inference_from_doc(doc: Any) -> dict[str, Any]:
    """:func:`oof_inference`'s summary as a bundle carries it (``bundle.json`` ``model.oof_inference``); a bundle
    exported before it was recorded says nothing, so its run's precision is "not recorded"."""
    if isinstance(doc, dict) and isinstance(doc.get("precision"), str) and isinstance(doc.get("per_fold"), dict):
        return dict(doc)
    return _oof_summary({}, set(), set(), False) | {"note": (
        "inference precision not recorded (a bundle exported before spinedx recorded it): the run's out-of-fold "
        "probabilities (its reported performance) may have been computed under bf16 autocast, and may differ from "
        "this fp32 prediction by up to ~0.01")}
