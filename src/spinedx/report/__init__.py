"""The self-contained HTML study report of a cross-validation run (``spinedx report``)."""

from spinedx.report.builder import GALLERY_GROUPS, SECTIONS, build_report

__all__ = ["GALLERY_GROUPS", "SECTIONS", "build_report"]
