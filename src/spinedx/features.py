"""The 15 binary imaging features scored by the senior reader (the paper's Table 1).

The paper names its features only in part; this list completes them from the paper's text
and the literature (Jung et al. 2003, Thawait et al. 2012, Mauch et al. 2018). Manifest
columns are ``feature_<name>`` with values 0/1. The order here is the order of Table 1.
"""

from __future__ import annotations

# The label map is defined once in spinedx.common; re-exported here for the manifest and statistics code.
from spinedx.common import LABELS

__all__ = ["FEATURES", "FEATURE_COLUMNS", "FEATURE_NAMES", "LABELS", "READER_COLUMNS"]

FEATURES: dict[str, str] = {
    "diffuse_signal_change": "Diffuse signal change of the vertebral body > 3/4",
    "homogeneous_marrow": "Homogeneous marrow signal (no marrow edema or infiltration)",
    "band_pattern_edema": "Band-pattern bone marrow edema",
    "dark_lines_bands": "Intravertebral dark lines or bands",
    "irregular_dark_patches": "Irregular dark patches",
    "intravertebral_mass": "Intravertebral mass-like or nodular lesion",
    "epidural_paraspinal_mass": "Epidural/paraspinal soft-tissue mass",
    "pedicle_posterior_involvement": "Pedicle and posterior element involvement",
    "convex_posterior_cortex": "Convex posterior cortex (anteroposterior protrusion)",
    "non_wedged_collapse": "Non-wedged collapse (central concave or whole-body compression)",
    "fluid_sign": "Fluid sign or necrotic cleft",
    "retropulsed_fragment": "Retropulsed posterior fragment",
    "skipped_nodular_lesions": "Coexisting skipped nodular marrow replacement in other vertebrae",
    "other_level_fractures": "Fracture or collapse at other levels",
    "posterior_height_preserved": "Posterior vertebral height preserved",
}

FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)
FEATURE_COLUMNS: tuple[str, ...] = tuple(f"feature_{n}" for n in FEATURES)

#: Simulated readers of the synthetic cohort, most to least experienced (the paper's three readers).
READER_COLUMNS: tuple[str, ...] = ("reader_senior", "reader_r4", "reader_r1")

