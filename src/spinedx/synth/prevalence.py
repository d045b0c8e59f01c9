"""The one table of class-conditional feature prevalences of the synthetic cohort, with sources.

Every number that decides how often a feature appears in a simulated benign or malignant
fracture lives in :data:`PREVALENCE`. Where Yeh et al. (Eur Spine J 2022) give a number it is
used as is ("paper"); the paper's Table 1 is not reproduced in its text, so the other features
follow the direction reported in the literature (Jung et al., RadioGraphics 2003; Baur et al.,
Radiology 2002 for the fluid sign; Thawait et al., AJR 2012; Mauch et al., 2018) with values
chosen for the simulation ("literature direction"). Five features are kept non-discriminative,
as the paper reports 10 of 15 features with p <= 0.001 and names diffuse marrow replacement,
anteroposterior protrusion, non-wedged collapse and fractures at other levels as shared.

The marrow of the fractured body follows exactly one *pattern* (homogeneous, diffuse change,
band edema, or other focal/patchy change), so that homogeneous marrow excludes edema and
infiltration (paper: "no marrow edema or infiltration") and a band, by definition, is not a
change of more than 3/4 of the body. The benign pattern shares come from the paper's analysis of
the first-year resident's errors: homogeneous (6+42)/140, band edema (24+20)/140 and diffuse
change 31/140.
"""

from __future__ import annotations

from dataclasses import dataclass

from spinedx.features import FEATURE_NAMES


@dataclass(frozen=True)
class Prevalence:
    """Prevalence of one binary feature in each class.

    Args:
        benign: P(feature = 1 | benign).
        malignant: P(feature = 1 | malignant).
        source: where the numbers come from.
    """

    benign: float
    malignant: float
    source: str


PAPER = "paper (Yeh et al. 2022)"
LIT = "literature direction, value chosen for the simulation"

#: Class-conditional prevalences of the 15 features (order of :data:`spinedx.features.FEATURES`).
PREVALENCE: dict[str, Prevalence] = {
    "diffuse_signal_change": Prevalence(31 / 140, 44 / 50, PAPER + ": 31/140 benign, 44/50 malignant"),
    "homogeneous_marrow": Prevalence(48 / 140, 0.0, PAPER + ": R1 error analysis (6+42)/140 benign, 0% malignant"),
    "band_pattern_edema": Prevalence(
        44 / 140, 0.04, PAPER + ": R1 error analysis (24+20)/140 benign; malignant " + LIT + " (Cuenod 1996)"
    ),
    "dark_lines_bands": Prevalence(0.30, 0.0, PAPER + ": only in benign; benign value " + LIT),
    "irregular_dark_patches": Prevalence(0.10, 0.10, PAPER + ": 10% vs 10%"),
    "intravertebral_mass": Prevalence(0.03, 0.60, PAPER + ": rare in benign; values " + LIT + " (Jung 2003)"),
    "epidural_paraspinal_mass": Prevalence(0.04, 0.66, PAPER + ": rare in benign; values " + LIT + " (Jung 2003)"),
    "pedicle_posterior_involvement": Prevalence(
        0.06, 0.72, PAPER + ": rare in benign; values " + LIT + " (Jung 2003)"
    ),
    "convex_posterior_cortex": Prevalence(0.30, 0.45, PAPER + ": shared by both classes; values " + LIT),
    "non_wedged_collapse": Prevalence(0.40, 0.50, PAPER + ": shared by both classes; values " + LIT),
    "fluid_sign": Prevalence(0.35, 0.06, LIT + " (Baur 2002: ~40% osteoporotic vs ~6% neoplastic)"),
    "retropulsed_fragment": Prevalence(0.22, 0.04, LIT + " (Jung 2003)"),
    "skipped_nodular_lesions": Prevalence(0.02, 0.40, LIT + " (other spinal metastases)"),
    "other_level_fractures": Prevalence(0.35, 0.30, PAPER + ": not a specific sign; values " + LIT),
    "posterior_height_preserved": Prevalence(0.65, 0.55, LIT + "; non-discriminative in the simulation"),
}

