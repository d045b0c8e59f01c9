"""One DICOM layer: DICOM JSON read through pydicom, one index writer, no printing below the CLI, and the one
hand-made reader left (spinedx.io.fastheader) giving the same index as pydicom alone, in its benchmark."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from spinedx.studyindex import SeriesHeader, case_keys


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


def test_case_keys_do_not_depend_on_the_order_of_the_studies() -> None:
    studies = [("P1", "20240202", "1.2.2"), ("P 2", "", "1.3"), ("P1", "20240101", "1.2.1"), ("", "", "1.4"),
               ("P1", "", "1.2.9"), ("P_2", "", "1.5")]
    keys = case_keys(studies)
    assert keys == ["P1_20240202", "P_2", "P1_20240101", "UNKNOWN", "P1_1", "P_2_1"]
    assert case_keys(studies[::-1]) == keys[::-1]


def test_a_server_index_names_studies_as_a_folder_index_does(monkeypatch) -> None:
    """A patient with two studies: P1_<date> for each, from a folder and from a DICOMweb server alike (the server's
    index once named them P1 and P1_<date>)."""
    from spinedx.interop import pacs
    from spinedx.interop.dicomweb import StudyInfo

    sag = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    studies = [StudyInfo("1.2.1", "P1", "", "20240101", "", ("MR",), 2, 26),
               StudyInfo("1.2.2", "P1", "", "20240202", "", ("MR",), 2, 26),
               StudyInfo("1.3.1", "P2", "", "20240303", "", ("MR",), 2, 26)]

    class FakeClient:
        url = "http://127.0.0.1:9/dicom-web"

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def list_studies(self, **filters: object) -> list[StudyInfo]:
            return list(reversed(studies))

        def series_headers(self, study_uid: str) -> list[SeriesHeader]:
            return [SeriesHeader(f"{study_uid}.1", 3, "SAG T1 SE", "MR", sag, 15.0, 400.0, n_instances=13,
                                 n_frames=13, study_uid=study_uid),
                    SeriesHeader(f"{study_uid}.2", 4, "SAG T2 FSE", "MR", sag, 90.0, 3200.0, n_instances=13,
                                 n_frames=13, study_uid=study_uid)]

    monkeypatch.setattr(pacs, "DicomWebClient", FakeClient)
    idx = pacs.index_server(FakeClient.url)
    assert [(st.case_key, st.study_uid) for st in idx.studies] == \
        [("P1_20240101", "1.2.1"), ("P1_20240202", "1.2.2"), ("P2", "1.3.1")]
    assert [st.case_key for st in idx.studies] == sorted(case_keys([(s.patient_id, s.study_date, s.study_uid)
                                                                    for s in studies]))
    assert idx.dicomweb == FakeClient.url and all(st.selection.status == "ok" for st in idx.studies)


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
