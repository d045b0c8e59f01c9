"""Draw docs/img/synth_causal_chain.png: the causal chain of the synthetic cohort (docs/synth.md).

Usage: ``.venv/bin/python docs/scripts/synth_causal_chain.py`` (writes the PNG beside docs/synth.md's images).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parents[1] / "img" / "synth_causal_chain.png"


def box(ax, x, y, w, h, title, body, colour):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.02", fc=colour, ec="#333",
                                lw=1.2))
    ax.text(x + w / 2, y + h - 0.035, title, ha="center", va="top", fontsize=10.5, weight="bold")
    ax.text(x + 0.02, y + h - 0.09, body, ha="left", va="top", fontsize=8.2, linespacing=1.35)


def arrow(ax, a, b, text="", style="-|>", colour="#333", ls="-", offset=(0, 0.015)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=16, lw=1.6, color=colour, linestyle=ls))
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center", va="bottom",
                fontsize=8, color=colour, style="italic")


def main() -> None:
    fig, ax = plt.subplots(figsize=(14, 6.4))
    ax.set_xlim(0, 1.40)
    ax.set_ylim(0, 0.64)
    ax.axis("off")
    box(ax, 0.03, 0.25, 0.15, 0.14, "label", "benign / malignant\n(50 of 190 malignant)", "#f2d7d5")
    box(ax, 0.26, 0.08, 0.36, 0.50, "visible latent lesion variables",
        "drawn from label-conditional distributions\nthat overlap between the classes:\n\n"
        "- marrow pattern: homogeneous, diffuse,\n  band, focal (Table 1 shares)\n"
        "- 12 other features (Table 1 prevalences):\n  dark lines, patches, mass, epidural mass,\n"
        "  pedicles, cortex, collapse, fluid, fragment,\n  skipped nodules, other fractures, post. wall\n"
        "- abnormal-marrow signal on T1W and T2W\n  (overlapping normals by class)\n"
        "- extent (given the pattern only)\n- fracture shape (from two features)", "#fcf3cf")
    box(ax, 0.71, 0.36, 0.28, 0.22, "image (DICOM)",
        "phantom rendered from the latents\n+ label-free anatomy, level,\n  height loss, coil bias, motion,\n"
        "  Rician noise, zero-filling\n+ lesion mask (same latents)", "#d6eaf8")
    box(ax, 0.71, 0.06, 0.30, 0.22, "simulated readers",
        "evidence E = gamma S(latents) + b\n(R1: own bias per marrow pattern)\ncall malignant if E + noise > 0\n"
        "calibrated to the paper's\nsensitivity / specificity", "#d5f5e3")
    box(ax, 1.10, 0.36, 0.26, 0.22, "model, probes",
        "patches from the image;\nthe label only as the\ntraining target", "#e8daef")
    box(ax, 1.10, 0.06, 0.26, 0.22, "difficulty",
        "easy / medium / hard:\nhow faithfully the latents\nare rendered (contrast, detail,\n"
        "separation, noise, texture,\nlabel-free red-marrow mottle)", "#eaeded")
    arrow(ax, (0.18, 0.32), (0.26, 0.32), "P(latents\n| label)", offset=(-0.005, 0.012))
    arrow(ax, (0.63, 0.47), (0.71, 0.47), "renders")
    arrow(ax, (0.63, 0.17), (0.71, 0.17), "seen by")
    arrow(ax, (0.99, 0.47), (1.10, 0.47), "patches")
    arrow(ax, (1.10, 0.25), (0.99, 0.38), colour="#777", ls="--")
    ax.text(0.105, 0.21, "the label reaches the image\nand the readers only\nthrough the latents", ha="center",
            va="top", fontsize=8.5, color="#922b21")
    ax.set_title("spinedx synthetic cohort: causal chain (no pixel and no reader call is set from the label)",
                 fontsize=11.5)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
