"""Reading DICOM series, NIfTI and other images into :class:`spinedx.io.Image`."""

from spinedx.io.image import Image

__all__ = ["Image"]
