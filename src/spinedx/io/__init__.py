"""Reading DICOM series, NIfTI and other images into :class:`spinedx.io.Image`.

``read_image`` is the one entry point; ``list_dicom_series`` shows what a DICOM folder holds. Every
image comes back on the canonical sagittal grid (:mod:`spinedx.io.geometry`): rows head -> feet,
columns anterior -> posterior, slices from the patient's left to right.
"""

from spinedx.io.dicom import SeriesCheck, read_dicom_file, read_dicom_series
from spinedx.io.discovery import ImageReadWarning, SeriesInfo, list_dicom_series
from spinedx.io.geometry import CANONICAL_DIRECTIONS, CANONICAL_IOP, canonical_axes, to_canonical
from spinedx.io.image import Image
from spinedx.io.read import MIN_SLICES, check_dicom_series, check_image, read_image
from spinedx.io.volume import read_nifti, read_sitk_volume

__all__ = [
    "CANONICAL_DIRECTIONS", "CANONICAL_IOP", "MIN_SLICES", "Image", "ImageReadWarning", "SeriesCheck", "SeriesInfo",
    "canonical_axes", "check_dicom_series", "check_image", "list_dicom_series", "read_dicom_file",
    "read_dicom_series", "read_image", "read_nifti", "read_sitk_volume", "to_canonical",
]
