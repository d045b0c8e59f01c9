"""Bounded rigid T2 -> T1 registration around the lesion box.

Yeh et al. 2022 map the T2 box onto T1 "using linear registration". The geometry in the DICOM headers already
maps T2 onto T1 when the patient did not move between the two series; this module refines it with an
intensity-based rigid (Euler 3-D) registration driven by Mattes mutual information (T1 and T2 contrasts are
not linearly related, so correlation-type metrics do not apply), computed only on a region around the box so
that motion elsewhere (breathing, other levels) does not pull the lesion off.

The refinement is *bounded*: a result translating more than ``max_translation_mm`` or rotating more than
``max_rotation_deg``, or one that does not improve the metric, is rejected and the geometry-only mapping is
kept. Both outcomes are recorded (:class:`RegistrationRecord`).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from spinedx.fsutil import Terminated
from spinedx.io.image import Image
from spinedx.preprocess.config import ExtractConfig
from spinedx.preprocess.mapping import Box, box_corners

# Optimiser steps are in mm (scales from physical shift): start at 1 mm, stop below 0.01 mm, far finer than
# the voxels; finer stopping only adds iterations (measured on spinedx.synth cohorts: same accuracy, 2.4x slower).
_LR, _MINSTEP = 1.0, 0.01


@dataclass
class RegistrationRecord:
    """What the T2 -> T1 registration of one patient found and whether it was used.

    Attributes:
        performed: False when registration was switched off (``register=False``).
        accepted: True when the registered transform is used for the patches.
        reason: why it was accepted or rejected.
        translation_mm: (x, y, z) LPS translation of the found transform, mm.
        rotation_deg: rotations about the LPS x, y, z axes (Euler 3-D, ZXY order as in ITK), degrees.
        center_mm: centre of rotation (the box centre on the middle lesion slice), LPS mm.
        metric_before: Mattes mutual information (ITK sign: lower is better) with the geometry-only mapping.
        metric_after: the same with the found transform.
        iterations: optimiser iterations over all resolution levels.
        stop_condition: the optimiser's stop description.
        seconds: wall time of the registration.
        matrix: 4x4 homogeneous map from T2 physical points to T1 physical points that the patches use
            (identity when not performed or rejected).
    """

    performed: bool = False
    accepted: bool = False
    reason: str = "registration off (geometry-only mapping)"
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    metric_before: float | None = None
    metric_after: float | None = None
    iterations: int = 0
    stop_condition: str = ""
    seconds: float = 0.0
    matrix: list[list[float]] = field(default_factory=lambda: np.eye(4).tolist())

    @property
    def transform(self) -> np.ndarray:
        """The 4x4 T2 -> T1 physical map used for the patches."""
        return np.asarray(self.matrix, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _subimage(img: Image, lo: np.ndarray, hi: np.ndarray) -> Image:
    """The voxels with index (x, y, z) in [lo, hi) (clipped), with the geometry shifted accordingly."""
    shape_xyz = np.array(img.shape[::-1])
    lo = np.clip(lo, 0, shape_xyz - 1).astype(int)
    hi = np.clip(hi, lo + 1, shape_xyz).astype(int)
    arr = img.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    aff = img.affine.copy()
    aff[:3, 3] = img.index_to_physical(lo[None, :].astype(float))[0]
    return Image(arr, aff, source=img.source)


def _regions(t1: Image, t2: Image, box: Box, lesion_slices: tuple[int, ...],
             config: ExtractConfig) -> tuple[Image, Image, np.ndarray]:
    """Fixed (T2) region around the box, moving (T1) region that can hold it after a bounded move, centre."""
    x0, y0, x1, y1 = box
    sx, sy = float(t2.spacing[0]), float(t2.spacing[1])
    mx, my = config.registration_margin_mm / sx, config.registration_margin_mm / sy
    k0 = min(lesion_slices) - config.registration_slices
    k1 = max(lesion_slices) + config.registration_slices + 1
    lo = np.array([math.floor(x0 - mx), math.floor(y0 - my), k0])
    hi = np.array([math.ceil(x1 + mx), math.ceil(y1 + my), k1])
    fixed = _subimage(t2, lo, hi)

    # The moving region: T1 voxels around every fixed-region corner, widened by the largest allowed move.
    fz, fy, fx = fixed.shape
    corners = np.array([[i, j, k] for i in (-0.5, fx - 0.5) for j in (-0.5, fy - 0.5) for k in (-0.5, fz - 0.5)])
    ijk = t1.physical_to_index(fixed.index_to_physical(corners))
    # Room for the largest accepted move: the bound on translation plus what a bounded rotation moves the
    # region's far corners (radius x angle), plus two voxels for interpolation.
    radius = float(np.linalg.norm(fixed.spacing * np.array(fixed.shape[::-1]))) / 2
    reach = config.max_translation_mm + radius * math.radians(config.max_rotation_deg)
    pad = reach / t1.spacing + 2
    moving = _subimage(t1, np.floor(ijk.min(axis=0) - pad), np.ceil(ijk.max(axis=0) + pad) + 1)

    mid = sorted(lesion_slices)[len(lesion_slices) // 2]
    center = box_corners(t2, box, float(mid)).mean(axis=0)
    return fixed, moving, center


def _metric_setup(method: sitk.ImageRegistrationMethod, n_vox: int, config: ExtractConfig) -> None:
    """Mattes MI on at most ``registration_samples`` voxels (regular grid, fixed seed: reproducible)."""
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.histogram_bins)
    if n_vox > config.registration_samples:
        method.SetMetricSamplingStrategy(method.REGULAR)
        method.SetMetricSamplingPercentage(config.registration_samples / n_vox, 1)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    # Gradients at the sampled points only, instead of gradient images of the whole regions.
    method.MetricUseFixedImageGradientFilterOff()
    method.MetricUseMovingImageGradientFilterOff()
    method.SetInterpolator(sitk.sitkLinear)


def _metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, config: ExtractConfig) -> float:
    """Mattes MI of the pair under ``transform`` on the same samples as the optimiser (before vs after)."""
    m = sitk.ImageRegistrationMethod()
    _metric_setup(m, int(np.prod(fixed.GetSize())), config)
    m.SetInitialTransform(transform)
    return float(m.MetricEvaluate(fixed, moving))


def _on_iteration(counter: list[int]) -> None:
    """Body of the optimiser's iteration callback (a module function so tests can make it raise)."""
    counter[0] += 1


