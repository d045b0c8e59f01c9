"""Choosing a study's sagittal T1W and T2W series from their headers: :func:`select_t1_t2_series`.

The paper (Yeh et al. 2022, "MRI protocols") uses sagittal spin-echo T1W (TR/TE 400/15 ms) and fast spin-echo
T2W (3200/90 ms) series, without fat suppression or contrast. A clinical spine study holds many more series:
localisers, STIR and other fat-suppressed series, axial T2W, post-contrast T1W, reformats. This function is a
pure rule set over header attributes (:class:`SeriesHeader`, DICOM PS3.3 C.8.3.1), used by ``spinedx index``
on files and by DICOMweb clients on QIDO-RS/WADO-RS metadata. It never guesses: when two series are equally
good candidates for one role the study is marked ambiguous and neither is chosen.

The rules, in order (every series gets the list of reasons that apply):

1. **Modality** must be MR (:func:`spinedx.studyindex.header.modality_problem`, the reader's rule too); another image
   modality is accepted when ``allow_modality`` names it.
2. **Localisers** are refused: ImageType contains ``LOCALIZER``, the description names a localiser/scout/
   survey, or the series has fewer than 3 images.
3. **Plane**: the slice normal (row x column cosines of ImageOrientationPatient, C.7.6.2.1.1) must be mostly
   left-right (``|n_x| >= 0.7``, the threshold of :func:`spinedx.io.read_image`); without an orientation the
   description's ``SAG``/``AX``/``COR`` decides, and the verdict says so.
4. **Derived** series (ImageType ``DERIVED`` or ``SECONDARY``, MPR/MIP/subtraction/ADC values, "MPR" or
   "reformat" in the description) are refused unless ``allow_derived``.
5. **Fat suppression** (ScanOptions ``FS``/``SFS``/``FAT...``; inversion recovery with TI 80-250 ms, i.e.
   STIR; STIR/TIRM/SPAIR/SPIR/FS/fat-sat/Dixon in the description) is refused unless ``allow_fat_suppressed``.
6. **Contrast** (ContrastBolusAgent set; ``+C``, ``C+``, post, gad, Gd, contrast in the description) is
   refused unless ``allow_contrast``.
7. **Weighting** from TE/TR (and TI): T2W when TE >= 60 ms and TR >= 1500 ms; T1W when TE <= 30 ms and
   TR <= 1000 ms, or an inversion recovery T1 (TI 600-1200 ms, TE <= 30 ms, e.g. T1-FLAIR); PD when TE <= 40
   ms and TR >= 1500 ms. The description's ``T1``/``T2`` token must agree when both are known (a disagreement
   refuses the series); without TE/TR the description alone decides, and the verdict says so.

Among the remaining candidates of a role, a series whose timing and description agree outranks one known from
only one of them, and (when allowed) an unsuppressed, unenhanced, original series outranks the others. Two
candidates of the same rank make the role ambiguous.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from spinedx.studyindex.header import SeriesHeader, allowed_modalities, modality_problem, sop_class_modality

SAGITTAL_MIN = 0.7  # |normal . (1, 0, 0)|, as spinedx.io.read_image's check
MIN_IMAGES = 3  # a lesion slice and its two neighbours
ROLES = ("t1", "t2")
_I = re.IGNORECASE

_LOCALISER = re.compile(r"\b(loc|locali[sz]er|scout|survey|3[- ]?pl(ane)?|tri[- ]?pilot|aahscout|pilot)\b", _I)
_DERIVED_DESC = re.compile(r"\b(mpr|mip|reformat\w*|subtract\w*|sub)\b", _I)
_DERIVED_TYPES = {"MPR", "REFORMATTED", "PROJECTION IMAGE", "MIP", "SUBTRACTION", "SUB", "ADC", "TRACEW", "DIFFUSION",
                  "CALC_BVALUE", "FA", "MOCO"}
_FATSAT_DESC = re.compile(r"(stir|tirm|spair|\bspir\b|\bfs\b|_fs\b|\bfs_|fat[ _-]?sat|fatsat|fat[ _-]?sup\w*|dixon|"
                          r"\bw(ater)?[ _-]?only\b)", _I)
_CONTRAST_DESC = re.compile(r"(\+\s*c\b|\bc\s*\+|\+\s*gd|\bpost\b|\bgad\w*|\bgd\b|contrast|\bce\b|\bkm\b|_post)",
                            _I)
_NO_AGENT = {"", "NONE", "NO", "N/A", "NA", "0"}
_PLANE_DESC = {"sagittal": re.compile(r"\bsag\w*|_sag\b|sag_", _I),
               "axial": re.compile(r"\b(ax\w*|tra\w*)\b|_ax\b|_tra\b|ax_|tra_", _I),
               "coronal": re.compile(r"\bcor\w*|_cor\b|cor_", _I)}
_WEIGHT_DESC = {"T1": re.compile(r"(?<![a-z0-9])t1(?![0-9])", _I),
                "T2": re.compile(r"(?<![a-z0-9])t2(?![0-9*])", _I),
                "T2*": re.compile(r"(?<![a-z0-9])t2\s*\*", _I),
                "PD": re.compile(r"(?<![a-z0-9])pd(?![a-z0-9])", _I)}


@dataclass(frozen=True)
class SelectionOptions:
    """What :func:`select_t1_t2_series` may accept beyond the paper's series.

    Attributes:
        allow_fat_suppressed: accept fat-suppressed series (STIR, FS) when nothing better exists.
        allow_contrast: accept contrast-enhanced series when nothing better exists.
        allow_derived: accept derived series (reformats, ImageType DERIVED) when nothing better exists.
        allow_modality: image modalities accepted besides MR (``--allow-modality CT``), upper-case codes.
    """

    allow_fat_suppressed: bool = False
    allow_contrast: bool = False
    allow_derived: bool = False
    allow_modality: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # normalised once (upper case, sorted, non-image modalities refused: ValueError)
        object.__setattr__(self, "allow_modality", allowed_modalities(self.allow_modality))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``index.json`` ``options``)."""
        return {"allow_fat_suppressed": self.allow_fat_suppressed, "allow_contrast": self.allow_contrast,
                "allow_derived": self.allow_derived, "allow_modality": list(self.allow_modality)}


