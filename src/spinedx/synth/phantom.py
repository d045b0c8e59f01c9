"""Analytic thoracolumbar spine phantom, evaluated at any physical point, for T1W and T2W.

The anatomy is a function of the LPS position (mm) so that two series with different matrices
and a rigid motion between them see exactly the same patient. Coordinates along the spine: a
smooth centre line ``y_c(z)`` of the vertebral bodies (kyphosis/lordosis by the seed) gives for
each point the arc position ``s`` and the antero-posterior offset ``u`` (positive posterior).
Vertebral bodies are stacked along ``s`` with discs between them; posterior structures (canal
with CSF and cord, pedicles, laminae, spinous processes, muscle, subcutaneous fat) follow ``u``.

Signal values are relative (subcutaneous fat on T1W = 1) and follow the usual appearance at
1.5 T (the paper's spin-echo T1W and non-fat-saturated FSE T2W): fat bright on both, CSF dark on
T1W and bright on T2W, edema dark on T1W and bright on T2W, cortex and flow voids dark on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from spinedx.synth.prevalence import LESION_SIGNAL
from spinedx.synth.study import STREAM_ANATOMY, patient_rng

#: Relative signal (T1W, T2W) of each tissue before per-patient jitter.
TISSUES: dict[str, tuple[float, float]] = {
    "air": (0.0, 0.0),
    "fat": (1.0, 0.85),
    "skin": (0.45, 0.35),
    "muscle": (0.33, 0.22),
    "marrow": (0.72, 0.55),
    "red_marrow": (0.40, 0.45),  # hematopoietic (red) marrow islands: darker than fatty marrow on both
    "cortex": (0.06, 0.05),
    "nucleus": (0.36, 0.78),
    "annulus": (0.30, 0.22),
    "csf": (0.14, 0.98),
    "cord": (0.42, 0.42),
    "ligament": (0.10, 0.08),
    "flow_void": (0.06, 0.05),
    "viscera": (0.42, 0.40),
    "lung": (0.04, 0.04),
    "root": (0.30, 0.30),
    # lesion signals. The abnormal marrow of the fractured body has its own per-patient latent signal
    # (study.sample_latents, "signal"); the tissues below are the fixed signals of feature-driven structures,
    # chosen by a feature, never by the label.
    "tumour": (0.22, 0.62),  # skipped nodular lesions in other vertebrae (a feature)
    "dark": (0.08, 0.08),  # impacted trabeculae, sclerosis
    "mass": (0.18, 0.74),
    "fluid": (0.12, 1.0),
    "soft_mass": (0.34, 0.60),  # epidural/paraspinal soft tissue
}

#: Reference of the abnormal-marrow signal (T1W, T2W): midway between the two classes' means, a constant.
#: ``separation`` scales each patient's latent signal about it (label-free: the same for every patient).
LESION_REFERENCE: tuple[float, float] = (
    (LESION_SIGNAL["benign"].t1_mean + LESION_SIGNAL["malignant"].t1_mean) / 2,
    (LESION_SIGNAL["benign"].t2_mean + LESION_SIGNAL["malignant"].t2_mean) / 2,
)

#: What each ``--difficulty`` level changes in the rendering (the truth is the same at all levels). Tuned on
#: development seeds only (spinedx.synth.seeds.TUNING_SEEDS; docs/synth.md, "How much of the label ...").
DIFFICULTY: dict[str, dict[str, float]] = {
    # contrast: fraction of the signal difference from normal tissue that is rendered for the features that
    # change an area (the marrow pattern's abnormal marrow, intravertebral mass, epidural/paraspinal soft
    # tissue, involved pedicles, skipped nodules); detail: the same for the thin ones (dark lines, irregular
    # dark patches, fluid cleft); separation: fraction of a patient's latent abnormal-marrow signal's
    # deviation from LESION_REFERENCE that is rendered (1 = the latent as drawn, 0 = the reference for
    # everyone); noise: Rician sigma relative to fat; texture: amplitude of the nonspecific fine marrow
    # heterogeneity (and patient-to-patient spread of normal marrow signal); mottle: largest amplitude of the
    # label-free patchy red/fatty marrow of every vertebral body (each patient draws 20-100% of it).
    "easy": {"contrast": 1.0, "detail": 1.0, "separation": 1.0, "noise": 0.025, "texture": 0.04, "mottle": 0.0},
    "medium": {"contrast": 0.3, "detail": 0.8, "separation": 0.75, "noise": 0.035, "texture": 0.1, "mottle": 1.0},
    "hard": {"contrast": 0.2, "detail": 0.4, "separation": 0.3, "noise": 0.07, "texture": 0.12, "mottle": 1.0},
}

#: Vertebral levels from caudal to cranial with typical body height, AP depth, half-width and disc
#: thickness below (mm), after published morphometry (rounded).
LEVELS: tuple[tuple[str, float, float, float, float], ...] = (
    ("S1", 24.0, 36.0, 24.0, 10.0),
    ("L5", 27.0, 36.0, 25.0, 11.0),
    ("L4", 27.5, 36.0, 24.0, 10.5),
    ("L3", 27.5, 35.0, 23.0, 10.0),
    ("L2", 27.0, 34.0, 22.0, 9.0),
    ("L1", 26.0, 32.0, 21.0, 8.0),
    ("T12", 24.5, 30.0, 20.0, 7.0),
    ("T11", 23.0, 28.5, 19.0, 6.0),
    ("T10", 22.0, 27.0, 18.0, 5.5),
    ("T9", 21.0, 26.0, 17.0, 5.0),
    ("T8", 20.5, 25.0, 16.5, 5.0),
    ("T7", 20.0, 24.5, 16.0, 4.5),
    ("T6", 19.5, 24.0, 15.5, 4.5),
    ("T5", 19.0, 23.0, 15.0, 4.5),
)


@dataclass
class Anatomy:
    """All numbers that define one patient's phantom (sampled once, rendered many times)."""

    names: list[str]
    s_c: np.ndarray  # centre of each body along the spine (ascending = cranial)
    height: np.ndarray
    depth: np.ndarray
    width: np.ndarray
    bounds: np.ndarray  # mid-disc boundaries between consecutive levels (len n-1)
    curve: tuple[float, float, float, float]  # z_ref, y0, c1, c2 of y_c(z) = y0 + c1 dz + c2 dz^2
    lesion: int  # index of the fractured level
    canal: float
    muscle: float
    fat: float
    s_conus: float
    s_diaphragm: float
    nucleus_t2: np.ndarray  # per-disc nucleus T2 (degeneration)
    signal: dict[str, tuple[float, float]]
    texture: tuple[np.ndarray, np.ndarray]  # wave vectors (k, 3) rad/mm, phases (k,)
    lesion_params: dict[str, Any] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    difficulty: dict[str, float] = field(default_factory=dict)
    mottle: tuple[np.ndarray, np.ndarray, float] = (np.zeros((0, 3)), np.zeros(0), 0.0)  # waves, phases, amplitude

    def lesion_centre(self) -> np.ndarray:
        """LPS point (mm) at the centre of the fractured body (midline), in the anatomy frame."""
        s = float(self.s_c[self.lesion])
        z_ref, y0, c1, c2 = self.curve
        dz = s - z_ref
        return np.array([0.0, y0 + c1 * dz + c2 * dz * dz, s])


