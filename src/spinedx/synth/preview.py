"""Contact sheet of a synthetic cohort: mid-lesion T1W/T2W crops of benign and malignant cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinedx.cohort import parse_box, parse_slices
from spinedx.io.dicom import read_dicom_series


def _slice(folder: Path, index: int) -> np.ndarray:
    """Slice ``index`` (0-based along the slice normal) of a DICOM series folder."""
    return read_dicom_series(folder).array[index]


def contact_sheet(cohort_dir: str | Path, out_png: str | Path, per_class: int = 6) -> Path:
    """Write a PNG grid: for up to ``per_class`` benign and malignant patients, the T1W and T2W
    crop of the manifest box on the middle lesion slice, labelled with id, label and level.

    The T1W crop uses the T2 box through the shared scanner geometry without registration, so
    the patient motion between the series (a few mm) shows as a small offset.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohort_dir = Path(cohort_dir)
    df = pd.read_csv(cohort_dir / "cohort.csv")
    picks = pd.concat([df[df.label == "benign"].head(per_class), df[df.label == "malignant"].head(per_class)])
    n = len(picks)
    cols = 4
    rows = max(1, int(np.ceil(n * 2 / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.6))
    axes = np.atleast_2d(axes)
    for ax in axes.ravel():
        ax.axis("off")
    for n_i, (_, r) in enumerate(picks.iterrows()):
        k = parse_slices(str(r.lesion_slices))[1]
        x0, y0, x1, y1 = parse_box(str(r.box))
        for s_i, key in enumerate(("t1", "t2")):
            img = _slice(cohort_dir / r[key], k)[y0:y1, x0:x1]
            ax = axes.ravel()[n_i * 2 + s_i]
            ax.imshow(img, cmap="gray", vmin=0, vmax=np.percentile(img, 99.5))
            colour = "tab:red" if r.label == "malignant" else "tab:blue"
            ax.set_title(f"{r.patient_id} {key.upper()}\n{r.label} {r.get('level', '')}", fontsize=7, color=colour)
    fig.suptitle("spinedx synthetic cohort (no real patient): mid-lesion crops", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
