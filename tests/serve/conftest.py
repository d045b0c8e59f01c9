"""Fixtures of the workstation tests: a tiny synthetic cohort, a tiny run, and a fresh manifest per test.

The cohort (8 patients, 4 malignant: the fewest that 2 folds with their inner splits accept) and the run (2 folds
of resnet18, one epoch) are made once for this folder's tests and removed after them; each test gets its own copy
of the manifest (the images stay in the shared cohort, served as the DICOM root).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="package")
def ws_cohort(tmp_path_factory) -> Iterator[Path]:
    """``spinedx synth`` output: cohort.csv (annotated, labelled) and dicom/."""
    from spinedx.synth import generate_cohort

    out = tmp_path_factory.mktemp("ws_cohort")
    generate_cohort(out, n_patients=8, n_malignant=4, seed=11, progress=False)
    yield out
    shutil.rmtree(out, ignore_errors=True)  # the package is done: free the disk (tests/conftest.py)


@pytest.fixture(scope="package")
def ws_run(ws_cohort: Path, tmp_path_factory) -> Iterator[Path]:
    """A ``spinedx cv`` run folder trained on the cohort's patches (2 folds, resnet18, 1 epoch), with the main job's
    test-time augmentation."""
    from spinedx.evaluation.cv import CVConfig, run_cv
    from spinedx.preprocess import ExtractConfig, extract_cohort

    root = tmp_path_factory.mktemp("ws_run")
    extract_cohort(ws_cohort / "cohort.csv", root / "patches", ExtractConfig(), progress=False)
    cfg = CVConfig.from_profile("quick", folds=2, backbone="resnet18", pretrained="none", epochs=1, patience=0,
                                views_benign=1, views_malignant=1, batch_size=16, threads=1, compile="off",
                                tta="affine8")
    run_cv(root / "patches", root / "run", cfg, progress=False)
    yield root / "run"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def manifest(ws_cohort: Path, tmp_path: Path) -> Path:
    """A fresh copy of the cohort manifest in its own folder (its image paths point into the session cohort)."""
    from spinedx.cohort import load_manifest, write_manifest

    out = tmp_path / "work" / "cohort.csv"
    cohort = load_manifest(ws_cohort / "cohort.csv", draft=True)
    write_manifest(cohort.cases, out)
    return out


@pytest.fixture
def settings_for(ws_cohort: Path):
    """``settings_for(manifest, **kw)``: ServeSettings serving ``manifest`` with the cohort's DICOM as a root."""
    from spinedx.serve import ServeSettings

    def make(manifest: Path, **kw) -> ServeSettings:
        kw.setdefault("dicom_root", ws_cohort / "dicom")
        return ServeSettings(cohort=manifest, **kw)

    return make


#: what the tests' clients call the server: a name the server answers to (TestClient's default "testserver" is
#: refused like any other unknown Host)
BASE_URL = "http://127.0.0.1:8765"


@pytest.fixture
def client(manifest: Path, settings_for):
    """A TestClient of an app serving ``manifest`` (no model)."""
    from fastapi.testclient import TestClient

    from spinedx.serve import create_app

    with TestClient(create_app(settings_for(manifest)), base_url=BASE_URL) as c:
        yield c


def key_of(client, patient_id: str) -> str:
    """The opaque case key of a patient, as a client learns it: from the case list."""
    return {c["patient_id"]: c["case"] for c in client.get("/api/cases").json()}[patient_id]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
