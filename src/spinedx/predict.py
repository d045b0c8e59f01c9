"""Single-case prediction (``spinedx predict``): one patient's T1/T2 series through a run's fold models.

The case goes through the training preprocessing (Yeh et al. 2022, "Deep learning architecture":
the T2 box mapped onto T1 by registration, lesion slice with its two neighbours on both
sequences, 64 x 64, z-scored) with the run's recorded extraction settings. Every fold model
of the cross-validation scores every lesion slice; as in the paper ("the highest probability
of malignancy among all slices of each patient was assigned to that patient") each model's
patient probability is its maximum over slices (or the run's other aggregation), and the
ensemble probability is the mean over the fold models, with their spread reported.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spinedx import RESEARCH_USE_ONLY, __version__
from spinedx.errors import PreprocessError, SpinedxError


@dataclass
class CasePrediction:
    """The result of :func:`predict_case` (also written as ``prediction.json``).

    Attributes:
        probability: ensemble patient probability of malignancy (mean over fold models).
        call: ``malignant`` or ``benign`` at ``threshold``.
        threshold: the run's decision threshold.
        per_model: each fold model's patient probability, in ``folds`` order.
        folds: fold numbers of the models.
        slice_index: the T2 lesion slices scored.
        slice_probability: ``(n_models, n_slices)`` probabilities.
        heatmaps: ``(n_slices, 64, 64)`` Grad-CAM maps averaged over the fold models (or None).
        record: the JSON document written to ``prediction.json``.
        out_dir: where the files are.
        overlays: PNG overlay paths, one per slice.
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


def _aggregate(p: np.ndarray, how: str) -> np.ndarray:
    """Patient probability per model from ``(n_models, n_slices)``: the paper's maximum, or the mean."""
    return p.mean(axis=1) if how == "mean" else p.max(axis=1)


