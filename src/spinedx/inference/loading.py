"""Load a run folder or a model bundle (the one layer that knows both), make an engine for it, export a bundle."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinedx.errors import SpinedxError, WeightsError

if TYPE_CHECKING:
    import torch

    from spinedx.inference.engines import Engine
    from spinedx.interop.bundle import BundleInfo
    from spinedx.interop.runfacts import RunFacts
    from spinedx.models.run import RunModels

#: Engine names accepted by :func:`make_engine` (``onnx`` is the command line's name of ``onnxruntime``).
ENGINES = ("torch", "onnxruntime", "onnx")

#: Largest difference between the ONNX Runtime and torch engines accepted when a bundle's graph is exported (and
#: required by the tests of every engine against the run's out-of-fold probabilities).
ONNX_TOLERANCE = 1e-5


def load_model(path: str | Path, *, device: torch.device | str = "cpu", allow_missing_folds: bool = False,
               expect_digest: str | None = None, folds: Sequence[int] | None = None) -> RunModels:
    """The fold models of a run folder (``spinedx cv``) or a model bundle (``spinedx export``), checked, as one type.

    A bundle is checked against its ``SHA256SUMS``, what ``bundle.json`` recorded at export and ``expect_digest``
    before anything is loaded (:func:`spinedx.interop.bundle.load_bundle`); a run's fold models against the sha256
    their ``done.json`` recorded (:func:`spinedx.models.load_run`). Either way the models are built from the bytes
    checked, in eval mode, and :attr:`~spinedx.models.RunModels.oof_inference` says how the run's out-of-fold
    probabilities were computed.

    Args:
        path: the run folder or bundle.
        device: where to put the models.
        allow_missing_folds: a run with unfinished folds answers from the others (recorded by the caller).
        expect_digest: the digest the bundle must have (a run folder has none and is then refused).
        folds: only these folds (``spinedx predict --fold K``: the model that held a cohort patient out).

    Raises:
        SpinedxError: not a run folder or a bundle, a failed check, another digest, a fold not in the model.
    """
    from spinedx.interop.bundle import check_digest_text, is_bundle, load_bundle
    from spinedx.models.run import load_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # build_model warns about missing ImageNet weights: irrelevant here
        if is_bundle(path):
            run = load_bundle(path, device, expect_digest=expect_digest)
        else:
            if expect_digest is not None:
                check_digest_text(expect_digest)
                raise WeightsError("--expect-digest pins a model bundle, and this is a run folder (it has no digest): "
                                   "export it (spinedx export RUN --out BUNDLE), validate the bundle and pin the "
                                   "digest export prints", where=str(path))
            run = load_run(path, device, allow_missing_folds=allow_missing_folds)
    return run if folds is None else run.select(folds)


def make_engine(run: RunModels, engine: str = "torch", *, threads: int | None = None) -> Engine:
    """An engine for a loaded run or bundle (:func:`load_model`), over its folds (:attr:`RunModels.folds`) and
    with its test-time views.

    Args:
        run: the loaded models.
        engine: ``torch`` (the fold models; their device) or ``onnxruntime``/``onnx`` (CPU): a bundle's own
            ``model.onnx`` (checked again, with the digest the models were loaded with), else the graph ``spinedx
            export --format onnx`` would write, exported from the loaded models.
        threads: ONNX Runtime's intra-op threads (default: torch's count).

    Raises:
        SpinedxError: an unknown engine, a bundle graph that fails its checks or is not the bundle's models.
    """
    from spinedx.inference.engines import OnnxRuntimeEngine, TorchEngine

    if engine not in ENGINES:
        raise SpinedxError(f"engine must be torch or onnx, got {engine!r}", where="--engine")
    if engine == "torch":
        return TorchEngine(run.models, folds=run.folds, views=run.tta)
    graph = None
    if run.digest is not None:  # loaded from a bundle: its own graph, when it was exported with one
        from spinedx.interop.bundle import bundle_graph

        found = bundle_graph(run.run_dir, expect_digest=run.digest)
        if found is not None:
            graph, graph_folds, where = found
            eng = OnnxRuntimeEngine(graph, folds=graph_folds, views=run.tta, threads=threads, where=where)
            return eng if graph_folds == list(run.folds) else _Rows(eng, run.folds)
    return OnnxRuntimeEngine.from_models(run.models, patch_size=run.patch_size, folds=run.folds, views=run.tta,
                                         n_channels=len(run.channel_names), threads=threads)


class _Rows:
    """An engine's rows of some of its folds (a bundle's graph holds every fold; ``--fold K`` wants one)."""

    def __init__(self, engine: Engine, folds: Sequence[int]) -> None:
        self.engine = engine
        self.folds = [int(k) for k in folds]
        self._rows = [engine.folds.index(k) for k in self.folds]
        self.name, self.precision, self.views = engine.name, engine.precision, engine.views

    def predict(self, x: Any) -> Any:
        return self.engine.predict(x)[self._rows]

    def record(self) -> dict[str, Any]:
        return self.engine.record()


def engine_rows(engine: Engine, folds: Sequence[int]) -> Engine:
    """``engine`` answering for ``folds`` only (rows in that order).

    Raises:
        SpinedxError: a fold the engine does not hold.
    """
    absent = [k for k in folds if k not in engine.folds]
    if absent:
        raise SpinedxError(f"the engine holds folds {list(engine.folds)}, the model {list(folds)}", where="engine")
    return engine if list(engine.folds) == list(folds) else _Rows(engine, folds)


def export_bundle(run_dir: str | Path, out: str | Path, *, onnx: bool = False, name: str | None = None,
                  overwrite: bool = False) -> BundleInfo:
    """``spinedx export``: a run's fold models as a checked bundle (:func:`spinedx.interop.bundle.export_bundle`),
    with ``onnx`` also the ensemble's ONNX graph (``model.onnx``), exported from the bundle's own model bytes and
    checked against the torch engine (:data:`ONNX_TOLERANCE`) before the bundle is complete.

    Raises:
        SpinedxError: see :func:`spinedx.interop.bundle.export_bundle`; a graph that disagrees with the torch engine.
    """
    from spinedx.interop.bundle import export_bundle as write_bundle

    return write_bundle(run_dir, out, graph_writer=_write_graph if onnx else None, name=name, overwrite=overwrite)


def _write_graph(folder: Path, facts: RunFacts, onnx_file: str) -> dict[str, Any]:
    """Write ``folder/onnx_file``, the graph of the fold models in ``folder`` (the bytes the bundle holds) with the
    run's views, after checking ONNX Runtime against the torch engine on random patches."""
    import numpy as np

    from spinedx.inference.engines import OnnxRuntimeEngine, TorchEngine
    from spinedx.inference.graph import OPSET, export_onnx
    from spinedx.models.run import load_fold_model

    paths = sorted(folder.glob("folds/*/model.pt"), key=lambda p: int(p.parent.name))
    folds = [int(p.parent.name) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [load_fold_model(p, fold=k) for p, k in zip(paths, folds, strict=True)]
    n_channels = len(facts.channel_names)
    graph = export_onnx(models, facts.patch_size, n_channels, facts.tta)
    x = np.random.default_rng(0).normal(size=(8, n_channels, facts.patch_size, facts.patch_size)).astype(np.float32)
    ref = TorchEngine(models, folds=folds, views=facts.tta).predict(x)
    got = OnnxRuntimeEngine(graph, folds=folds, views=facts.tta, where=onnx_file).predict(x)
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= ONNX_TOLERANCE:
        raise SpinedxError(f"the ONNX graph disagrees with the torch engine by {diff:.2e} (> {ONNX_TOLERANCE:g}); "
                           "export without --format onnx", where=str(folder / onnx_file))
    (folder / onnx_file).write_bytes(graph)
    return {"opset": OPSET, "max_abs_diff_vs_torch": diff, "tolerance": ONNX_TOLERANCE, "n_random_patches": len(x)}
