"""Preprocessing: T2 -> T1 mapping, bounded rigid registration and 6-channel lesion patches.

Implements Yeh et al., Eur Spine J 2022, "Deep learning architecture": the lesion box drawn on T2 is mapped
onto T1, and the T1 and T2 images of the lesion slice and its two neighbours are cropped to a square
containing the box, resized to 64 x 64 and z-scored.
"""

from spinedx.preprocess.config import CHANNEL_NAMES, ExtractConfig
from spinedx.preprocess.extract import (
    CaseImages,
    CasePatches,
    ExtractResult,
    extract_case,
    extract_cohort,
    extract_patches,
    read_case,
)
from spinedx.preprocess.registration import RegistrationRecord, register_rigid

__all__ = [
    "CHANNEL_NAMES",
    "CaseImages",
    "CasePatches",
    "ExtractConfig",
    "ExtractResult",
    "RegistrationRecord",
    "extract_case",
    "extract_cohort",
    "extract_patches",
    "read_case",
    "register_rigid",
]
