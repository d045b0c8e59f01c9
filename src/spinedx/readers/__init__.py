"""Reader studies: planning and running a blinded study, and the multi-reader multi-case (MRMC) analysis of its reads.

* :mod:`spinedx.readers.mrmc`: the statistics (Obuchowski-Rockette with Hillis's degrees of freedom, empirical AUC,
  case-jackknife covariances; RRRC, FRRC, RRFC; the standalone model vs readers, 1T-RRRC).
* :mod:`spinedx.readers.analysis`: ``READS.csv`` / ``TRUTH.csv`` read, checked and analysed (``spinedx readers
  analyze``), with the readers' sensitivity, specificity and McNemar tests beside the MRMC analysis.
* :mod:`spinedx.readers.tables`: the READS, TRUTH and model-score tables read and checked, cell by cell.
* :mod:`spinedx.readers.lrc`: the ``.lrc`` rating files of the Iowa/Chicago MRMC programs and RJafroc.
* :mod:`spinedx.readers.plan`: ``spinedx readers plan``, a blinded study folder (reading lists, tokens).
* :mod:`spinedx.readers.store`: the append-only store of a study's reads, what a reader reads next.
* :mod:`spinedx.readers.reads`: ``spinedx readers export``, the READS and TRUTH tables of a study.

See docs/readers.md.
"""

from __future__ import annotations

from spinedx.readers.analysis import ReaderStudyResult, analyze_reads, load_model_scores, load_reads, load_truth
from spinedx.readers.mrmc import ORResult, or_analysis
from spinedx.readers.standalone import StandaloneResult, standalone_vs_readers

__all__ = [
    "ORResult",
    "ReaderStudyResult",
    "StandaloneResult",
    "analyze_reads",
    "load_model_scores",
    "load_reads",
    "load_truth",
    "or_analysis",
    "standalone_vs_readers",
]
