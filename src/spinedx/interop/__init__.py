"""Hospital interoperability: DICOM results (SR, Secondary Capture), DICOMweb, model bundles.

Names are imported on first use, so ``import spinedx.interop`` stays cheap (highdicom and dicomweb-client load
only when a result is written or a server is contacted).

* :func:`write_dicom_results`: a prediction as a TID 1500 Comprehensive 3D SR and Grad-CAM Secondary Captures
  in new series of the source study.
* :func:`read_sr`: the values of such an SR, read back with highdicom.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_dicom_results": "spinedx.interop.results",
    "write_dicom_results_if_dicom": "spinedx.interop.results",
    "DicomResults": "spinedx.interop.results",
    "read_sr": "spinedx.interop.readback",
    "SRSummary": "spinedx.interop.readback",
    "ResultContent": "spinedx.interop.content",
    "AlgorithmInfo": "spinedx.interop.content",
    "content_from_prediction": "spinedx.interop.content",
    "model_fingerprint": "spinedx.interop.content",
    "dciodvfy": "spinedx.interop.validate",
}

__all__ = [
    "AlgorithmInfo", "DicomResults", "ResultContent", "SRSummary", "content_from_prediction", "dciodvfy",
    "model_fingerprint", "read_sr", "write_dicom_results", "write_dicom_results_if_dicom",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spinedx.interop' has no attribute {name!r}")
