"""Synthetic spine-MRI cohort: sagittal T1W/T2W DICOM phantoms with benign and malignant
fractures, their 15 imaging features and three simulated readers (see docs/synth.md).

Public API: :func:`generate_cohort` (render images and manifest) and :func:`sample_study_table`
(the same truth without images).
"""

from spinedx.synth.cohort import generate_cohort
from spinedx.synth.study import sample_study_table

__all__ = ["generate_cohort", "sample_study_table"]
