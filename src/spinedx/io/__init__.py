"""Reading DICOM series, NIfTI and other images into :class:`spinedx.io.Image`.

``read_image`` is the one entry point; ``list_dicom_series`` shows what a DICOM folder holds.
"""

from spinedx.io.dicom import SeriesInfo, list_dicom_series, read_dicom_file, read_dicom_series
from spinedx.io.image import Image
from spinedx.io.read import MIN_SLICES, check_image, read_image
from spinedx.io.volume import read_nifti, read_sitk_volume, sagittal_stack

__all__ = [
    "MIN_SLICES", "Image", "SeriesInfo", "check_image", "list_dicom_series", "read_dicom_file", "read_dicom_series",
    "read_image", "read_nifti", "read_sitk_volume", "sagittal_stack",
]