assert tuple(PREVALENCE) == FEATURE_NAMES, "PREVALENCE must list the 15 features in spinedx.features order"

#: Marrow patterns of the fractured body; their shares equal the prevalences above.
MARROW_PATTERNS: tuple[str, ...] = ("homogeneous", "diffuse", "band", "focal")

#: Features that need non-homogeneous marrow (edema, infiltration, fluid): drawn with
#: P(f | not homogeneous) = P(f) / P(not homogeneous), which keeps the marginal of the table.
NEEDS_ABNORMAL_MARROW: tuple[str, ...] = ("intravertebral_mass", "fluid_sign")


def pattern_probabilities(label: int) -> dict[str, float]:
    """Shares of the marrow patterns in one class (0 benign, 1 malignant)."""
    key = "malignant" if label else "benign"
    p = {
        "homogeneous": getattr(PREVALENCE["homogeneous_marrow"], key),
        "diffuse": getattr(PREVALENCE["diffuse_signal_change"], key),
        "band": getattr(PREVALENCE["band_pattern_edema"], key),
    }
    p["focal"] = 1.0 - sum(p.values())
    if p["focal"] < -1e-9:
        raise ValueError(f"marrow pattern shares of class {key} exceed 1: {p}")
    p["focal"] = max(p["focal"], 0.0)
    return p


@dataclass(frozen=True)
class SignalDistribution:
    """Signal of the abnormal marrow in one class: independent normals on T1W and T2W.

    Relative units of :data:`spinedx.synth.phantom.TISSUES` (subcutaneous fat on T1W = 1; normal
    fatty marrow about 0.72 on T1W and 0.55 on T2W).

    Args:
        t1_mean, t1_sd: T1W signal of the abnormal marrow.
        t2_mean, t2_sd: T2W signal.
        source: where the numbers come from.
    """

    t1_mean: float
    t1_sd: float
    t2_mean: float
    t2_sd: float
    source: str


#: Signal of the abnormal marrow (edema, hemorrhage or tumour replacement) of the fractured body by class:
#: the label reaches the lesion's pixels only through this latent draw, and the two classes overlap.
#: Direction from the literature (benign acute fracture: T1W hypointense edema, T2W bright; metastatic
#: replacement: T1W more hypointense, T2W less bright; Jung 2003, Cuenod 1996), values chosen for the
#: simulation so that the signal alone separates the classes only partly.
LESION_SIGNAL: dict[str, SignalDistribution] = {
    "benign": SignalDistribution(0.32, 0.07, 0.75, 0.10, LIT + " (edema/hemorrhage; Cuenod 1996, Jung 2003)"),
    "malignant": SignalDistribution(0.25, 0.07, 0.66, 0.10, LIT + " (marrow replacement; Jung 2003)"),
}

#: Extent of the abnormal marrow given the pattern (the same in both classes, so it carries no label
#: information beyond the pattern): fraction of the body for ``diffuse``, band thickness (mm) for ``band``,
#: radius (mm) of the patch for ``focal``; uniform between the two values.
PATTERN_EXTENT: dict[str, tuple[float, float]] = {
    "homogeneous": (0.0, 0.0),
    "diffuse": (0.75, 1.0),
    "band": (5.0, 11.0),
    "focal": (5.0, 9.0),
}


#: Reader operating points of the paper (Table 2 / Results): (sensitivity, specificity).
READER_OPERATING_POINTS: dict[str, tuple[float, float]] = {
    "reader_senior": (0.94, 0.99),
    "reader_r4": (0.94, 0.96),
    "reader_r1": (0.78, 0.61),
}

#: First-year resident's false positives by marrow pattern of the benign fracture (paper, "Error
#: analysis in R1 resident's diagnosis"): homogeneous 6 FP of 48, diffuse 20 of 31, band 24 of 44;
#: the remaining 4 of the 54 FP among the 17 benign cases with other (focal) change.
R1_FALSE_POSITIVE_BY_PATTERN: dict[str, float] = {
    "homogeneous": 6 / 48,
    "diffuse": 20 / 31,
    "band": 24 / 44,
    "focal": 4 / 17,
}
