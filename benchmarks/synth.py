"""Benchmark: time to render the default synthetic cohort vs writing the same files blank.

Usage::

    .venv/bin/python benchmarks/synth.py                  # 190 patients (50 malignant), 2 workers
    .venv/bin/python benchmarks/synth.py --patients 40 --workers 2

The baseline writes, in the same run and with the same number of worker processes, the same
number of 512 x 512 DICOM files with the same headers but blank pixels (the I/O and pydicom
floor of any generator with these outputs). Goal of issue 3: 190 patients in under 2 minutes on
2 cores. Prints ``ratio <synth / blank>`` then ``RESULT synth_seconds_190 <seconds>`` (scaled to
190 patients when ``--patients`` differs).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _blank_patient(args: tuple[str, int, int]) -> int:
    from spinedx.synth.dicomwriter import write_series
    from spinedx.synth.scanner import COL_DIR, ROW_DIR, T1, T2

    out, index, n_slices = args
    pixels = np.zeros((n_slices, 512, 512), dtype=np.uint16)
    positions = [np.array([0.0, 0.0, 4.0 * k]) for k in range(n_slices)]
    info = {"id": f"SYN{index + 1:04d}", "sex": "F", "age": "70"}
    for spec in (T1, T2):
        write_series(Path(out) / f"dicom/{info['id']}/{spec.name}", pixels, spec, positions, ROW_DIR, COL_DIR, info, 0)
    return 2 * n_slices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=190)
    ap.add_argument("--malignant", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--difficulty", default="medium")
    args = ap.parse_args()
    n_mal = args.malignant if args.malignant is not None else round(args.patients * 50 / 190)

    from spinedx.synth import generate_cohort

    tmp = Path(tempfile.mkdtemp(prefix="spinedx_bench_synth_"))
    try:
        t0 = time.perf_counter()
        generate_cohort(tmp / "synth", args.patients, n_mal, seed=0, difficulty=args.difficulty,
                        workers=args.workers, progress=False)
        synth_s = time.perf_counter() - t0
        n_files = sum(1 for _ in (tmp / "synth" / "dicom").rglob("*.dcm"))
        mb = sum(p.stat().st_size for p in (tmp / "synth" / "dicom").rglob("*.dcm")) / 1e6
        shutil.rmtree(tmp / "synth")
        per_patient = max(1, round(n_files / (2 * args.patients)))
        t0 = time.perf_counter()
        jobs = [(str(tmp / "blank"), i, per_patient) for i in range(args.patients)]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            blank_files = sum(pool.map(_blank_patient, jobs))
        blank_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scaled = synth_s * 190 / args.patients
    print(f"patients {args.patients} workers {args.workers} difficulty {args.difficulty}")
    print(f"synth: {synth_s:.1f} s for {n_files} files ({mb:.0f} MB), {synth_s / args.patients:.3f} s/patient")
    print(f"blank: {blank_s:.1f} s for {blank_files} files (same headers, zero pixels)")
    print(f"ratio {synth_s / blank_s:.2f}")
    print(f"RESULT synth_seconds_190 {scaled:.1f}")


if __name__ == "__main__":
    main()
