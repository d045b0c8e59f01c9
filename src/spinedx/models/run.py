"""Saving, loading and running the fold models of a cross-validation run.

Each fold's best model is ``RUN_DIR/folds/<k>/model.pt``: a plain dict (tensors, strings,
numbers) loadable with ``torch.load(..., weights_only=True)``, so loading a run never executes
pickled code. ``spinedx predict`` and the report use :func:`load_run` and
:func:`predict_patches` (the ensemble of the fold models).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spinedx.common import CHANNEL_NAMES
from spinedx.errors import WeightsError
from spinedx.fsutil import atomic_path
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
    """

    run_dir: Path
    record: RunRecord
    models: list[SpineNet]
    folds: list[int]
    missing_folds: list[int] = field(default_factory=list)
    model_sha256: dict[int, str] = field(default_factory=dict)
    digest: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str | None:
        """sha256 fingerprint of the loaded models' bytes (:func:`spinedx.interop.model_fingerprint`'s rule), the
        hash a DICOM result names; None when the models were not loaded from files."""
        from spinedx.interop.content import fingerprint_lines

        return fingerprint_lines(self.model_sha256.items()) if self.model_sha256 else None

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
             allow_missing_folds: bool = False, expect_digest: str | None = None) -> RunModels:
    """Load a ``spinedx cv`` run folder (or a model bundle): its record and ``folds/<k>/model.pt`` for every fold.

    Every fold model is compared with the sha256 recorded when it was made (a run fold's ``done.json``, a bundle's
    ``bundle.json``) and the models are built from the very bytes checked.

    Args:
        run_dir: The run folder.
        device: Where to put the models.
        allow_missing_folds: Use the finished folds when some have no model (the caller must record
            :attr:`RunModels.missing_folds`); by default a run with a missing fold model is refused.
        expect_digest: The digest the bundle must have (``spinedx export`` prints it; a deployment pins the bundle it
            validated); only bundles have one.

    Raises:
        SpinedxError: not a run folder, a damaged ``config.yaml``, missing fold models (unless allowed),
            unexpected entries in ``folds/`` (``1.bak``), a damaged ``model.pt``, a model file that is not the one
            recorded, or a bundle whose digest is not ``expect_digest``.
    """
    from spinedx.interop.bundle import check_digest_text, is_bundle, load_bundle

    if is_bundle(run_dir):  # a model bundle (spinedx export) is accepted wherever a run is, after its checksums
        return load_bundle(run_dir, device, expect_digest=expect_digest)
    if expect_digest is not None:
        check_digest_text(expect_digest)
        raise WeightsError("--expect-digest pins a model bundle, and this is a run folder (it has no digest): export "
                           "it (spinedx export RUN --out BUNDLE), validate the bundle and pin the digest export prints",
                           where=str(run_dir))
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
                     _unchecked_note(rf, unchecked))


def _fast_cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def predict_patches(
    models: RunModels | Sequence[nn.Module], x: np.ndarray, batch_size: int = 256, bf16: bool | None = None,
    views: TTAViews | None = None,
) -> np.ndarray:
    """Malignancy probabilities of every model for every patch.

    Inference runs under :func:`torch.inference_mode`, channels-last, with bf16 autocast where
    the device supports it (the sigmoid of the paper's output layer is applied here).

    Args:
        models: A :class:`RunModels` or a list of networks (on one device).
        x: Patches (N, 6, P, P), channel order :data:`spinedx.common.CHANNEL_NAMES`.
        batch_size: Patches per forward pass.
        bf16: Force bf16 on/off; None: where supported.
        views: Test-time views to average each probability over (:class:`~spinedx.models.tta.TTAViews`); None:
            a :class:`RunModels`' own (:attr:`RunModels.tta`), the patch alone for a list of networks.

    Returns:
        Array (n_models, N) of probabilities, float32.
    """
    if views is None:
        views = models.tta if isinstance(models, RunModels) else TTAViews("none")
    mods = list(models.models if isinstance(models, RunModels) else models)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"patches must be (N, C, H, W), got shape {x.shape}")
    if views.params and len(x):
        return views.reduce(predict_patches(mods, views.expand(x), batch_size, bf16, TTAViews("none")))
    if not mods:
        return np.zeros((0, x.shape[0]), dtype=np.float32)
    device = next(mods[0].parameters()).device
    if bf16 is None:
        bf16 = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (device.type == "cpu" and _fast_cpu_bf16())
    out = np.empty((len(mods), x.shape[0]), dtype=np.float32)
    xt = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
    for model in mods:
        # outside inference mode: converted parameters made there would be inference tensors, which no later
        # gradient (an explanation, fine-tuning) can use
        model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for m_i, model in enumerate(mods):
            was_training = model.training
            model.eval()
            for i in range(0, x.shape[0], batch_size):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
                    logits = model(xt[i:i + batch_size])
                out[m_i, i:i + batch_size] = torch.sigmoid(logits.float().reshape(-1)).cpu().numpy()
            model.train(was_training)
    return out
