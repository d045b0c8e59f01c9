"""Synthetic spine-MRI cohort: sagittal T1W/T2W DICOM phantoms with benign and malignant
fractures, their 15 imaging features and three simulated readers (see docs/synth.md).

Public API: :func:`generate_cohort` (render images and manifest) and :func:`sample_study_table`
(the same truth without images); the seeds used for tuning and the evaluation seed are in
:mod:`spinedx.synth.seeds`. The two functions are imported on first use, so that the CLI can read
:mod:`spinedx.synth.seeds` without loading numpy, pandas and pydicom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spinedx.synth.cohort import generate_cohort
    from spinedx.synth.study import sample_study_table

__all__ = ["generate_cohort", "sample_study_table"]


def __getattr__(name: str) -> Any:
    if name == "generate_cohort":
        from spinedx.synth.cohort import generate_cohort

        return generate_cohort
    if name == "sample_study_table":
        from spinedx.synth.study import sample_study_table

        return sample_study_table
    raise AttributeError(f"module 'spinedx.synth' has no attribute {name!r}")
