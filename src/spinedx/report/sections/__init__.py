"""One builder per section of the study report.

Each module has ``build(inputs, page)``: it formats part of the checked :class:`~spinedx.report.loading.
ReportInputs` into the :class:`~spinedx.report.page.Page` the template renders, and adds the tables it shows to
``page.tables`` (written as CSV beside the report). The builders run in :data:`BUILDERS` order. The page and the
number formats live in :mod:`spinedx.report.page`, so the builders never import this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spinedx.report.page import Page
from spinedx.report.sections import (
    banners,
    baselines,
    calibration,
    conformal,
    confusion,
    folds,
    gallery,
    provenance,
    readerstudy,
    repeats,
    roc,
    summary,
    table1,
    table2,
)

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs

#: The section builders, in page order.
BUILDERS: list[Callable[[ReportInputs, Page], None]] = [
    banners.build, summary.build, table1.build, table2.build, roc.build, readerstudy.build, baselines.build,
    confusion.build, folds.build, repeats.build, calibration.build, conformal.build,
    gallery.build, provenance.build]


def build_all(inputs: ReportInputs, page: Page) -> None:
    """Run every section builder, in page order."""
    for build in BUILDERS:
        build(inputs, page)
