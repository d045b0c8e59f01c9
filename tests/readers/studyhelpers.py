"""Study folders with reads for the tests: planned on a test run's cohort, reads written through the store API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from runhelpers import write_run

from spinedx.readers.modelref import model_identity
from spinedx.readers.plan import Study, plan_study
from spinedx.readers.reads import truth_frame
from spinedx.readers.store import ReadStore
from spinedx.synth.study import sample_study_table

#: Per reader: the noise of the unaided latent score (the last reader is the least experienced).
READER_NOISE = {"senior": 0.4, "r4": 0.9, "r1": 1.8}


def touch_images(cohort_csv: Path) -> None:
    """Create the (empty) image files a test run's manifest names: planning checks they exist, reads no pixel."""
    import pandas as pd

    df = pd.read_csv(cohort_csv)
    for col in ("t1", "t2"):
        for rel in df[col]:
            p = cohort_csv.parent / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()


def run_with_study(root: Path, *, n_patients: int = 12, models: bool = False, seed: int = 3,
                   readers: str = "senior,r4,r1", run_seed: int = 0) -> tuple[Path, Path, Study]:
    """A test run (``write_run``: cohort P000.., every third malignant; ``run_seed`` draws its features, reader
    calls and probabilities) and a sequential study planned on its cohort: ``(cohort.csv, run folder, study)``;
    no reads yet."""
    run = write_run(root / "w", n_patients=n_patients, n_folds=2, models=models, optimistic=False, seed=run_seed)
    cohort = root / "w" / "cohort.csv"
    touch_images(cohort)
    study = plan_study(cohort, readers, "sequential", seed, root / "study")
    return cohort, run, study


def read_study(study: Study, *, run: Path | None = None, skip: set[tuple[str, str]] | None = None,
               seed: int = 0) -> dict[tuple[str, str, str], tuple[str, int]]:
    """Every planned read (but ``skip``: (reader, case) pairs left unread), appended through the store API.

    Unaided: a latent score ``z = 1.2 (2y - 1) + noise`` per reader and case (noise by :data:`READER_NOISE`);
    aided: ``0.6 z + 0.5 (2y - 1)`` (the model pulls toward the truth). Score = round(100 sigmoid), call malignant
    when the score is 50 or more. With ``run``, aided reads name that model (``store.meta('model')``) and its
    answers are kept as ``spinedx serve --study`` keeps them (``aided/<model>/<case>/prediction.json``).

    Returns:
        (reader, case, modality) -> (call, score).
    """
    skip = skip or set()
    truth = dict(zip(truth_frame(study)["case_id"], truth_frame(study)["truth"], strict=True))
    rng = np.random.default_rng(seed)
    noise = {(r, c): float(rng.normal()) for r in study.readers for c in study.case_ids}
    identity = model_identity(run) if run is not None else None
    store = ReadStore(study.store_path, study.study_id)
    out: dict[tuple[str, str, str], tuple[str, int]] = {}
    t = 1_700_000_000.0
    try:
        for reader in study.readers:
            for st in study.steps(reader, 1):
                if (reader, st.case_id) in skip:
                    continue
                y = 2 * truth[st.case_id] - 1
                z = 1.2 * y + READER_NOISE.get(reader, 1.0) * noise[(reader, st.case_id)]
                if st.modality == "aided":
                    z = 0.6 * z + 0.5 * y
                score = int(round(100 / (1 + np.exp(-z))))
                call = "malignant" if score >= 50 else "benign"
                t += 5.0
                store.append_read(reader=reader, session=1, step=st.step, case_id=st.case_id, modality=st.modality,
                                  call=call, score=score, features=None, shown_at=t - 4.0, submitted_at=t,
                                  seconds=4.0, model=identity if st.modality == "aided" else None)
                out[(reader, st.case_id, st.modality)] = (call, score)
                if identity is not None and st.modality == "aided":
                    answer = study.path / "aided" / identity.replace(":", "-") / st.case_id / "prediction.json"
                    if not answer.is_file():
                        answer.parent.mkdir(parents=True)
                        answer.write_text(json.dumps({"model": {"run_dir": str(run)}}))
        if identity is not None:
            store.set_meta_once("model", identity)
    finally:
        store.close()
    return out


def synthetic_cohort(folder: Path, n: int = 30, malignant: int = 10, seed: int = 7) -> Path:
    """The truth table of a synthetic cohort (no images) as spinedx synth writes it: manifest + synth.json."""
    folder.mkdir(parents=True, exist_ok=True)
    df = sample_study_table(n, malignant, seed)
    df.insert(2, "synthetic", 1)
    df.to_csv(folder / "cohort.csv", index=False)
    (folder / "synth.json").write_text(json.dumps({"config": {"seed": seed, "n_patients": n}, "synthetic": True}))
    return folder / "cohort.csv"
