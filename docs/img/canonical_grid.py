"""Make docs/img/canonical_grid.png: spinedx's canonical image grid on a real sample (docs/io.md).

Run from the repository root: ``.venv/bin/python docs/img/canonical_grid.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from spinedx.io import read_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO.parent / "shared" / "data" / "real" / "sct_tutorial_data_t2_lumbar" / "t2_lumbar.nii.gz"
BOX, SLICE = (138, 132, 174, 168), 27  # x0, y0, x1, y1 (half-open) of a lumbar vertebral body, its slice


def main() -> None:
    img = read_image(SAMPLE)
    nii = nib.load(SAMPLE)
    stored = np.asarray(nii.dataobj)[SLICE]  # file axes 1 (A, towards anterior) and 2 (S, towards the head)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11.5, 5.6), gridspec_kw={"width_ratios": [1, 1.28]})

    ax0.imshow(stored.T, cmap="gray", origin="upper")
    ax0.set_title(f"as stored in {SAMPLE.name}\n(axis codes {''.join(nib.aff2axcodes(nii.affine))}; "
                  f"array[{SLICE}, :, :] transposed)", fontsize=9)
    ax0.set_xlabel("file axis 1 (towards anterior)", fontsize=8)
    ax0.set_ylabel("file axis 2 (towards the head)", fontsize=8)
    ax0.tick_params(labelsize=7)

    plane = img.array[SLICE]
    ax1.imshow(plane, cmap="gray", origin="upper")
    x0, y0, x1, y1 = BOX
    ax1.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="#ffb000", lw=1.6))
    ax1.annotate(f"box x0,y0,x1,y1 = {x0},{y0},{x1},{y1}\n(x = column j, y = row i, half-open)",
                 (x0, y1), xytext=(12, y1 + 25), color="#ffb000", fontsize=8,
                 arrowprops={"arrowstyle": "->", "color": "#ffb000"})
    ax1.plot([0], [0], "o", color="#36c", ms=5)
    ax1.annotate("voxel (k, 0, 0):\nhead, anterior", (0, 0), xytext=(12, 22), color="#6af", fontsize=8)
    ax1.set_title(f"spinedx canonical grid: img.array[k={SLICE}] of {img.n_slices} "
                  "(k: patient's left -> right)", fontsize=9)
    ax1.set_xlabel("column j (x) ->  anterior -> posterior", fontsize=9)
    ax1.set_ylabel("row i (y) ->  head -> feet", fontsize=9)
    ax1.tick_params(labelsize=7)
    h, w = plane.shape
    for (tx, ty, label) in ((w / 2, 8, "H (head)"), (w / 2, h - 9, "F (feet)"), (10, h / 2, "A"), (w - 10, h / 2, "P")):
        ax1.text(tx, ty, label, color="#ff5050", fontsize=10, fontweight="bold", ha="center", va="center")
    fig.suptitle("Boxes and lesion slices refer to the canonical grid: the grid of ImageOrientationPatient "
                 "[0,1,0,0,0,-1] with slices ordered along its normal", fontsize=10)
    fig.tight_layout()
    out = REPO / "docs" / "img" / "canonical_grid.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
