"""One DICOM layer: DICOM JSON read through pydicom, one index writer, no printing below the CLI, and the one
hand-made reader left (spinedx.io.fastheader) giving the same index as pydicom alone, in its benchmark."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from spinedx.studyindex import SeriesHeader


def test_dicom_json_is_read_by_pydicom_element_by_element() -> None:
    obj = {"0020000e": {"vr": "UI", "Value": ["1.2.3"]},      # lower-case key
           "00180081": {"Value": [90]},                       # no vr: the dictionary's (DS)
           "00180080": {"vr": "DS", "Value": ["3200"]},        # a DS written as a string
           "00200011": {"vr": "IS", "Value": ["x5"]},          # no integer: absent, as in a file
           "00080060": {"vr": "CS", "Value": ["MR"]},
           "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]}}  # not read: not converted
    h = SeriesHeader.from_json(obj, n_instances=15)
    assert (h.series_uid, h.echo_time, h.repetition_time, h.series_number, h.modality) == \
        ("1.2.3", 90.0, 3200.0, None, "MR")
    assert (h.n_instances, h.n_frames) == (15, 15)


def test_library_modules_never_print() -> None:
    """Printing is the CLI's job: the DICOM, index and DICOMweb modules do not even import typer."""
    code = ("import sys, spinedx.io, spinedx.studyindex, spinedx.interop.pacs, spinedx.interop.dicomweb, "
            "spinedx.interop.cli_support; print('typer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


@pytest.mark.slow
def test_header_benchmark_runs_and_both_paths_give_the_same_index(synth_cohort: Path, capsys) -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "header.py"
    spec = importlib.util.spec_from_file_location("bench_header", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--cohort", str(synth_cohort / "cohort.csv"), "--clinical-patients", "2", "--repeat", "1"]
    assert bench.main(args) == 0  # exits with a message when the two paths give different indexes
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1].split()
    assert last[:2] == ["RESULT", "header_index_ratio"] and float(last[2]) > 0
    assert out.count("the same index from both paths") == 2
    assert "clinical-like tree: 242 files, 52 in chosen series" in out  # per study 26 chosen files and 95 others