@dataclass
class SeriesVerdict:
    """Why one series was or was not chosen.

    Attributes:
        series_uid: SeriesInstanceUID.
        series_number: SeriesNumber.
        description: SeriesDescription.
        plane: ``sagittal``, ``axial``, ``coronal``, ``oblique``, ``mixed`` or ``unknown``.
        weighting: ``T1``, ``T2``, ``PD``, ``T2*`` or ``unknown``.
        role: ``t1``/``t2`` when the series is a candidate for that role, else None.
        chosen: True when it was picked for ``role``.
        reasons: why it was refused or ranked as it was (readable sentences).
        rank: the candidate's rank (higher is better; None when refused).
    """

    series_uid: str
    series_number: int | None
    description: str
    plane: str = "unknown"
    weighting: str = "unknown"
    role: str | None = None
    chosen: bool = False
    reasons: list[str] = field(default_factory=list)
    rank: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``index.json``)."""
        return {"series_uid": self.series_uid, "series_number": self.series_number, "description": self.description,
                "plane": self.plane, "weighting": self.weighting, "role": self.role, "chosen": self.chosen,
                "reasons": list(self.reasons), "rank": list(self.rank) if self.rank is not None else None}


@dataclass
class StudySelection:
    """The T1W/T2W choice for one study.

    Attributes:
        t1: the chosen sagittal T1W series, or None (missing or ambiguous).
        t2: the chosen sagittal T2W series, or None.
        verdicts: one per series, in SeriesNumber order.
        ambiguous: role -> UIDs of the equally good candidates (empty when nothing is ambiguous).
        notes: study-level remarks (e.g. different frames of reference).
        unusable: role -> ``(series UID, reason)`` of a chosen series that the reader refuses (a localiser slice in
            it, mixed geometry, too few slices, ...: :meth:`reject`); that role is then left empty.
    """

    t1: SeriesHeader | None
    t2: SeriesHeader | None
    verdicts: list[SeriesVerdict]
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unusable: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """Roles with no candidate at all."""
        return [r for r in ROLES if getattr(self, r) is None and r not in self.ambiguous and r not in self.unusable]

    @property
    def status(self) -> str:
        """``ok`` (both chosen), ``ambiguous`` (a role has equal candidates), ``unusable`` (a chosen series cannot be
        read) or ``incomplete`` (a role has none)."""
        if self.ambiguous:
            return "ambiguous"
        if self.unusable:
            return "unusable"
        return "ok" if self.t1 is not None and self.t2 is not None else "incomplete"

    def reject(self, role: str, reason: str) -> None:
        """Mark the chosen series of ``role`` as unusable (the reader refuses it, ``reason``) and leave the role empty.

        Nothing else is chosen in its place: the next candidate was judged worse, and the study is listed, not guessed.
        """
        chosen = getattr(self, role)
        if chosen is None:
            raise ValueError(f"no {role} series was chosen")
        setattr(self, role, None)
        self.unusable[role] = (chosen.series_uid, reason)
        for v in self.verdicts:
            if v.series_uid == chosen.series_uid and v.chosen:
                v.chosen = False
                v.reasons.append(f"not usable: {reason}")

    def summary(self) -> str:
        """One line: what was chosen, what is ambiguous or missing."""
        parts = []
        for role in ROLES:
            s = getattr(self, role)
            if s is not None:
                parts.append(f"{role.upper()}W: #{s.series_number} '{s.description}'")
            elif role in self.ambiguous:
                parts.append(f"{role.upper()}W: ambiguous between {len(self.ambiguous[role])} series")
            elif role in self.unusable:
                uid, reason = self.unusable[role]
                number = next((v.series_number for v in self.verdicts if v.series_uid == uid), None)
                desc = next((v.description for v in self.verdicts if v.series_uid == uid), "")
                parts.append(f"{role.upper()}W: #{number} '{desc}' not usable: {reason}")
            else:
                # the best refused series of that weighting says what stood in the way (another modality, STIR, ...)
                refused = [v for v in self.verdicts if v.role == role and v.rank is None and v.reasons]
                why = f" (#{refused[0].series_number} '{refused[0].description}' refused: {refused[0].reasons[0]})" \
                    if refused else ""
                parts.append(f"{role.upper()}W: none{why}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``index.json``)."""
        return {"status": self.status, "t1_series_uid": self.t1.series_uid if self.t1 else None,
                "t2_series_uid": self.t2.series_uid if self.t2 else None, "ambiguous": self.ambiguous,
                "missing": self.missing,
                "unusable": {r: {"series_uid": u, "reason": why} for r, (u, why) in self.unusable.items()},
                "notes": list(self.notes), "series": [v.to_dict() for v in self.verdicts]}


