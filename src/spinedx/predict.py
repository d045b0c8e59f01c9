"""Single-case prediction (``spinedx predict``): one patient's T1/T2 series through a run's fold models.

The case goes through the training preprocessing (Yeh et al. 2022, "Deep learning architecture":
the T2 box mapped onto T1 by registration, lesion slice with its two neighbours on both
sequences, 64 x 64, z-scored) with the run's recorded extraction settings. Every fold model
of the cross-validation scores every lesion slice; as in the paper ("the highest probability
of malignancy among all slices of each patient was assigned to that patient") each model's
patient probability is its maximum over slices (or the run's other aggregation), and the
ensemble probability is the mean over the fold models, with their spread reported.

After the engine, :func:`spinedx.decision.decide` turns the fold models' probabilities into the decision
(``benign``, ``malignant`` or ``refer`` with its reasons, the calibrated probability, the conformal set, what the
models were trained on) with the run's or bundle's decision files, the same way for every engine; ``prediction.json``
states it (docs/decision.md, "The decision contract").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.common import SYNTHETIC_BANNER, aggregate, call, json_clean
from spinedx.errors import PreprocessError, SpinedxError

if TYPE_CHECKING:
    from spinedx.decision import DecisionArtefacts
    from spinedx.inference import Engine
    from spinedx.models.run import RunModels
    from spinedx.preprocess import ExtractConfig
    from spinedx.runfolder import RunRecord


@dataclass
class CasePrediction:
    """The result of :func:`predict_case` (also written as ``prediction.json``).

    Attributes:
        probability: ensemble patient probability of malignancy (mean over fold models), uncalibrated
            (``prediction.json`` ``patient_probability`` and ``probability_uncalibrated``; the calibrated one is
            ``decision.probability``, ``prediction.json`` ``probability``).
        call: ``malignant`` or ``benign`` at ``threshold`` (the probability alone; ``decision`` is what spinedx
            decides).
        threshold: the run's decision threshold.
        per_model: each fold model's patient probability, in ``folds`` order.
        folds: fold numbers of the models.
        slice_index: the T2 lesion slices scored.
        slice_probability: ``(n_models, n_slices)`` probabilities.
        heatmaps: ``(n_slices, 64, 64)`` maps of :data:`spinedx.explain.DEFAULT_METHOD` averaged over the fold
            models (or None); ``record["explanation"]`` names the method.
        record: the JSON document written to ``prediction.json``.
        out_dir: where the files are.
        overlays: PNG overlay paths, one per slice.
        dicom: the DICOM results written into ``out_dir/dicom`` (:class:`spinedx.interop.DicomResults`; None for
            inputs that are not DICOM, or without ``out_dir``).
        decision: the decision (:class:`spinedx.decision.Decision`: ``benign``, ``malignant`` or ``refer`` with its
            reasons, the calibrated probability beside ``probability``, the conformal set, what the models were
            trained on); its fields are also in ``record``.
    """

    probability: float
    call: str
    threshold: float
    per_model: list[float]
    folds: list[int]
    slice_index: list[int]
    slice_probability: np.ndarray
    heatmaps: np.ndarray | None
    record: dict[str, Any]
    out_dir: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    dicom: Any = None
    decision: Any = None


def extract_config_for(record: RunRecord, register: bool | None = None) -> tuple[ExtractConfig, str]:
    """The extraction settings a run was trained with (copied into its ``config.yaml``), ``register`` overridden.

    Raises:
        SpinedxError: the run records no extraction settings (its patches had no ``extract.json``), or settings
            this spinedx does not know.
    """
    from dataclasses import replace

    from spinedx.preprocess import ExtractConfig

    where = str(Path(record.patches.path).parent)
    if record.patches.extract is None:
        raise SpinedxError("the run does not record how its training patches were made (there was no extract.json "
                           "beside patches.npz when spinedx cv ran), so a new case cannot be preprocessed the same "
                           "way; train the run on the output folder of spinedx extract",
                           where="config.yaml patches.extract")
    try:
        cfg = ExtractConfig.from_dict(dict(record.patches.extract))
    except (TypeError, ValueError) as exc:
        raise SpinedxError(f"the run's extraction settings are not this spinedx's ({exc}); use the spinedx version "
                           "that trained the run", where="config.yaml patches.extract") from None
    if cfg.patch_size != record.patches.patch_size:
        raise SpinedxError(f"the run's extraction settings say patch_size {cfg.patch_size}, its patches were "
                           f"{record.patches.patch_size}; the run folder is inconsistent", where=where)
    source = f"the run's config.yaml (extract.json of {where} when the run was trained)"
    if register is not None and register != cfg.register:
        cfg = replace(cfg, register=register)
        source += f"; registration switched {'on' if register else 'off'} by the caller"
    return cfg, source


#: What ``write_prediction`` puts in an output folder (an earlier prediction holds nothing else).
_OWN_ENTRY = re.compile(r"prediction\.json|explanation\.json|overlay_slice\d+\.png")


def _not_ours(out: Path) -> list[str]:
    """What in ``out`` :func:`write_prediction` did not write: entries other than a spinedx ``prediction.json``, its
    ``explanation.json``, overlays and ``dicom/`` (empty: ``out`` is an earlier prediction, replaced whole)."""
    try:
        doc = json.loads((out / "prediction.json").read_text(encoding="utf-8"))
        ours = (isinstance(doc, dict) and doc.get("research_use_only") == RESEARCH_USE_ONLY
                and "patient_probability" in doc)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ours = False
    if not ours:
        return ["no prediction.json of spinedx"]
    return sorted(p.name for p in out.iterdir()
                  if not ((p.is_file() and _OWN_ENTRY.fullmatch(p.name)) or (p.is_dir() and p.name == "dicom")))


def _check_out_dir(out: Path, overwrite: bool = False) -> None:
    """``out`` may be new, empty, or an earlier prediction (replaced whole); anything else only with ``overwrite``,
    and never a run folder or a model bundle."""
    if out.exists() and not out.is_dir():
        raise SpinedxError("exists and is not a folder; choose another --out", where=str(out))
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / "config.yaml").is_file() or (out / "bundle.json").is_file():
        raise SpinedxError("is a run folder or a model bundle: a prediction never replaces it; choose another --out",
                           where=str(out))
    foreign = _not_ours(out)
    if foreign and not overwrite:
        held = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise SpinedxError(f"not empty and not an earlier spinedx prediction ({held}); choose a new or empty --out "
                           "folder, or pass --overwrite to replace it", where=str(out))


def _case_inputs(lesion_slices: str | Sequence[int], box: str | Sequence[int],
                 engine: str | Engine) -> tuple[tuple[int, ...], tuple[int, int, int, int]]:
    """The lesion slices and the box as integers (parsed from the CLI's text), checked with the engine's name."""
    from spinedx.cohort import parse_box, parse_slices
    from spinedx.inference.loading import ENGINES

    if isinstance(lesion_slices, str):
        try:
            lesion_slices = parse_slices(lesion_slices)
        except ValueError as exc:
            raise PreprocessError(str(exc), where="--lesion-slices") from exc
    if isinstance(box, str):
        try:
            box = parse_box(box)
        except ValueError as exc:
            raise PreprocessError(str(exc), where="--box") from exc
    box_t = tuple(int(v) for v in box)
    if len(box_t) != 4:
        raise PreprocessError(f"box needs four numbers x0,y0,x1,y1, got {box_t}", where="--box")
    if isinstance(engine, str) and engine not in ENGINES:
        raise SpinedxError(f"engine must be torch or onnx, got {engine!r}", where="--engine")
    x0, y0, x1, y1 = box_t
    return tuple(int(s) for s in lesion_slices), (x0, y0, x1, y1)


def _checked_models(run_dir: str | Path, run: RunModels | None, allow_missing_folds: bool,
                    expect_digest: str | None) -> RunModels:
    """The run's fold models: loaded from ``run_dir`` (checked), or those given, checked the same way."""
    from spinedx.inference import load_model

    if run is None:
        return load_model(run_dir, allow_missing_folds=allow_missing_folds, expect_digest=expect_digest)
    if run.missing_folds and not allow_missing_folds:
        raise SpinedxError(f"fold(s) {', '.join(map(str, run.missing_folds))} have no model; pass "
                           "allow_missing_folds=True to use the others", where=str(run.run_dir))
    if expect_digest is not None:
        from spinedx.interop.bundle import check_digest_text

        if run.digest != check_digest_text(expect_digest):
            raise SpinedxError(f"bundle digest {run.digest or 'none (not loaded from a bundle)'}, expected "
                               f"{check_digest_text(expect_digest)} (--expect-digest)", where=str(run.run_dir))
    return run


def _engine_for(run: RunModels, engine: str | Engine) -> Engine:
    """The engine named (made for ``run``), or the one given restricted to ``run``'s folds (checked views)."""
    from spinedx.inference import engine_rows, make_engine

    if isinstance(engine, str):
        return make_engine(run, engine)
    eng = engine_rows(engine, run.folds)
    if eng.views != run.tta:
        raise SpinedxError(f"the engine averages over test-time views {eng.views.name!r}, the run over "
                           f"{run.tta.name!r}; make it with spinedx.inference.make_engine", where=str(run.run_dir))
    return eng


def predict_case(
    run_dir: str | Path,
    t1: str | Path,
    t2: str | Path,
    lesion_slices: str | Sequence[int],
    box: str | Sequence[int],
    out_dir: str | Path | None = None,
    *,
    t1_series_uid: str | None = None,
    t2_series_uid: str | None = None,
    register: bool | None = None,
    patient_id: str = "case",
    explain: bool = True,
    allow_missing_folds: bool = False,
    run: RunModels | None = None,
    engine: str | Engine = "torch",
    dicom: bool = True,
    allow_modality: Sequence[str] = (),
    overwrite: bool = False,
    expect_digest: str | None = None,
    folds: Sequence[int] | None = None,
    decision_artefacts: DecisionArtefacts | None = None,
) -> CasePrediction:
    """Predict one case with every fold model of a run (an ensemble) and explain it (``explain.DEFAULT_METHOD``).

    The case is preprocessed with the extraction settings the run recorded when it was trained (patch size,
    margin, registration, z-score mode, channel order), never with whatever ``extract.json`` lies in the
    patches folder now, so re-extracting the training patches later cannot change what the models see.

    Args:
        run_dir: run folder written by ``spinedx cv`` (``config.yaml``, ``folds/<k>/model.pt``).
        t1: T1-weighted series (DICOM folder/file, NIfTI, NRRD, MetaImage).
        t2: T2-weighted series on which the box is drawn.
        lesion_slices: 0-based T2 lesion slices, e.g. ``"7;8"`` or ``(7, 8)``; one sample each.
        box: ``x0,y0,x1,y1`` half-open T2 pixel box (column, row), e.g. ``"120,80,190,150"``.
        out_dir: folder for ``prediction.json`` and the overlay PNGs, written whole or not at all (None: write
            nothing); an existing folder must be empty or an earlier prediction (nothing else in it), which is
            replaced; anything else only with ``overwrite`` (never a run folder or a bundle).
        t1_series_uid: SeriesInstanceUID when the T1 folder holds several series.
        t2_series_uid: the same for T2.
        register: force the T2->T1 registration on/off; None: as the run's extraction.
        patient_id: name of the case in messages and outputs.
        explain: compute heatmaps (:data:`spinedx.explain.DEFAULT_METHOD`, the method docs/explanations.md chose)
            and overlays; ``prediction.json`` and ``explanation.json`` name the method.
        allow_missing_folds: answer from the finished folds when some fold models are missing (recorded in
            ``prediction.json``); by default such a run is refused.
        run: the run's fold models already loaded with :func:`spinedx.inference.load_model` (a server keeps them
            warm); None loads them from ``run_dir``.
        engine: the inference engine (:mod:`spinedx.inference`, fp32 either way): ``torch`` (the fold models),
            ``onnx`` (ONNX Runtime: a bundle's ``model.onnx``, or the same graph exported from the run's models), or
            an engine already made for ``run`` (:func:`spinedx.inference.make_engine`; a server keeps one warm). The
            heatmaps come from the torch fold models whatever the engine.
        allow_modality: DICOM image modalities read besides MR (``--allow-modality CT``); by default a series that
            is not MR is refused, naming its modality.
        dicom: with DICOM inputs and ``out_dir``, also write the DICOM results (TID 1500 SR and heatmap
            Secondary Captures, :func:`spinedx.interop.write_dicom_results`) into ``out_dir/dicom``; the SR names
            the fingerprint of the model bytes that were loaded and ran.
        overwrite: replace an ``out_dir`` that is not an earlier prediction.
        expect_digest: the digest the model bundle must have (``spinedx export`` prints it); a run folder, or
            another bundle, is refused.
        folds: answer with these fold models only (``--fold K``): a cohort patient predicted with the fold model
            that held it out reproduces its out-of-fold probability (``oof_patients.csv``) to float rounding.
        decision_artefacts: the model's calibrator, conformal thresholds and domain references already loaded
            (:func:`spinedx.decision.load_artefacts`; a server loads them once); None loads them with the models.
            The decision is made after the engine, in Python, the same way for every engine.

    Returns:
        The prediction (see :class:`CasePrediction`).

    Raises:
        SpinedxError: bad slices or box, unreadable series, a box outside the image, a run folder without
            (all its) fold models or with unexpected entries, an output path that is a file or a foreign
            folder; the same messages as ``spinedx extract``.
    """
    from spinedx.cohort import CaseRecord
    from spinedx.common import CHANNEL_NAMES
    from spinedx.preprocess import extract_case, read_case
    from spinedx.provenance import provenance

    slices_t, box_t = _case_inputs(lesion_slices, box, engine)
    if out_dir is not None:
        _check_out_dir(Path(out_dir), overwrite)

    run = _checked_models(run_dir, run, allow_missing_folds, expect_digest)
    all_folds = list(run.folds)
    if folds is not None:
        run = run.select(folds)  # the models, sha256 and fingerprint of the chosen folds only
    record = run.record
    config, config_source = extract_config_for(record, register)
    if tuple(run.channel_names) != tuple(CHANNEL_NAMES):
        raise SpinedxError(f"the run's models expect channels {run.channel_names}, the preprocessing makes "
                           f"{CHANNEL_NAMES}; use a run made with this spinedx version", where=str(run.run_dir))

    # A new case has no reference label; extract_case passes None through to the patches.
    case = CaseRecord(patient_id=patient_id, label=None, t1=Path(t1), t2=Path(t2),  # type: ignore[arg-type]
                      t1_series_uid=t1_series_uid, t2_series_uid=t2_series_uid,
                      lesion_slices=slices_t, box=box_t)
    images = read_case(case, config, allow_modality=allow_modality)  # read once: the DICOM results use them again
    patches = extract_case(case, config, images=images)
    if patches.x.shape[-2:] != (run.patch_size, run.patch_size):
        raise SpinedxError(f"the case's patches are {patches.x.shape[-1]}x{patches.x.shape[-2]}, the models were "
                           f"trained on {run.patch_size}x{run.patch_size}", where=str(run.run_dir))

    eng = _engine_for(run, engine)
    probs = eng.predict(patches.x)  # (n_models, n_slices), fp32
    per_model = aggregate(probs, run.aggregation, axis=1)
    prob = float(per_model.mean())
    threshold = run.threshold
    the_call = call(prob, threshold)
    # the decision, after the engine and identical for every engine: calibration, conformal set, and the checks
    # against the training data (the case's radiomics features, the fold models' spread)
    from spinedx.decision import decide, load_artefacts
    from spinedx.decision.domain import case_features

    if decision_artefacts is None:
        decision_artefacts = load_artefacts(run.run_dir, record, digest=run.digest)
    decision = decide(per_model, decision_artefacts, threshold=threshold,
                      features=case_features(patches.x) if decision_artefacts.domain is not None else None)
    slice_index = [int(s) for s in patches.slice_index]

    heat = None
    explanation = None
    if explain:
        from spinedx.explain import DEFAULT_METHOD, explanation_record
        from spinedx.explain import explain as explain_maps

        # Mean of the fold models' maps: the regions the ensemble as a whole relies on.
        heat = explain_maps(run.models, patches.x, DEFAULT_METHOD)
        explanation = explanation_record(DEFAULT_METHOD, len(run.models))

    prov = provenance()
    n_models = len(run.models)
    record_doc: dict[str, Any] = {
        "notice": f"{RESEARCH_USE_ONLY[0].upper()}{RESEARCH_USE_ONLY[1:]}.",
        "research_use_only": RESEARCH_USE_ONLY,
        "patient_id": patient_id,
        "patient_probability": prob,
        "call": the_call,
        "threshold": threshold,
        **decision.to_record(),
        "decision_warning": decision_artefacts.warning(),
        "aggregation": (f"{run.aggregation} over the lesion slices per fold model, then the mean over the "
                        f"{n_models} fold models"),
        "engine": eng.name,
        "inference": eng.record(),
        "test_time_augmentation": run.tta.to_dict(),
        "spread": {
            "n_models": n_models,
            "std": float(per_model.std(ddof=0)),
            "min": float(per_model.min()),
            "max": float(per_model.max()),
            "per_fold": {str(k): float(v) for k, v in zip(run.folds, per_model, strict=True)},
            "calls_malignant": int(np.sum(per_model >= threshold)),
        },
        "slices": [
            {"slice_index": s, "probability": float(probs[:, i].mean()),
             "per_fold": {str(k): float(probs[m, i]) for m, k in enumerate(run.folds)},
             "edge_replicated": patches.edge[i] if i < len(patches.edge) else [],
             "overlay": f"overlay_slice{s:03d}.png" if explain and out_dir is not None else None}
            for i, s in enumerate(slice_index)
        ],
        "explanation": explanation,
        "model": {
            "run_dir": str(Path(run.run_dir).resolve()),
            "backbone": run.backbone,
            "folds": list(run.folds),
            "folds_in_run": record.config.folds,
            "fold_selection_note": (f"answered by fold model(s) {', '.join(map(str, run.folds))} only (--fold), not "
                                    f"the ensemble of fold models {', '.join(map(str, all_folds))}: for a cohort "
                                    "patient, the model that held it out reproduces its out-of-fold probability"
                                    if folds is not None else None),
            "missing_folds": list(run.missing_folds),
            "missing_folds_note": (f"answered from {n_models} of {record.config.folds} fold models: fold(s) "
                                   f"{', '.join(map(str, run.missing_folds))} have no model (--allow-missing-folds)"
                                   if run.missing_folds else None),
            "weights": record.weights.to_dict(),
            "imagenet_weights": record.weights.pretrained,
            "optimistic": record.optimistic,
            "optimistic_note": ("the run's early stopping used its validation folds, so its reported performance "
                                "is optimistic") if record.optimistic else None,
            "synthetic": record.synthetic,
            "synthetic_note": f"trained on a {SYNTHETIC_BANNER}" if record.synthetic else None,
            "patches_sha256": record.patches.sha256,
            "fingerprint": run.fingerprint,
            "bundle_digest": run.digest,
            "oof_inference": run.oof_inference,
            "integrity": run.notes or ["every fold model is the file recorded when it was made (sha256 checked)"],
            "run_git_commit": record.git_commit,
            "run_versions": record.versions,
        },
        "preprocessing": {
            "extract_config": config.to_dict(),
            "config_source": config_source,
            "channel_names": list(CHANNEL_NAMES),
            "crop": patches.crop,
            "constant_channels": patches.constant_channels,
            "images": patches.images,
        },
        "registration": patches.registration.to_dict(),
        "inputs": {"t1": str(Path(t1).resolve()), "t2": str(Path(t2).resolve()), "t1_series_uid": t1_series_uid,
                   "t2_series_uid": t2_series_uid, "lesion_slices": list(slices_t), "box": list(box_t)},
        "spinedx_version": __version__,
        "git_commit": prov["git_commit"],
        "provenance": prov,
    }
    if patches.pair_check is not None:
        record_doc["pair_check"] = patches.pair_check.to_dict()
    result = CasePrediction(prob, the_call, threshold, [float(v) for v in per_model], list(run.folds), slice_index,
                            probs, heat, json_clean(record_doc), decision=decision)
    if out_dir is not None:
        write_prediction(result, patches.x, out_dir,
                         dicom_inputs=(images.t1, images.t2, t1_series_uid, t2_series_uid) if dicom else None,
                         allow_modality=allow_modality, overwrite=overwrite)
    return result


def write_prediction(result: CasePrediction, x: np.ndarray, out_dir: str | Path, *,
                     dicom_inputs: tuple[Any, Any, str | None, str | None] | None = None,
                     allow_modality: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Write ``prediction.json``, one T1/T2 overlay PNG per slice and ``explanation.json`` (the method that made the
    maps) into ``out_dir``, atomically.

    The folder is filled as a temporary sibling and renamed over ``out_dir`` when complete, so an
    interrupted or failed prediction leaves an earlier one untouched. With ``dicom_inputs`` (T1, T2 and their
    series UIDs) the DICOM results go into ``out_dir/dicom`` in the same step, when both series are DICOM.
    """
    from spinedx.explain import save_overlay
    from spinedx.fsutil import atomic_dir

    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    names: list[str] = []
    with atomic_dir(out) as tmp:
        for i, s in enumerate(result.slice_index):
            entry = result.record["slices"][i]
            if result.heatmaps is None or entry.get("overlay") is None:
                continue
            # slices numbered from 1 as every viewer shows them; the file name keeps the API's 0-based index
            title = (f"{result.record['patient_id']} T2 slice {s + 1}: slice p(malignant) {entry['probability']:.2f} "
                     f"(research use only)")
            save_overlay(x[i], result.heatmaps[i], tmp / entry["overlay"], title=title,
                         method=result.record["explanation"]["method"])
            names.append(entry["overlay"])
        if names:
            (tmp / "explanation.json").write_text(json.dumps(
                {**result.record["explanation"], "overlays": names}, indent=2, allow_nan=False) + "\n")
        dicom = None
        if dicom_inputs is not None:
            from spinedx.interop import write_dicom_results_if_dicom

            t1, t2, uid1, uid2 = dicom_inputs
            # the SR names the models that ran (the bytes loaded), not whatever the folder holds now
            dicom = write_dicom_results_if_dicom(result, t1, t2, tmp, t1_series_uid=uid1, t2_series_uid=uid2,
                                                 allow_modality=allow_modality,
                                                 model_hash=result.record["model"].get("fingerprint"))
            if dicom is not None:
                result.record["dicom_results"] = dicom.summary()
        (tmp / "prediction.json").write_text(json.dumps(result.record, indent=2, allow_nan=False) + "\n")
    result.out_dir = out
    result.overlays = [out / n for n in names]
    result.dicom = None if dicom is None else dicom.relocated(out / dicom.folder.name)
    return out / "prediction.json"
