"""The self-contained HTML study report of a cross-validation run (``spinedx report``)."""

from spinedx.report.builder import GALLERY_GROUPS, SECTIONS, build_report
from spinedx.report.run_info import RunInfo, load_run_info

__all__ = ["GALLERY_GROUPS", "SECTIONS", "RunInfo", "build_report", "load_run_info"]