def plane_of(orientation: tuple[float, ...] | None) -> str | None:
    """The plane of ImageOrientationPatient's slice normal (row x column), or None without an orientation."""
    if orientation is None or len(orientation) != 6:
        return None
    r, c = orientation[:3], orientation[3:]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    norm = math.sqrt(sum(v * v for v in n))
    if norm < 1e-6:
        return "oblique"
    a = [abs(v) / norm for v in n]
    axis = max(range(3), key=lambda i: a[i])
    if a[axis] < SAGITTAL_MIN:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def weighting_from_timing(s: SeriesHeader) -> str | None:
    """``T1``/``T2``/``PD`` from TE/TR (and TI for inversion recovery), ``unknown`` between them, None without TE/TR."""
    te, tr, ti = s.echo_time, s.repetition_time, s.inversion_time
    if te is None or tr is None:
        return None
    if "IR" in s.scanning_sequence and ti is not None and 600 <= ti <= 1200 and te <= 30:
        return "T1"  # T1-FLAIR / inversion-recovery T1
    if te >= 60 and tr >= 1500:
        return "T2"
    if te <= 30 and tr <= 1000:
        return "T1"
    if te <= 40 and tr >= 1500:
        return "PD"
    return "unknown"


def weighting_from_description(description: str) -> str | None:
    """``T1``/``T2``/``T2*``/``PD`` when the description names exactly one weighting, else None."""
    found = [w for w, rx in _WEIGHT_DESC.items() if rx.search(description)]
    if "T2*" in found:
        found = [w for w in found if w != "T2"]
    return found[0] if len(found) == 1 else None


def _is_fat_suppressed(s: SeriesHeader) -> str | None:
    opts = [o for o in s.scan_options if o in ("FS", "SFS") or "FAT" in o or o.startswith("FS")]
    if opts:
        return f"fat-suppressed (ScanOptions {'/'.join(opts)})"
    if "IR" in s.scanning_sequence and s.inversion_time is not None and 80 <= s.inversion_time <= 250:
        return f"fat-suppressed (inversion recovery, TI {s.inversion_time:g} ms: STIR)"
    m = _FATSAT_DESC.search(s.description)
    if m:
        return f"fat-suppressed (description '{s.description}')"
    return None


