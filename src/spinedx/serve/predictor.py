"""The one place the server predicts: an adapter over :func:`spinedx.predict.predict_case`.

The run's fold models are loaded once when the server starts and prepared as one batched ensemble
(:class:`spinedx.models.Ensemble`: an ONNX Runtime graph of all fold models when onnxruntime is installed, else
torch ``vmap`` over stacked weights), both handed to ``predict_case`` (``run=``, ``ensemble=``), so a prediction
costs the preprocessing, one batched forward pass and (on request) the explanation, never a reload; the
probabilities agree with ``spinedx predict`` on the same inputs to float rounding (tests check 1e-4).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any


class Predictor:
    """A run's fold models, loaded once, predicting cases of the datastore.

    Args:
        run_dir: the ``spinedx cv`` run folder.
        register: force the T2->T1 registration on/off; None: as the run's extraction.
    """

    def __init__(self, run_dir: str | Path, register: bool | None = None, *,
                 allow_modality: tuple[str, ...] = ()) -> None:
        from spinedx.models import load_run
        from spinedx.predict import extract_config_for

        self.run_dir = Path(run_dir)
        self.register = register
        self.allow_modality = allow_modality  # DICOM modalities read besides MR (--allow-modality)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing ImageNet weights: irrelevant for loading trained folds
            self.run = load_run(self.run_dir)
        self.extract_config, self.config_source = extract_config_for(self.run.record, register)
        from spinedx.models import Ensemble

        self.ensemble = Ensemble.from_models(self.run.models, folds=self.run.folds, views=self.run.tta)
        # Imported once here, not on the first request: seconds of imports that would otherwise land on the first
        # user's Predict.
        import spinedx.explain  # noqa: F401
        import spinedx.preprocess.registration  # noqa: F401
        # torch modules are not re-entrant under Grad-CAM's hooks: one prediction at a time.
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        """What the page shows about the model."""
        return {"run_dir": self.run_dir.name, "backbone": self.run.backbone, "folds": list(self.run.folds),
                "threshold": self.run.threshold, "aggregation": self.run.aggregation,
                "optimistic": self.run.optimistic, "register": bool(self.extract_config.register),
                "engine": f"{self.ensemble.backend} ({self.ensemble.precision})",
                "tta": self.run.tta.describe()}

    def predict(self, case: Any, out_dir: Path, *, explain: bool = True) -> Any:
        """Predict a manifest case (its saved slices and box) and write ``prediction.json`` (and, with ``explain``,
        the heatmap overlays) into ``out_dir``.

        The probabilities do not depend on ``explain``: the page asks first without it (the answer in about a
        second) and then with it for the overlays.

        Returns:
            The :class:`spinedx.predict.CasePrediction`.
        """
        from spinedx.predict import predict_case

        with self._lock:
            return predict_case(self.run_dir, case.t1, case.t2, case.lesion_slices, case.box, out_dir,
                                t1_series_uid=case.t1_series_uid, t2_series_uid=case.t2_series_uid,
                                register=self.register, patient_id=case.patient_id, explain=explain, run=self.run,
                                ensemble=self.ensemble, allow_modality=self.allow_modality)