def _extract_config(info: Any, register: bool | None) -> tuple[Any, str]:
    """The run's ExtractConfig (from its extract.json), with ``register`` overridden when given."""
    from dataclasses import fields, replace

    from spinedx.preprocess import ExtractConfig

    recorded = info.extract_config
    if recorded is not None:
        known = {f.name for f in fields(ExtractConfig)}
        cfg = ExtractConfig.from_dict({k: v for k, v in recorded.items() if k in known})
        source = f"the run's extract.json ({info.patches_dir / 'extract.json'})"
    else:
        cfg = ExtractConfig()
        source = "spinedx defaults (the run records no extract.json; check they match the training patches)"
    if register is not None and register != cfg.register:
        cfg = replace(cfg, register=register)
        source += f"; registration switched {'on' if register else 'off'} by the caller"
    return cfg, source


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
    run: Any = None,
) -> CasePrediction:
    """Predict one case with every fold model of a run (an ensemble) and explain it with Grad-CAM.

    Args:
        run_dir: run folder written by ``spinedx cv`` (``config.yaml``, ``folds/<k>/model.pt``).
        t1: T1-weighted series (DICOM folder/file, NIfTI, NRRD, MetaImage).
        t2: T2-weighted series on which the box is drawn.
        lesion_slices: 0-based T2 lesion slices, e.g. ``"7;8"`` or ``(7, 8)``; one sample each.
        box: ``x0,y0,x1,y1`` half-open T2 pixel box (column, row), e.g. ``"120,80,190,150"``.
        out_dir: where to write ``prediction.json`` and the overlay PNGs (None: write nothing).
        t1_series_uid: SeriesInstanceUID when the T1 folder holds several series.
        t2_series_uid: the same for T2.
        register: force the T2->T1 registration on/off; None: as the run's extraction.
        patient_id: name of the case in messages and outputs.
        explain: compute Grad-CAM heatmaps and overlays.
        run: the run's fold models already loaded with :func:`spinedx.models.load_run` (a server keeps them
            warm); None loads them from ``run_dir``.

    Returns:
        The prediction (see :class:`CasePrediction`).

    Raises:
        SpinedxError: bad slices or box, unreadable series, a box outside the image, a run
            folder without models; the same messages as ``spinedx extract``.
    """
    from spinedx.cohort import CaseRecord, parse_box, parse_slices
    from spinedx.models import load_run, predict_patches
    from spinedx.preprocess import CHANNEL_NAMES, extract_case
    from spinedx.provenance import provenance
    from spinedx.report.run_info import load_run_info

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
    slices_t = tuple(int(s) for s in lesion_slices)
    box_t = tuple(int(v) for v in box)
    if len(box_t) != 4:
        raise PreprocessError(f"box needs four numbers x0,y0,x1,y1, got {box_t}", where="--box")

    info = load_run_info(run_dir)
    if run is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # build_model warns about missing ImageNet weights: irrelevant here
            run = load_run(run_dir)
    config, config_source = _extract_config(info, register)

    # A new case has no reference label; extract_case passes None through to the patches.
    case = CaseRecord(patient_id=patient_id, label=None, t1=Path(t1), t2=Path(t2),  # type: ignore[arg-type]
                      t1_series_uid=t1_series_uid, t2_series_uid=t2_series_uid,
                      lesion_slices=slices_t, box=box_t)
    patches = extract_case(case, config)
    if tuple(run.channel_names) != tuple(CHANNEL_NAMES):
        raise SpinedxError(f"the run's models expect channels {run.channel_names}, the preprocessing makes "
                           f"{CHANNEL_NAMES}; use a run made with this spinedx version", where=str(run_dir))

    probs = predict_patches(run, patches.x, bf16=False)  # (n_models, n_slices); fp32: one case, exact values
    per_model = _aggregate(probs, run.aggregation)
    prob = float(per_model.mean())
    threshold = run.threshold
    call = "malignant" if prob >= threshold else "benign"
    slice_index = [int(s) for s in patches.slice_index]

    heat = None
    if explain:
        from spinedx.explain import gradcam

        # Mean of the fold models' maps: the regions the ensemble as a whole relies on.
        heat = np.mean([gradcam(m, patches.x) for m in run.models], axis=0).astype(np.float32)

    prov = provenance()
    record: dict[str, Any] = {
        "notice": f"{RESEARCH_USE_ONLY[0].upper()}{RESEARCH_USE_ONLY[1:]}.",
        "research_use_only": RESEARCH_USE_ONLY,
        "patient_id": patient_id,
        "patient_probability": prob,
        "call": call,
        "threshold": threshold,
        "aggregation": (f"{run.aggregation} over the lesion slices per fold model, then the mean over the "
                        f"{len(run.models)} fold models"),
        "spread": {
            "n_models": len(run.models),
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
        "model": {
            "run_dir": str(Path(run_dir).resolve()),
            "backbone": run.backbone,
            "folds": list(run.folds),
            "weights": info.weights,
            "imagenet_weights": info.pretrained,
            "optimistic": info.optimistic,
            "optimistic_note": ("the run's early stopping used its validation folds, so its reported performance "
                                "is optimistic") if info.optimistic else None,
            "run_git_commit": info.git_commit,
            "run_versions": info.versions,
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
    result = CasePrediction(prob, call, threshold, [float(v) for v in per_model], list(run.folds), slice_index,
                            probs, heat, record)
    if out_dir is not None:
        write_prediction(result, patches.x, out_dir)
    return result


def write_prediction(result: CasePrediction, x: np.ndarray, out_dir: str | Path) -> Path:
    """Write ``prediction.json`` and one T1/T2 Grad-CAM overlay PNG per slice into ``out_dir``."""
    from spinedx.explain import save_overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.out_dir = out
    result.overlays = []
    for i, s in enumerate(result.slice_index):
        entry = result.record["slices"][i]
        if result.heatmaps is None or entry.get("overlay") is None:
            continue
        title = (f"{result.record['patient_id']} slice {s}: p(malignant) {entry['probability']:.2f} "
                 f"(research use only)")
        result.overlays.append(save_overlay(x[i], result.heatmaps[i], out / entry["overlay"], title=title))
    path = out / "prediction.json"
    path.write_text(json.dumps(result.record, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