def _is_contrast(s: SeriesHeader) -> str | None:
    if s.contrast_agent.strip().upper() not in _NO_AGENT:
        return f"contrast-enhanced (ContrastBolusAgent '{s.contrast_agent}')"
    if _CONTRAST_DESC.search(s.description):
        return f"contrast-enhanced (description '{s.description}')"
    return None


def _is_derived(s: SeriesHeader) -> str | None:
    types = set(s.image_type)
    if s.image_type and s.image_type[0] == "DERIVED":
        return f"derived (ImageType {'/'.join(s.image_type)})"
    if len(s.image_type) > 1 and s.image_type[1] == "SECONDARY":
        return f"secondary (ImageType {'/'.join(s.image_type)})"
    hit = types & _DERIVED_TYPES
    if hit:
        return f"derived (ImageType value {min(hit)})"
    if _DERIVED_DESC.search(s.description):
        return f"derived (description '{s.description}')"
    return None


class _Judgement:
    """A series' verdict being written: its reasons in order, and whether any of them refuses the series."""

    def __init__(self, s: SeriesHeader) -> None:
        self.v = SeriesVerdict(s.series_uid, s.series_number, s.description)
        self.refused = False

    def note(self, msg: str) -> None:
        """A reason that does not refuse the series."""
        self.v.reasons.append(msg)

    def refuse(self, msg: str) -> None:
        """A reason that refuses the series."""
        self.refused = True
        self.v.reasons.append(msg)


def _judge(s: SeriesHeader, opts: SelectionOptions) -> SeriesVerdict:
    j = _Judgement(s)
    _judge_modality(s, opts, j)
    _judge_images(s, j)
    j.v.plane = _judge_plane(s, j)
    demote = _judge_demotions(s, opts, j)
    weighting, evidence = _judge_weighting(s, j)
    j.v.weighting = weighting
    if weighting not in ("T1", "T2") and not j.refused:
        j.refuse(f"{weighting} weighting, neither T1W nor T2W")
    if weighting in ("T1", "T2"):
        j.v.role = weighting.lower()
    if not j.refused:
        j.v.rank = (evidence, -demote)
    return j.v


def _judge_modality(s: SeriesHeader, opts: SelectionOptions, j: _Judgement) -> None:
    """Refuse a modality or SOP class the options do not accept; note one accepted beyond MR, or none given."""
    problem = modality_problem(s.modality, s.sop_class_uid, opts.allow_modality)
    modality = s.modality or sop_class_modality(s.sop_class_uid)
    if problem:
        j.refuse(problem + ("" if problem.startswith("not an image") else f" (--allow-modality {modality} accepts it)"))
    elif modality and modality != "MR":
        j.note(f"Modality {modality}: accepted (--allow-modality {modality})")
    elif not modality:
        j.note("no Modality; treated as MR")


def _judge_images(s: SeriesHeader, j: _Judgement) -> None:
    """Refuse a localiser, and a series with too few images for a lesion slice and its neighbours."""
    if "LOCALIZER" in s.image_type:
        j.refuse("localiser (ImageType LOCALIZER)")
    elif _LOCALISER.search(s.description):
        j.refuse(f"localiser (description '{s.description}')")
    n_images = s.n_frames or s.n_instances
    if n_images < MIN_IMAGES:
        j.refuse(f"{n_images} image(s); at least {MIN_IMAGES} are needed (a lesion slice and its two neighbours)")


def _judge_plane(s: SeriesHeader, j: _Judgement) -> str:
    """The series' plane (from ImageOrientationPatient, else from the description); refuse any but sagittal."""
    plane = plane_of(s.orientation)
    if plane is None:
        from_desc = [p for p, rx in _PLANE_DESC.items() if rx.search(s.description)]
        if len(from_desc) == 1:
            plane = from_desc[0]
            j.note(f"plane {plane} from the description (no ImageOrientationPatient)")
        else:
            plane = "unknown"
    if plane != "sagittal":
        j.refuse(f"{plane} plane, not sagittal" if plane != "unknown" else "plane unknown (no ImageOrientationPatient "
                 "and no SAG/AX/COR in the description)")
    return plane