def _callback_error(text: str) -> BaseException | None:
    """The exception behind a SimpleITK error that reports a failing Python callback, None for other errors.

    SimpleITK runs Python callbacks inside ``Execute`` and turns anything they raise into a RuntimeError
    ("There was an error executing the Python Callable", with the traceback in the text). Our callbacks
    record what they raise; this is the fallback for an exception raised before the record (a signal
    handler firing on the callback's first instruction).
    """
    if "error executing the Python Callable" not in text:
        return None
    if "KeyboardInterrupt" in text:
        return KeyboardInterrupt()
    if "Terminated" in text:
        return Terminated("terminated by signal 15")
    return RuntimeError(f"a Python callback failed inside SimpleITK: {text[:500]}")


def register_rigid(t1: Image, t2: Image, box: Box, lesion_slices: tuple[int, ...],
                   config: ExtractConfig) -> RegistrationRecord:
    """Bounded rigid registration of T1 to T2 around the lesion box.

    Fixed image: T2 within ``registration_margin_mm`` of the box on the lesion slices and
    ``registration_slices`` slices beyond them. Moving image: T1. Metric: Mattes mutual information on at
    most ``registration_samples`` fixed-region voxels (regular grid, fixed seed: reproducible). Optimiser:
    regular-step gradient descent with scales from physical shift (steps in mm, from 1 down to 0.01), two
    resolution levels (shrink 2, 1; smoothing 1 mm, 0) when the region has at least 8 voxels along every
    axis, else one level.
    The transform starts at identity, i.e. at the mapping given by the two series' geometry.

    Args:
        t1: T1 image (moving).
        t2: T2 image (fixed; the annotation is on it).
        box: ``x0,y0,x1,y1`` on T2.
        lesion_slices: T2 slice indices of the lesion.
        config: bounds, iterations and region size.

    Returns:
        The record; ``matrix`` is the identity unless the result was accepted.
    """
    start = time.perf_counter()
    fixed_img, moving_img, center = _regions(t1, t2, box, lesion_slices, config)
    fixed = fixed_img.to_sitk()
    moving = moving_img.to_sitk()

    init = sitk.Euler3DTransform()
    init.SetCenter(tuple(float(c) for c in center))

    reg = sitk.ImageRegistrationMethod()
    _metric_setup(reg, int(np.prod(fixed.GetSize())), config)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=_LR, minStep=_MINSTEP, numberOfIterations=config.registration_iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    if min(fixed.GetSize()) >= 8:
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    else:  # ITK's Gaussian smoothing needs >= 4 voxels per axis after shrinking: one level on few slices
        reg.SetShrinkFactorsPerLevel([1])
        reg.SetSmoothingSigmasPerLevel([0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)

    record = RegistrationRecord(performed=True, center_mm=(float(center[0]), float(center[1]), float(center[2])))
    counter = [0]
    raised: list[BaseException] = []

    def on_iteration() -> None:
        # Ctrl-C and SIGTERM land here (the only Python code running during Execute). Raised through SimpleITK
        # they would print a traceback and come back as a RuntimeError, indistinguishable from an ITK failure:
        # record them, stop the optimiser, and re-raise them once Execute has returned.
        if raised:
            reg.StopRegistration()
            return
        try:
            _on_iteration(counter)
        except BaseException as exc:  # noqa: BLE001 -- recorded and re-raised after Execute, whatever it is
            raised.append(exc)
            reg.StopRegistration()

    try:
        before = _metric(fixed, moving, init, config)
        reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
        # An exception escaping the callback anyway (a signal at its very first instruction) is printed by
        # SimpleITK to sys.stderr: keep that traceback off the user's terminal; _callback_error re-raises it.
        with contextlib.redirect_stderr(io.StringIO()):
            result = reg.Execute(fixed, moving)
        if raised:
            raise raised[0]
        params = np.asarray(result.GetParameters(), dtype=np.float64)
        found = sitk.Euler3DTransform()
        found.SetCenter(tuple(float(c) for c in center))
        found.SetParameters(tuple(float(p) for p in params))
        after = _metric(fixed, moving, found, config)
    except RuntimeError as exc:  # ITK refuses e.g. regions with too few valid samples
        if raised and exc is not raised[0]:  # an interrupt or error inside our callback: not a registration failure
            raise raised[0] from None
        if raised:
            raise
        cause = _callback_error(str(exc))
        if cause is not None:
            raise cause from None
        text = " ".join(str(exc).split())
        text = text[text.find("ITK ERROR"):] if "ITK ERROR" in text else text
        record.reason = f"registration failed ({text[:300]}); geometry-only mapping kept"
        record.seconds = time.perf_counter() - start
        return record

    rot = np.degrees(params[:3])
    trans = params[3:6]
    record.translation_mm = (float(trans[0]), float(trans[1]), float(trans[2]))
    record.rotation_deg = (float(rot[0]), float(rot[1]), float(rot[2]))
    record.metric_before = before
    record.metric_after = after
    record.iterations = int(counter[0])
    record.stop_condition = reg.GetOptimizerStopConditionDescription()

    t_norm = float(np.linalg.norm(trans))
    if t_norm > config.max_translation_mm:
        record.reason = (f"rejected: translation {t_norm:.1f} mm exceeds the bound {config.max_translation_mm} mm; "
                         "geometry-only mapping kept")
    elif float(np.abs(rot).max()) > config.max_rotation_deg:
        record.reason = (f"rejected: rotation {np.abs(rot).max():.1f} deg exceeds the bound "
                         f"{config.max_rotation_deg} deg; geometry-only mapping kept")
    elif not after < before:
        record.reason = "rejected: mutual information did not improve; geometry-only mapping kept"
    else:
        record.accepted = True
        record.reason = "accepted"
        m = np.asarray(found.GetMatrix(), dtype=np.float64).reshape(3, 3)
        mat = np.eye(4)
        mat[:3, :3] = m
        # ITK: T(p) = M (p - c) + c + t
        mat[:3, 3] = center + trans - m @ center
        record.matrix = mat.tolist()
    record.seconds = time.perf_counter() - start
    return record
