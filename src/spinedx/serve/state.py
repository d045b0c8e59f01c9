"""What one server process holds: settings, the datastore, the volume cache, the predictor."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinedx.serve.datastore import LocalDatastore
from spinedx.serve.settings import ServeSettings
from spinedx.serve.volumes import Volume, VolumeCache


@dataclass
class AppState:
    """Shared by every request of one app (``request.app.state.ws``)."""

    settings: ServeSettings
    store: LocalDatastore
    cache: VolumeCache
    predictor: Any = None
    extract_config: Any = None
    registrations: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    reg_lock: threading.Lock = field(default_factory=threading.Lock)

    def volume(self, key: str, which: str) -> Volume:
        """The decoded ``t1``/``t2`` of a case (cached), by ``patient_id``.

        The series' DICOM PatientID joins the identifiers the server's logs never show
        (:func:`spinedx.serve.logsafe.register_identifiers`): replaced by the case key (by ``[patient]`` in reader
        mode, which has no case keys).
        """
        path, uid = self.store.image_source(key, which)
        vol = self.cache.get(path, uid, where=f"{key} {which}")
        dicom_id = vol.image.meta.get("PatientID")
        if dicom_id:
            from spinedx.serve.logsafe import register_identifiers

            register_identifiers({str(dicom_id): "[patient]" if self.settings.study is not None
                                  else self.store.key_of(key)})
        return vol


def build_state(settings: ServeSettings) -> AppState:
    """Check the settings, open the datastore and load the run's models once."""
    settings.check()
    manifest = Path(settings.cohort) if settings.cohort is not None else Path.cwd() / "cohort.csv"
    auth = None
    if settings.dicomweb is not None:
        from spinedx.interop.dicomweb import DicomWebAuth

        auth = DicomWebAuth.from_env(settings.dicomweb_user)
    store = LocalDatastore(manifest, settings.dicom_root, dicomweb=settings.dicomweb, dicomweb_auth=auth,
                           allow_modality=settings.allow_modality)
    predictor = None
    if settings.model is not None:
        from spinedx.serve.predictor import Predictor

        predictor = Predictor(settings.model, settings.register, allow_modality=settings.allow_modality)
        config = predictor.extract_config
    else:
        from dataclasses import replace

        from spinedx.preprocess.config import ExtractConfig

        config = ExtractConfig()
        if settings.register is not None:
            config = replace(config, register=settings.register)
    return AppState(settings, store, VolumeCache(settings.cache_bytes, allow_modality=settings.allow_modality),
                    predictor, config)
