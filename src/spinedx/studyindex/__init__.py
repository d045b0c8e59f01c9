"""Indexing DICOM trees and choosing each study's sagittal T1W and T2W series (``spinedx index``).

:func:`select_t1_t2_series` is a pure function over header attributes (:class:`SeriesHeader`, built from a pydicom
Dataset or from DICOM JSON as QIDO-RS/WADO-RS return it), so file trees and DICOMweb studies go through the
same rules. Importing this package loads neither torch nor SimpleITK.
"""

from spinedx.studyindex.draft import WrittenIndex, write_draft, write_index
from spinedx.studyindex.header import SeriesHeader, allowed_modalities, modality_problem
from spinedx.studyindex.scan import StudyEntry, TreeIndex, case_keys, check_chosen_series, index_tree
from spinedx.studyindex.select import (
    SelectionOptions,
    SeriesVerdict,
    StudySelection,
    plane_of,
    select_t1_t2_series,
    weighting_from_description,
    weighting_from_timing,
)

__all__ = [
    "SelectionOptions", "SeriesHeader", "SeriesVerdict", "StudyEntry", "StudySelection", "TreeIndex", "WrittenIndex",
    "allowed_modalities", "case_keys", "check_chosen_series", "index_tree", "modality_problem", "plane_of",
    "select_t1_t2_series", "weighting_from_description", "weighting_from_timing", "write_draft", "write_index",
]