def _judge_demotions(s: SeriesHeader, opts: SelectionOptions, j: _Judgement) -> int:
    """Refuse a derived, fat-suppressed or contrast-enhanced series unless its option accepts it; the number of
    such accepted properties (each ranks the series lower)."""
    demote = 0
    for check, allowed, what in ((_is_derived, opts.allow_derived, "allow_derived"),
                                 (_is_fat_suppressed, opts.allow_fat_suppressed, "allow_fat_suppressed"),
                                 (_is_contrast, opts.allow_contrast, "allow_contrast")):
        msg = check(s)
        if msg is None:
            continue
        if allowed:
            demote += 1
            j.note(f"{msg}: accepted ({what}), ranked below unsuppressed original series")
        else:
            j.refuse(f"{msg}: refused (the paper's series are unenhanced, without fat suppression; "
                     f"{what} accepts it)")
    return demote


def _judge_weighting(s: SeriesHeader, j: _Judgement) -> tuple[str, int]:
    """The weighting from TE/TR and the description, and how many of the two support it (0 when refused)."""
    timing = weighting_from_timing(s)
    desc = weighting_from_description(s.description)
    if timing is not None and timing != "unknown":
        te_tr = f"TE {s.echo_time:g} ms, TR {s.repetition_time:g} ms"
        if desc is not None and desc != timing:
            j.refuse(f"{te_tr} say {timing}W but the description '{s.description}' says {desc}W; check the series")
            return timing, 0
        if desc is None:
            j.note(f"{timing}W from {te_tr} (description names no weighting)")
        return timing, 2 if desc == timing else 1
    if timing == "unknown":
        j.refuse(f"TE {s.echo_time:g} ms, TR {s.repetition_time:g} ms are neither T1W nor T2W")
        return desc or "unknown", 0
    if desc in ("T1", "T2"):
        j.note(f"{desc}W from the description only (no EchoTime/RepetitionTime)")
        return desc, 1
    j.refuse("weighting unknown: no EchoTime/RepetitionTime and no T1/T2 in the description")
    return desc or "unknown", 0


def select_t1_t2_series(series: list[SeriesHeader], options: SelectionOptions | None = None) -> StudySelection:
    """Pick the sagittal T1W and T2W series of one study (rules in the module docstring).

    Args:
        series: one header per series of the study (files or DICOMweb metadata).
        options: what may be accepted beyond the paper's series (default: nothing).

    Returns:
        The selection: chosen series (or None), a verdict with reasons for every series, and the ambiguous roles
        with their tied candidates.
    """
    opts = options or SelectionOptions()
    ordered = sorted(series, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
    verdicts = [_judge(s, opts) for s in ordered]
    by_uid = {s.series_uid: s for s in ordered}
    chosen: dict[str, SeriesHeader | None] = {"t1": None, "t2": None}
    ambiguous: dict[str, list[str]] = {}
    for role in ROLES:
        cands = [v for v in verdicts if v.role == role and v.rank is not None]
        if not cands:
            continue
        best = max(v.rank for v in cands if v.rank is not None)
        top = [v for v in cands if v.rank == best]
        if len(top) > 1:
            ambiguous[role] = [v.series_uid for v in top]
            for v in top:
                v.reasons.append(f"ambiguous: {len(top)} equally good {role.upper()}W candidates "
                                 f"(series {', '.join(str(t.series_number) for t in top)}); choose one by its UID")
            continue
        top[0].chosen = True
        chosen[role] = by_uid[top[0].series_uid]
        for v in cands:
            if v is not top[0]:
                v.reasons.append(f"a better {role.upper()}W candidate exists (series {top[0].series_number})")
    notes = []
    t1, t2 = chosen["t1"], chosen["t2"]
    if t1 is not None and t2 is not None and t1.frame_of_reference_uid and t2.frame_of_reference_uid \
            and t1.frame_of_reference_uid != t2.frame_of_reference_uid:
        notes.append("T1W and T2W have different FrameOfReferenceUIDs: the geometric T2->T1 mapping assumes one "
                     "frame; check the overlap (spinedx extract refuses pairs that do not overlap)")
    return StudySelection(t1=t1, t2=t2, verdicts=verdicts, ambiguous=ambiguous, notes=notes)
