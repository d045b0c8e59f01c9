"""The one place the server predicts: an adapter over :func:`spinedx.predict.predict_case`.

The run's (or bundle's) fold models are loaded once when the server starts (:func:`spinedx.inference.load_model`)
and handed to ``predict_case`` with a warm engine (``run=``, ``engine=``), so a prediction costs the preprocessing,
one forward pass of every fold model and (on request) the explanation, never a reload.

The engine is ONNX Runtime on the CPU (:class:`spinedx.inference.OnnxRuntimeEngine`: a bundle's own ``model.onnx``,
else the graph ``spinedx export --format onnx`` writes, exported from the loaded models); it is built in a
background thread at start, because exporting ten fold models takes seconds the server need not wait for. Until it
is ready the torch engine answers: both compute the same graph in fp32 and agree to float rounding (1e-5 tested),
and ``prediction.json`` names the engine that answered. The graph is not cached on disk: a cached graph holds the
weights, so a file replaced in the cache would change the answers without any of the checks a run's ``done.json``
or a bundle's checksums give the fold models.
"""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Predictor:
    """A run's fold models, loaded once, predicting cases of the datastore.

    Args:
        run_dir: the ``spinedx cv`` run folder or a model bundle.
        register: force the T2->T1 registration on/off; None: as the run's extraction.
        allow_modality: DICOM modalities read besides MR (``--allow-modality``).
        engine: ``onnxruntime`` (default: built in the background, torch meanwhile) or ``torch``.
    """

    def __init__(self, run_dir: str | Path, register: bool | None = None, *,
                 allow_modality: tuple[str, ...] = (), engine: str = "onnxruntime") -> None:
        from spinedx.inference import load_model, make_engine
        from spinedx.predict import extract_config_for

        self.run_dir = Path(run_dir)
        self.register = register
        self.allow_modality = allow_modality
        self.run = load_model(self.run_dir)
        self.extract_config, self.config_source = extract_config_for(self.run.record, register)
        from spinedx.decision import load_artefacts

        # the calibrator, conformal thresholds and domain references, loaded (and checked) once like the models
        self.decision = load_artefacts(self.run.run_dir, self.run.record, digest=self.run.digest)
        # what the model lacks is logged with its first prediction (a refusal of the command line that starts the
        # server stays its one error line) and stated by /api/health and every answer
        self._decision_warned = False
        self.engine: Any = make_engine(self.run, "torch")
        self.engine_note: str | None = None
        # torch modules are not re-entrant under Grad-CAM's hooks: one prediction at a time.
        self._lock = threading.Lock()
        self._ready = threading.Event()
        # Imported once here, not on the first request: seconds of imports that would otherwise land on the first
        # user's Predict.
        import spinedx.preprocess.registration  # noqa: F401
        from spinedx.explain.render import warm

        warm()  # the overlays' colour table and fonts (matplotlib's)
        threading.Thread(target=self._prepare, args=(engine == "onnxruntime",), name="spinedx-prepare",
                         daemon=True).start()

    def _prepare(self, onnx: bool) -> None:
        """In the background at start: build the ONNX Runtime engine and load what the first DICOM result needs
        (:func:`spinedx.interop.results.warm`). Then :meth:`wait_ready` returns."""
        try:
            if onnx:
                self._build_onnx()
            from spinedx.interop.results import warm

            warm()
        except Exception as exc:  # noqa: BLE001 - a cold first prediction is slower, not wrong; say why
            log.warning("warning: warming up the server failed (%s: %s); the first prediction will be slower",
                        type(exc).__name__, exc)
        finally:
            self._ready.set()

    def _build_onnx(self) -> None:
        from dataclasses import replace

        from spinedx.inference import make_engine

        try:
            run = self.run
            if not _bundle_has_graph(run):
                with self._lock:  # copies, so the export never traces a model an explanation is hooking meanwhile
                    run = replace(run, models=[copy.deepcopy(m) for m in run.models])
            eng = make_engine(run, "onnxruntime")
        except Exception as exc:  # noqa: BLE001 - the torch engine keeps answering; say why
            self.engine_note = f"ONNX Runtime engine not built ({type(exc).__name__}: {exc}); torch answers"
            log.warning("warning: %s", self.engine_note)
        else:
            with self._lock:
                self.engine = eng

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the ONNX Runtime engine is built (or failed) and the server warmed up; True when done."""
        return self._ready.wait(timeout)

    def describe(self) -> dict[str, Any]:
        """What the page shows about the model."""
        engine = f"{self.engine.name} ({self.engine.precision})"
        if not self._ready.is_set():
            engine += "; ONNX Runtime being prepared"
        return {"run_dir": self.run_dir.name, "backbone": self.run.backbone, "folds": list(self.run.folds),
                "threshold": self.run.threshold, "aggregation": self.run.aggregation,
                "optimistic": self.run.optimistic, "register": bool(self.extract_config.register),
                "engine": engine, "tta": self.run.tta.describe(),
                "oof_inference_note": self.run.oof_inference.get("note"),
                # what the decision on the page rests on: the training cohort and the checks the model has
                "trained_on": self.decision.trained_on, "synthetic": bool(self.decision.trained_on.get("synthetic")),
                "decision_missing": list(self.decision.missing), "decision_warning": self.decision.warning(),
                "alpha": None if self.decision.conformal is None else float(self.decision.conformal.alpha)}

    def predict(self, case: Any, out_dir: Path, *, explain: bool = True) -> Any:
        """Predict a manifest case (its saved slices and box) and write ``prediction.json`` (and, with ``explain``,
        the heatmap overlays) into ``out_dir``.

        The probabilities do not depend on ``explain``; the page's Predict asks with it (one request, about 1.8 s for
        ten ResNet50 fold models on two cores, ``benchmarks/serve.py``).

        Returns:
            The :class:`spinedx.predict.CasePrediction`.
        """
        from spinedx.predict import predict_case

        if not self._decision_warned and self.decision.warning():
            log.warning("warning: %s", self.decision.warning())
            self._decision_warned = True
        with self._lock:
            return predict_case(self.run_dir, case.t1, case.t2, case.lesion_slices, case.box, out_dir,
                                t1_series_uid=case.t1_series_uid, t2_series_uid=case.t2_series_uid,
                                register=self.register, patient_id=case.patient_id, explain=explain, run=self.run,
                                engine=self.engine, allow_modality=self.allow_modality,
                                decision_artefacts=self.decision)


def _bundle_has_graph(run: Any) -> bool:
    """Whether ``run`` was loaded from a bundle exported with its ONNX graph (then that checked graph is used and
    nothing is exported)."""
    import json

    if run.digest is None:
        return False
    try:
        doc = json.loads((Path(run.run_dir) / "bundle.json").read_text(encoding="utf-8"))
        return bool(doc["model"].get("onnx"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # make_engine reads the bundle again, checked, and says what is wrong
