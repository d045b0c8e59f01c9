"""Do a case's T1 and T2 belong together? The belonging and meaning check of a T1/T2 pair.

The paper's input is the T1W and the T2W sagittal series *of one patient and one exam*. A manifest row
can point elsewhere without any image being unreadable: the T1 column at the T2 series, at another
patient's T1, or the two columns swapped. Each gives plausible patches and a silently wrong result, so
:func:`check_pair` refuses them (``extract_case`` calls it for ``spinedx extract`` and ``spinedx predict``):

* **same series**: the same SeriesInstanceUID (0020,000E), the same file or folder (with no series UID
  to tell two series in it apart), or identical voxels on an identical grid;
* **another patient**: different PatientID (0010,0020);
* **swapped weighting**: where EchoTime (0018,0081) and RepetitionTime (0018,0080) are present on both,
  the T1-weighted series must have the shorter TE *and* the shorter TR (spin-echo T1W: TR 400-700 ms,
  TE 10-20 ms; T2W: TR > 2000 ms, TE 80-120 ms; the paper's protocol: 400/15 and 3200/90).

A different StudyInstanceUID (0020,000D) or FrameOfReferenceUID (0020,0052) is allowed (T1 and T2 from
two visits or two planning frames) but recorded with a warning: the header geometry then does not
relate the two series and the registration carries the mapping.

``mode`` is the explicit override for unusual protocols (``ExtractConfig.pair_check``, ``spinedx
extract --pair-check``): ``strict`` (default) refuses, ``warn`` records the problems as warnings and goes
on, ``off`` makes no check. NIfTI/NRRD/MetaImage files carry none of these headers: for them only the
same-file and same-voxel checks are made, and the record lists the checks that could not be made.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spinedx.errors import PreprocessError
from spinedx.io.image import Image

PAIR_CHECK_MODES = ("strict", "warn", "off")
HEADER_CHECKS = ("PatientID", "weighting (EchoTime, RepetitionTime)", "StudyInstanceUID", "FrameOfReferenceUID")


@dataclass
class PairCheck:
    """What :func:`check_pair` found for one case (written per patient into ``extract.json``).

    Attributes:
        mode: ``strict``, ``warn`` or ``off``.
        checked: the checks that were made.
        not_checked: ``"check: why not"`` for the checks that could not be made (no DICOM header, tag absent).
        problems: what makes the pair wrong (refused in ``strict`` mode; kept here in ``warn`` mode).
        warnings: what is allowed but matters (another study or frame of reference), and in ``warn``
            mode the problems accepted.
    """

    mode: str = "strict"
    checked: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _is_dicom(img: Image) -> bool:
    return img.meta.get("format") == "dicom"


def _same_path(a: str, b: str) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _same_voxels(t1: Image, t2: Image) -> bool:
    """Identical grid and voxels (checked on the middle slice first, so different images cost little)."""
    if t1.shape != t2.shape or not np.allclose(t1.affine, t2.affine, atol=1e-4):
        return False
    mid = t1.n_slices // 2
    return bool(np.array_equal(t1.array[mid], t2.array[mid]) and np.array_equal(t1.array, t2.array))


def _num(img: Image, key: str) -> float | None:
    v = img.meta.get(key)
    return float(v) if isinstance(v, (int, float)) and np.isfinite(v) and v > 0 else None


def check_pair(t1: Image, t2: Image, *, mode: str = "strict", patient_id: str = "case") -> PairCheck:
    """Check that ``t1`` and ``t2`` are two different series of one patient with the right weighting.

    Args:
        t1: the image given as T1-weighted.
        t2: the image given as T2-weighted.
        mode: ``strict`` (refuse problems), ``warn`` (record them as warnings), ``off`` (no check).
        patient_id: names the patient in messages.

    Returns:
        The record of checks made, not made, problems and warnings.

    Raises:
        PreprocessError: in ``strict`` mode, when a problem is found (naming the patient and the override).
        ValueError: an unknown ``mode``.
    """
    if mode not in PAIR_CHECK_MODES:
        raise ValueError(f"pair_check must be one of {PAIR_CHECK_MODES}, got {mode!r}")
    rec = PairCheck(mode=mode)
    if mode == "off":
        rec.not_checked = [f"{c}: --pair-check off" for c in ("same series", *HEADER_CHECKS)]
        return rec
    dicom = _is_dicom(t1) and _is_dicom(t2)
    rec.checked.append("same series")
    same = _same_series(t1, t2, dicom)
    if same:
        rec.problems.append(same)
    if not dicom:
        fmt = ", ".join(f"{n} is {img.meta.get('format', 'not DICOM')}" for n, img in (("t1", t1), ("t2", t2))
                        if not _is_dicom(img))
        rec.not_checked += [f"{c}: no DICOM header ({fmt})" for c in HEADER_CHECKS]
    else:
        _check_patient(t1, t2, rec)
        _check_weighting(t1, t2, rec)
        _check_study_and_frame(t1, t2, rec)
    if rec.problems:
        if mode == "strict":
            raise PreprocessError(
                "; ".join(rec.problems) + ". If this protocol is intended, rerun with --pair-check warn "
                "(ExtractConfig(pair_check='warn'))", where=patient_id)
        rec.warnings += [f"accepted with --pair-check warn: {p}" for p in rec.problems]
    return rec


def _absent(key: str, values: tuple[tuple[str, object], ...]) -> str:
    """``"Key: absent from t1 and t2"`` naming the series whose value is missing."""
    return f"{key}: absent from " + " and ".join(n for n, v in values if not v)


def _same_series(t1: Image, t2: Image, dicom: bool) -> str | None:
    """Why ``t1`` and ``t2`` are one series given twice (same SeriesInstanceUID, file or voxels), or None."""
    uid1, uid2 = str(t1.meta.get("SeriesInstanceUID") or ""), str(t2.meta.get("SeriesInstanceUID") or "")
    if dicom and uid1 and uid1 == uid2:
        return (f"t1 and t2 are the same series (SeriesInstanceUID {uid1}); point t1 at the T1-weighted series "
                "(t1_series_uid when both are in one folder)")
    if not (dicom and uid1 and uid2) and _same_path(t1.source, t2.source):
        return f"t1 and t2 are the same file or folder ({t2.source}); point t1 at the T1-weighted series"
    if _same_voxels(t1, t2):
        return ("t1 and t2 hold identical voxels on the same grid (one image given twice); point t1 at the "
                "T1-weighted series")
    return None


def _check_patient(t1: Image, t2: Image, rec: PairCheck) -> None:
    """Another patient: different PatientID."""
    p1, p2 = str(t1.meta.get("PatientID") or ""), str(t2.meta.get("PatientID") or "")
    if not (p1 and p2):
        rec.not_checked.append(_absent("PatientID", (("t1", p1), ("t2", p2))))
        return
    rec.checked.append("PatientID")
    if p1 != p2:
        rec.problems.append(f"t1 and t2 belong to different patients (PatientID '{p1}' vs '{p2}'); point both "
                            "columns at this patient's series")


def _check_weighting(t1: Image, t2: Image, rec: PairCheck) -> None:
    """Swapped or wrong weighting: T1W has the shorter TE and the shorter TR."""
    made, wrong = [], []
    for key, short in (("EchoTime", "TE"), ("RepetitionTime", "TR")):
        a, b = _num(t1, key), _num(t2, key)
        if a is None or b is None:
            rec.not_checked.append(_absent(key, (("t1", a), ("t2", b))))
            continue
        made.append(key)
        if not a < b:
            wrong.append((short, a, b))
    if wrong:
        shorts = " and ".join(w[0] for w in wrong)
        rec.problems.append(
            "the series given as T1 has " + " and ".join(f"{w[0]} {w[1]:g} ms" for w in wrong)
            + ", the one given as T2 " + " and ".join(f"{w[0]} {w[2]:g} ms" for w in wrong)
            + f": T1-weighted images have the shorter {shorts}, so t1 and t2 look swapped or wrong "
            f"(t1: {t1.meta.get('SeriesDescription') or t1.source}, t2: "
            f"{t2.meta.get('SeriesDescription') or t2.source})")
    if made:
        rec.checked.append("weighting (" + ", ".join(made) + ")")


def _check_study_and_frame(t1: Image, t2: Image, rec: PairCheck) -> None:
    """Allowed, recorded with a warning: another study or frame of reference."""
    for key, what in (("StudyInstanceUID", "studies"), ("FrameOfReferenceUID", "frames of reference")):
        u1, u2 = str(t1.meta.get(key) or ""), str(t2.meta.get(key) or "")
        if not (u1 and u2):
            rec.not_checked.append(_absent(key, (("t1", u1), ("t2", u2))))
            continue
        rec.checked.append(key)
        if u1 != u2:
            rec.warnings.append(f"t1 and t2 come from different {what} ({key} {u1} vs {u2}): the header geometry "
                                "does not relate them, the registration carries the T2 -> T1 mapping")