def sample_anatomy(seed: int, index: int, truth: dict[str, Any], difficulty: str) -> Anatomy:
    """Draw one patient's anatomy and the geometry of its fracture and features."""
    rng = patient_rng(seed, index, STREAM_ANATOMY)
    diff = DIFFICULTY[difficulty]
    names = [lv[0] for lv in LEVELS]
    scale = float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.12))
    h = np.array([lv[1] for lv in LEVELS]) * scale * rng.normal(1.0, 0.03, len(LEVELS))
    d = np.array([lv[2] for lv in LEVELS]) * scale * rng.normal(1.0, 0.03, len(LEVELS))
    w = np.array([lv[3] for lv in LEVELS]) * scale
    disc = np.array([lv[4] for lv in LEVELS]) * scale * rng.uniform(0.6, 1.1, len(LEVELS))  # older: thinner discs
    lesion = names.index(truth["level"])
    # stack from S1 upwards; the lesion centre sits near z = 0
    s_c = np.zeros(len(LEVELS))
    for i in range(1, len(LEVELS)):
        s_c[i] = s_c[i - 1] + h[i - 1] / 2 + disc[i - 1] + h[i] / 2
    s_c -= s_c[lesion] + rng.uniform(-40, 40)
    bounds = np.array([s_c[i] + h[i] / 2 + disc[i] / 2 for i in range(len(LEVELS) - 1)])
    # centre line: lordosis below ~L1, kyphosis above, via a quadratic around the lesion
    curve = (0.0, rng.uniform(-6, 6), rng.uniform(-0.07, 0.07), rng.uniform(-0.0005, 0.0003))

    texture_amp = diff["texture"]
    sig = {k: (float(v[0]), float(v[1])) for k, v in TISSUES.items()}
    m1 = 0.72 + rng.normal(0, texture_amp * 0.8)  # fatty marrow of the elderly varies
    m2 = 0.55 + rng.normal(0, texture_amp * 0.6)
    sig["marrow"] = (m1, m2)
    for k in ("muscle", "fat", "csf", "viscera", "annulus"):
        sig[k] = (sig[k][0] * rng.normal(1, 0.05), sig[k][1] * rng.normal(1, 0.05))
    # the abnormal marrow's signal is the patient's latent draw (never the label), rendered about a fixed
    # reference with the difficulty's separation
    sep = diff["separation"]
    ref = np.array(LESION_REFERENCE)
    lesion_sig = ref + sep * (np.array(truth["signal"]) - ref)
    sig["lesion"] = (float(lesion_sig[0]), float(lesion_sig[1]))

    n_waves = 16
    dirs = rng.normal(size=(n_waves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    waves = dirs * (2 * np.pi / rng.uniform(2.5, 12.0, (n_waves, 1)))
    phases = rng.uniform(0, 2 * np.pi, n_waves)

    f = truth["features"]
    hl = truth["height_loss"]
    lp: dict[str, Any] = {
        "shape": truth["shape"], "loss": hl * h[lesion],
        "post_loss": (0.02 if f["posterior_height_preserved"] else rng.uniform(0.2, 0.3)) * h[lesion],
        "top_share": rng.uniform(0.6, 1.0),
        "bulge": rng.uniform(2.5, 4.0) if f["convex_posterior_cortex"] else -0.8,
        "pattern": truth["pattern"],
        "extent": truth["extent"],
        "focal_centres": rng.uniform([-0.35, -0.3, -4], [0.35, 0.3, 4], (2, 3)),
        "line_depth": rng.uniform(2.5, 5.0),
        "patches": rng.uniform([-0.35, -0.35, -8], [0.35, 0.35, 8], (int(rng.integers(2, 5)), 3)),
        "patch_r": rng.uniform(2.0, 3.5, 4),
        "mass_centre": rng.uniform([-0.15, -0.2, -3], [0.15, 0.25, 3]),
        "mass_r": rng.uniform(6.0, 9.0),
        "fluid_len": rng.uniform(0.4, 0.7),
        "fluid_thick": rng.uniform(1.5, 3.0),
        "frag": rng.uniform(3.0, 5.0),
        "epi_len": rng.uniform(0.6, 1.0), "epi_thick": rng.uniform(4.0, 7.0), "epi_ant": rng.random() < 0.5,
    }
    lp.update({name: int(v) for name, v in f.items()})
    others: dict[str, Any] = {"nodules": [], "old_fracture": None}
    cand = [i for i in range(len(LEVELS)) if abs(i - lesion) >= 1 and abs(s_c[i]) < 140]
    if f["skipped_nodular_lesions"] and cand:
        for i in rng.choice(cand, size=min(len(cand), int(rng.integers(1, 4))), replace=False):
            others["nodules"].append((int(i), rng.uniform([-0.3, -0.25, -6], [0.3, 0.25, 6]), rng.uniform(4.0, 7.0)))
    cand2 = [i for i in cand if abs(i - lesion) >= 2]
    if f["other_level_fractures"] and cand2:
        others["old_fracture"] = (int(rng.choice(cand2)), rng.uniform(0.12, 0.25))

    # label-free mottled marrow of the elderly spine (patchy red/fatty marrow in every body); its amplitude is
    # the difficulty's ``mottle`` times a per-patient share
    km = 8
    mdirs = rng.normal(size=(km, 3))
    mdirs /= np.linalg.norm(mdirs, axis=1, keepdims=True)
    mottle = (mdirs * (2 * np.pi / rng.uniform(10.0, 25.0, (km, 1))), rng.uniform(0, 2 * np.pi, km),
              float(diff.get("mottle", 0.0) * rng.uniform(0.2, 1.0)))
    return Anatomy(
        names=names, s_c=s_c, height=h, depth=d, width=w, bounds=bounds, curve=curve, lesion=lesion,
        canal=rng.uniform(13.0, 17.0), muscle=rng.uniform(45.0, 65.0), fat=rng.uniform(8.0, 30.0),
        s_conus=float(s_c[names.index("L1")] - rng.uniform(0, 15)),
        s_diaphragm=float(s_c[names.index("T12")] + rng.uniform(-10, 30)),
        nucleus_t2=rng.uniform(0.3, 1.0, len(LEVELS)), signal=sig, texture=(waves, phases), lesion_params=lp,
        others=others, difficulty=dict(diff), mottle=mottle,
    )


def _collapse(an: np.ndarray, lp: dict[str, Any]) -> np.ndarray:
    """Height lost (mm) across the body at relative AP position ``an`` (0 anterior, 1 posterior)."""
    a = np.clip(an, 0.0, 1.0)
    loss, post = lp["loss"], lp["post_loss"]
    if lp["shape"] == "wedge":
        return loss * (1 - a) + post * a
    if lp["shape"] == "concave":
        return post + (loss - post) * np.clip(np.sin(np.pi * a), 0.0, None) ** 0.8
    return np.full_like(a, loss)  # crush: whole-body compression


def _texture(anat: Anatomy, p: np.ndarray) -> np.ndarray:
    """Smooth random field (mean 0, sd ~1) in the anatomy frame, the same for T1W and T2W."""
    waves, phases = anat.texture
    return np.cos(p @ waves.T + phases).sum(axis=1) * np.sqrt(2.0 / len(phases))


def _blob(dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, r: float, tex: np.ndarray | float) -> np.ndarray:
    """Irregular round lesion of radius ~r (mm): the texture roughens its margin."""
    return (dx * dx + dy * dy + dz * dz) < (r * (1 + 0.18 * tex)) ** 2


class Rendered(NamedTuple):
    """What :func:`evaluate` gives for a set of points.

    Attributes:
        signal: relative signal (N,) float32.
        body: bool (N,): the point lies in the fractured vertebral body (cortex included).
        lesion: bool (N,): the point lies in the lesion, the region whose signal carries the
            evidence (see :func:`_render_lesion`); the same for T1W and T2W.
    """

    signal: np.ndarray
    body: np.ndarray
    lesion: np.ndarray


def evaluate(anat: Anatomy, p: np.ndarray, channel: int) -> Rendered:
    """Signal at LPS points ``p`` (N, 3) in the anatomy frame.

    Args:
        anat: the phantom.
        p: points in mm (float32 is enough and twice as fast).
        channel: 0 for T1W, 1 for T2W.

    Returns:
        The signal and the masks of the fractured body and of its lesion (:class:`Rendered`).
    """
    sig = {k: v[channel] for k, v in anat.signal.items()}
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    z_ref, y0, c1, c2 = anat.curve
    dz = z - np.float32(z_ref)
    slope = np.float32(c1) + np.float32(2 * c2) * dz
    cos = 1.0 / np.sqrt(1 + slope * slope)
    r = y - (np.float32(y0) + np.float32(c1) * dz + np.float32(c2) * dz * dz)
    s = z + r * slope * cos
    u = r * cos
    dsm = np.interp(s, anat.s_c, anat.depth).astype(np.float32)
    out = np.zeros(len(p), dtype=np.float32)

    # ---- body wall, fat, muscle, air (every point) --------------------------------------------
    u_canal0 = dsm / 2 + 1.5
    u_arch = u_canal0 + np.float32(anat.canal)
    u_muscle_end = u_arch + np.float32(anat.muscle)
    u_skin = u_muscle_end + np.float32(anat.fat)
    out[u < u_skin] = sig["fat"]
    out[(u >= u_skin) & (u < u_skin + 2.0)] = sig["skin"]
    out[(u >= u_arch) & (u < u_muscle_end)] = sig["muscle"]
    # anterior: viscera below the diaphragm, lungs above, with retroperitoneal/mediastinal fat
    ant = u < -dsm / 2 - 12
    out[ant & (s < anat.s_diaphragm)] = sig["viscera"]
    out[ant & (s >= anat.s_diaphragm) & (u < -dsm / 2 - 25)] = sig["lung"]

    # ---- the spine and what lies close to it: only a band of points, for speed ----------------
    roi = np.flatnonzero((u > -dsm / 2 - 30) & (u < u_arch + 40))
    lesion_body = np.zeros(len(p), dtype=bool)
    lesion = np.zeros(len(p), dtype=bool)
    sub_out = out[roi]
    lb, le = _evaluate_spine(anat, sig, p[roi], x[roi], s[roi], u[roi], dsm[roi], sub_out, channel)
    out[roi] = sub_out
    lesion_body[roi] = lb
    lesion[roi] = le
    return Rendered(out, lesion_body, lesion)


def _evaluate_spine(
    anat: Anatomy, sig: dict[str, float], p: np.ndarray, x: np.ndarray, s: np.ndarray, u: np.ndarray,
    dsm: np.ndarray, out: np.ndarray, channel: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertebrae, discs, canal, posterior elements, vessels and lesions, painted into ``out``.

    Returns:
        The masks of the fractured body and of its lesion over the given points.
    """
    ax = np.abs(x)
    idx = np.searchsorted(anat.bounds, s)
    t = s - anat.s_c[idx].astype(np.float32)
    h = anat.height[idx].astype(np.float32)
    dd = anat.depth[idx].astype(np.float32)
    ww = anat.width[idx].astype(np.float32)
    an = (u + dd / 2) / dd
    u_canal0 = dsm / 2 + 1.5
    u_arch = u_canal0 + np.float32(anat.canal)
    # psoas beside the lumbar bodies
    psoas = (s < anat.s_c[anat.names.index("T12")]) & (ax > 0.8 * ww) & (u > -dsm / 2 - 10) & (u < dsm / 2)
    out[psoas] = sig["muscle"]
    # aorta (left of midline) as a flow void in front of the spine
    aorta = ((x - 14.0) ** 2 + (u + dsm / 2 + 12.0) ** 2 < 11.0**2) & (s > anat.s_c[anat.names.index("L4")])
    out[aorta] = sig["flow_void"]

    # ---- canal ------------------------------------------------------------------------------
    canal = (u >= u_canal0) & (u < u_arch) & (ax < 11.0)
    out[canal] = sig["fat"]  # epidural fat
    u_sac0, u_sac1 = u_canal0 + 1.0, u_arch - 1.5
    sac = canal & (u >= u_sac0) & (u < u_sac1) & (ax < 8.5)
    out[sac] = sig["csf"]
    u_mid = (u_sac0 + u_sac1) / 2
    r_cord = 4.2 * np.clip((s - anat.s_conus) / 15.0, 0, 1) ** 0.5
    cord = sac & ((x / 1.3) ** 2 + (u - u_mid) ** 2 < r_cord * r_cord)
    out[cord] = sig["cord"]
    roots = sac & (s < anat.s_conus) & (np.abs(u - (u_sac1 - 2.5)) < 1.6) & (np.abs((x + 40) % 4.0 - 2) < 0.6)
    out[roots] = sig["root"]
    pll = (u >= dsm / 2) & (u < u_canal0) & (ax < 12.0)
    out[pll] = sig["ligament"]

    # ---- posterior elements ----------------------------------------------------------------
    tn = t / h
    ped = (ax > 10.0) & (ax < 18.0) & (u >= dsm / 2) & (u < u_arch) & (tn > -0.05) & (tn < 0.45)
    foramen = (ax > 10.0) & (ax < 18.0) & (u >= dsm / 2) & (u < u_arch) & ~ped
    out[foramen] = sig["fat"]
    root_lat = foramen & ((u - (dsm / 2 + 0.5 * anat.canal)) ** 2 + ((tn - 0.62) * h) ** 2 < 3.0**2)
    out[root_lat] = sig["root"]
    lam = (ax >= 4.0) & (ax < 17.0) & (u >= u_arch) & (u < u_arch + 10.0) & (tn > -0.35) & (tn < 0.40)
    tc = -0.1 - (u - u_arch) * 0.012
    spin = (ax < 4.0) & (u >= u_arch) & (u < u_arch + 38.0) & (np.abs(tn - tc) < 0.22 - (u - u_arch) * 0.002)
    interspin = (ax < 4.0) & (u >= u_arch) & (u < u_arch + 30.0) & ~spin
    out[interspin] = sig["ligament"] * 0.5 + sig["fat"] * 0.5
    post_bone = ped | lam | spin
    out[post_bone] = sig["marrow"]
    # cortex of the posterior elements: a thin shell found from the neighbouring masks' margins
    edge = post_bone & (
        (np.abs(tn - 0.45) * h < 1.2) | (np.abs(tn + 0.05) * h < 1.2) | (np.abs(u - u_arch) < 1.0)
        | (np.abs(tn - tc) > 0.17 - (u - u_arch) * 0.002) & spin
    )
    out[edge] = sig["cortex"]
    lf = (ax < 10.0) & (u >= u_arch - 2.5) & (u < u_arch) & (tn < -0.35)  # ligamentum flavum
    out[lf] = sig["ligament"] * 0.7 + sig["muscle"] * 0.3

    # ---- vertebral bodies and discs -------------------------------------------------------
    is_les = idx == anat.lesion
    lp = anat.lesion_params
    loss = np.where(is_les, 0.0, 0.6 * np.sin(np.pi * np.clip(an, 0, 1)))  # mild natural concavity
    if is_les.any():
        loss[is_les] = _collapse(an[is_les], lp)
    top_share = np.where(is_les, lp["top_share"], 0.5)
    old = anat.others["old_fracture"]
    if old is not None:
        is_old = idx == old[0]
        loss[is_old] = old[1] * anat.height[old[0]] * (1 - np.clip(an[is_old], 0, 1))
        top_share = np.where(is_old, 1.0, top_share)
    top = h / 2 - loss * top_share
    bot = -h / 2 + loss * (1 - top_share) + 0.0
    tt = np.clip(t / (h / 2), -1, 1)
    bulge = np.where(is_les, lp["bulge"], -0.8) * (1 - tt * tt)
    u_post = dd / 2 + bulge
    # axial cross-section of a body: a rounded (super-elliptic) kidney, so the mid-sagittal slice
    # is the widest and lateral slices cut a shorter AP extent
    a2 = np.abs(2 * np.clip(an, 0, 1) - 1)
    wx = ww * np.clip(1 - a2**2.5, 0, None) ** 0.4
    column = (u >= -dd / 2) & (u <= np.maximum(u_post, dd / 2 + 0.8)) & (ax <= wx)
    body = column & (t <= top) & (t >= bot) & (u <= u_post)
    disc = column & ~body & ~((t <= top) & (t >= bot))
    d_disc = np.abs(u) < 0.32 * dd
    nucleus = disc & d_disc & (ax < 0.6 * ww)
    out[disc] = sig["annulus"]
    out[nucleus] = (sig["nucleus"] if channel == 0
                    else anat.nucleus_t2[np.clip(idx, 0, len(anat.nucleus_t2) - 1)][nucleus])
    dmin = np.minimum(np.minimum(t - bot, top - t), np.minimum(u + dd / 2, u_post - u))
    dmin = np.minimum(dmin, wx - ax)
    cortex = body & (dmin < 1.3)
    marrow = body & ~cortex
    im = np.flatnonzero(marrow)
    tex = _texture(anat, p[im])
    amp = anat.difficulty["texture"]
    out[im] = sig["marrow"] * (1 + amp * tex)
    waves, phases, m_amp = anat.mottle
    if m_amp > 0:
        field_m = np.cos(p[im] @ waves.T + phases).sum(axis=1) * np.sqrt(2.0 / len(phases))
        out[im] = _mix(out[im], sig["red_marrow"], m_amp * np.clip(0.5 * field_m, 0, 1))
    out[cortex] = sig["cortex"]
    # anterior longitudinal ligament
    out[(u < -dd / 2) & (u > -dd / 2 - 1.0) & (ax < wx)] = sig["ligament"]

    lesion_body = body & is_les
    lesion = _render_lesion(anat, out, sig, p, x, s, u, t, h, dd, top, bot, u_post, lesion_body, marrow, is_les,
                            post_bone & ~edge, channel)
    _render_other_levels(anat, out, sig, p, x, u, t, h, dd, idx, marrow)
    return lesion_body, lesion


def _mix(base: np.ndarray, target: float, weight: float | np.ndarray) -> np.ndarray:
    return base + weight * (target - base)


#: Lesion features that change the signal in or next to the fractured body (the others change its shape or
#: other levels). A fracture with none of them and homogeneous marrow has no abnormal signal: its lesion mask
#: is then the whole fractured body (the evidence is its shape and preserved marrow signal).
SIGNAL_FEATURES: tuple[str, ...] = (
    "dark_lines_bands", "irregular_dark_patches", "intravertebral_mass", "fluid_sign", "retropulsed_fragment",
    "epidural_paraspinal_mass", "pedicle_posterior_involvement",
)


def _render_lesion(
    anat: Anatomy, out: np.ndarray, sig: dict[str, float], p: np.ndarray, x: np.ndarray, s: np.ndarray,
    u: np.ndarray, t: np.ndarray, h: np.ndarray, dd: np.ndarray, top: np.ndarray, bot: np.ndarray, u_post: np.ndarray,
    lesion_body: np.ndarray, marrow: np.ndarray, is_les: np.ndarray, post_marrow: np.ndarray, channel: int,
) -> np.ndarray:
    """Paint the fracture's scored features into ``out`` (from the latents in ``anat.lesion_params``).

    Returns:
        The lesion mask over the points: where a scored feature changes the signal (abnormal marrow of the
        pattern, dark lines and patches, mass, fluid cleft, retropulsed fragment, epidural/paraspinal mass,
        involved pedicles); the whole fractured body when none does. Geometric, so the same for T1W and T2W
        and at every difficulty.
    """
    lp = anat.lesion_params
    c = anat.difficulty["contrast"]
    cd = anat.difficulty["detail"]
    lesion = np.zeros(len(out), dtype=bool)
    has_signal = lp["pattern"] != "homogeneous" or any(lp[name] for name in SIGNAL_FEATURES)
    if not has_signal:
        lesion |= lesion_body
    i = np.flatnonzero(lesion_body & marrow)
    if i.size == 0:
        return lesion
    ev = np.zeros(i.size, dtype=bool)
    xs, us, ts = x[i], u[i], t[i]
    D = dd[i]
    H = h[i]
    tex = _texture(anat, p[i] * 0.7 + 11.0)
    val = out[i].copy()
    rel_u = us / D  # -0.5 anterior .. 0.5 posterior
    rel_t = ts / H
    d_top = top[i] - ts  # depth below the (fractured) superior endplate
    lesion_sig = sig["lesion"]
    pattern = lp["pattern"]
    extent = lp["extent"]
    if pattern == "diffuse":
        # the texture field is ~N(0, 1): its (1 - extent) quantile leaves the share ``extent`` of the marrow changed
        thr = NormalDist().inv_cdf(1.0 - min(extent, 0.995))
        w = np.clip(0.5 + 1.5 * (tex - thr), 0, 1)
        val = _mix(val, lesion_sig, c * w)
        ev |= w >= 0.5
    elif pattern == "band":
        w = np.clip((extent * (1 + 0.25 * tex) - d_top) / 2.0, 0, 1)  # extent: band thickness (mm)
        val = _mix(val, lesion_sig, c * w)
        ev |= w >= 0.5
    elif pattern == "focal":
        fc = lp["focal_centres"][0]  # extent: radius (mm) of the patch
        w = _blob((rel_u - fc[0]) * D, (rel_t - fc[1]) * H * 1.5, xs - fc[2], extent, tex).astype(np.float32)
        val = _mix(val, lesion_sig, c * w)
        ev |= w >= 0.5
    if lp["dark_lines_bands"]:
        w = np.abs(d_top - lp["line_depth"] - 0.6 * tex) < 0.8
        val = np.where(w, _mix(val, sig["dark"], cd), val)
        ev |= w
    if lp["irregular_dark_patches"]:
        for k, pc in enumerate(lp["patches"]):
            w = _blob((rel_u - pc[0]) * D, (rel_t - pc[1]) * H, xs - pc[2], lp["patch_r"][k], tex)
            val = np.where(w, _mix(val, sig["dark"], cd), val)
            ev |= w
    if lp["intravertebral_mass"]:
        mc = lp["mass_centre"]
        w = _blob((rel_u - mc[0]) * D, (rel_t - mc[1]) * H, xs - mc[2], lp["mass_r"], 0.2 * tex)
        val = np.where(w, _mix(val, sig["mass"], c), val)
        ev |= w
    if lp["fluid_sign"]:
        w = (d_top < lp["fluid_thick"] + 0.8) & (d_top > 0.8) & (np.abs(rel_u + 0.1) < lp["fluid_len"] / 2)
        val = np.where(w, _mix(val, sig["fluid"], min(1.0, cd * 1.3)), val)
        ev |= w
    out[i] = val
    lesion[i[ev]] = True

    # structures outside the marrow of the fractured body
    s_les = anat.s_c[anat.lesion]
    d_les = anat.depth[anat.lesion]
    h_les = anat.height[anat.lesion]
    cc = min(1.0, c * 1.4)
    if lp["retropulsed_fragment"]:
        # posterior-superior corner pushed into the canal: bone with a dark rim
        frag = is_les & (u > d_les / 2 - 1) & (u < d_les / 2 + lp["frag"]) & (np.abs(x) < 12)
        frag &= (t < top + 1.0) & (t > top - 6.0 - (u - d_les / 2))
        out[frag] = sig["cortex"] if channel == 0 else sig["cortex"] * 1.5
        core = frag & (u < d_les / 2 + lp["frag"] - 1.2) & (t < top - 1.2)
        # its marrow is as abnormal as the body's (normal when the body's marrow is homogeneous)
        normal = lp["pattern"] == "homogeneous"
        out[core] = sig["marrow"] if normal else _mix(np.asarray(sig["marrow"], dtype=np.float32), sig["lesion"], 0.5)
        lesion |= frag
    if lp["epidural_paraspinal_mass"]:
        uu = u - (d_les / 2 + 1.5)
        ell = (uu / lp["epi_thick"]) ** 2 + ((s - s_les) / (lp["epi_len"] * h_les)) ** 2 < 1
        epi = ell & (uu > -1.0) & (np.abs(x) < 10.0)
        out[epi] = _mix(out[epi], sig["soft_mass"], cc)
        lesion |= epi
        if lp["epi_ant"]:
            ua = u + d_les / 2 + 1.0
            ell = (ua / (lp["epi_thick"] + 2)) ** 2 + ((s - s_les) / (lp["epi_len"] * h_les)) ** 2 < 1
            para = ell & (ua < 1.0) & (np.abs(x) < 20.0)
            out[para] = _mix(out[para], sig["soft_mass"], cc)
            lesion |= para
    if lp["pedicle_posterior_involvement"]:
        ped = is_les & post_marrow & ~lesion_body & (np.abs(x) > 9.0)
        ped &= (u > d_les / 2) & (u < d_les / 2 + anat.canal + 12)
        out[ped] = _mix(out[ped], sig["lesion"], cc)  # the same abnormal signal as the body's marrow
        lesion |= ped
    return lesion


def _render_other_levels(
    anat: Anatomy, out: np.ndarray, sig: dict[str, float], p: np.ndarray, x: np.ndarray, u: np.ndarray,
    t: np.ndarray, h: np.ndarray, dd: np.ndarray, idx: np.ndarray, marrow: np.ndarray,
) -> None:
    """Skipped nodular metastases in other vertebrae (an old fracture is drawn by the body shape)."""
    c = min(1.0, anat.difficulty["contrast"] * 1.4)
    for level, centre, radius in anat.others["nodules"]:
        sel = np.flatnonzero(marrow & (idx == level))
        if sel.size == 0:
            continue
        w = _blob(u[sel] - centre[0] * dd[sel], t[sel] - centre[1] * h[sel], x[sel] - centre[2], radius, 0.0)
        out[sel[w]] = _mix(out[sel[w]], sig["tumour"], c)
