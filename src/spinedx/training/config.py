"""One typed configuration for a cross-validation run, with the ``paper``, ``quick`` and ``cpu`` profiles.

Defaults follow Yeh et al. 2022, "Augmentation and training configurations" and "Evaluation
using cross-validation": ResNet50 initialised from ImageNet, Adam (lr 1e-4, beta1 0.5), L2
regularisation, batch 32, 100 epochs with early stopping on the lowest validation loss, benign
slices augmented 20x and malignant 40x, tenfold cross-validation, patient probability = the
highest slice probability, threshold 0.5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from spinedx.common import AGGREGATIONS
from spinedx.errors import SpinedxError

PROFILES = ("paper", "quick", "cpu")

#: The ``cpu`` profile, the main job's (issue 13): what differs from ``paper``. Chosen on development cohorts only
#: (seeds in :data:`spinedx.synth.seeds.TUNING_SEEDS`), then run once on the evaluation seeds: see docs/training.md,
#: "Why the CNN trailed, and the CPU profile". A smaller torchvision backbone (MobileNetV3-Small, 1.5 M parameters,
#: ~5x resnet18's training images per second on a CPU), a one-cycle schedule with Adam's default beta1, and no early
#: stopping: on ~17 inner patients the lowest validation loss picked early epochs (1-6 of 10) and cost AUC.
CPU_PROFILE: dict[str, Any] = {
    "backbone": "mobilenet_v3_small", "epochs": 14, "patience": 0, "views_benign": 2, "views_malignant": 4,
    "lr": 1e-3, "lr_schedule": "onecycle", "betas": (0.9, 0.999), "early_stop_on": "none",
    "recalibrate_bn": True, "tta": "affine8",
}
EARLY_STOP_CHOICES = ("inner", "outer", "none")
LR_SCHEDULES = ("constant", "onecycle")
#: Test-time augmentation choices (:class:`spinedx.models.tta.TTAViews`).
TTA_CHOICES = ("none", "affine8")

OPTIMISTIC_WARNING = (
    "OPTIMISTIC: early stopping used the outer validation fold (--early-stop-on outer), as the paper "
    "describes; each fold's model was chosen on the very patients it is scored on, so these metrics "
    "overstate performance on new patients. Use --early-stop-on inner for an unbiased estimate."
)


@dataclass(frozen=True)
class AffineRanges:
    """Ranges of the random affine augmentation (uniform draws; see :mod:`spinedx.training.augment`).

    Attributes:
        rotation_deg: Rotation in [-r, r] degrees (in-plane).
        translation: Shift in [-t, t] as a fraction of the patch size along each axis.
        scale: Zoom factor in [s0, s1]; > 1 enlarges the content.
    """

    rotation_deg: float = 15.0
    translation: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)


@dataclass
class CVConfig:
    """Everything that shapes a cross-validation run (written to ``config.yaml``).

    Attributes:
        profile: ``paper`` (full protocol), ``quick`` (fewer epochs and views, all else equal) or ``cpu``
            (the main job's: :data:`CPU_PROFILE`, a smaller backbone, a learning-rate schedule, no early stopping).
        folds: Number of outer folds (paper: 10).
        seed: Master seed; fold ``k`` derives its own seeds from ``(seed, k)``.
        backbone: torchvision backbone (paper: resnet50).
        pretrained: ``auto``, ``imagenet`` or ``none`` (see :func:`spinedx.models.build_model`).
        weights: Local ImageNet weights file, if any.
        epochs: Maximum epochs per fold (paper: 100).
        patience: Epochs without a lower validation loss before stopping; 0 disables stopping
            (the best epoch is still restored).
        views_benign: Augmented views of each benign slice per epoch (paper: 20).
        views_malignant: Augmented views of each malignant slice per epoch (paper: 40).
        lr: Adam learning rate (paper: 1e-4); the peak rate under a schedule.
        lr_schedule: ``constant`` (paper) or ``onecycle`` (warm-up then cosine annealing, per batch).
        betas: Adam betas (paper: beta1 = 0.5).
        weight_decay: L2 penalty (Adam ``weight_decay``, i.e. L2 added to the gradient) on every parameter,
            BatchNorm scales and shifts and biases included. The paper says "L2 regularization" without a
            value: 1e-4 is our assumption (docs/training.md, deviations).
        dropout: Dropout probability on the input of the final layer during training. The paper's Discussion
            says dropout was used and gives no rate: 0.5 is our assumption (docs/training.md, deviations).
        batch_size: Paper: 32.
        early_stop_on: ``inner`` (validation patients drawn from the training folds), ``outer`` (the paper
            literally: the held-out fold; results flagged optimistic) or ``none`` (no early stopping: every epoch
            runs and the last epoch's weights are kept; the inner patients are still held out and their loss is
            recorded for the learning curves, so the splits are those of ``inner``).
        recalibrate_bn: After training, re-estimate every BatchNorm layer's running mean and variance on the
            fold's training patches without augmentation (one pass, no weight changes; "precise BN", Wu & Johnson
            2021). The running statistics training leaves behind describe the augmented views (rotated, shifted,
            zero-padded), not the un-augmented patches the model is scored on. Paper and quick: off.
        tta: Test-time augmentation: ``none`` (paper and quick) or ``affine8`` (cpu): every probability the run's
            models give (out-of-fold predictions, ``spinedx predict``, the workstation, an exported bundle) is the
            mean over the patch and 8 fixed affine views inside the ``augment`` ranges
            (:class:`spinedx.models.tta.TTAViews`).
        inner_val_fraction: Share of the training patients held out for early stopping.
        threshold: Malignant when the patient probability is >= threshold (paper: 0.5).
        aggregation: Patient probability from slice probabilities: ``max`` (paper) or ``mean``.
        alpha: Error rate per class of the conformal prediction sets (``spinedx.decision.conformal``), in (0, 0.5):
            each class's set holds its true label for at least ``1 - alpha`` of new patients; the run evaluates the
            sets out of fold and deploys the thresholds (``conformal.json``). Default 0.10.
        augment: Affine ranges (rotation, translation, scale).
        threads: torch intra-op CPU threads of each fold (default 1). Every executor (this process, ``--jobs N``
            worker processes, Ray tasks, a resume) sets it for the fold's training and out-of-fold prediction and
            restores its own setting after, so one fold's computation is fixed by the configuration alone: floating-
            point sums are split between threads, so another count gives other last bits. It therefore shapes
            results (recorded, and a resume must use the same). None only in runs written before it was fixed
            (``threads: null`` in their ``config.yaml``): their folds used their process's own count (torch's
            default in this process, 1 in a ``--jobs`` worker, the CPUs per fold on Ray), which is what such a
            configuration still does.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        bf16: training under bf16 autocast: ``auto`` (on CUDA with bf16; fp32 on every CPU), ``on`` or ``off``.
            Prediction (out of fold included) is fp32 whatever this says (:mod:`spinedx.inference`).
        channels_last: Use the channels-last memory format (faster convolutions on CPU and GPU).
        compile: ``auto`` (only for the paper profile, where it pays off), ``on`` or ``off``.
    """

    profile: str = "paper"
    folds: int = 10
    seed: int = 0
    backbone: str = "resnet50"
    pretrained: str = "auto"
    weights: str | None = None
    epochs: int = 100
    patience: int = 10
    views_benign: int = 20
    views_malignant: int = 40
    lr: float = 1e-4
    lr_schedule: str = "constant"
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 1e-4
    dropout: float = 0.5
    batch_size: int = 32
    early_stop_on: str = "inner"
    recalibrate_bn: bool = False
    tta: str = "none"
    inner_val_fraction: float = 0.1
    threshold: float = 0.5
    aggregation: str = "max"
    alpha: float = 0.10
    augment: AffineRanges = field(default_factory=AffineRanges)
    threads: int | None = 1
    device: str = "auto"
    bf16: str = "auto"
    channels_last: bool = True
    compile: str = "auto"

    @classmethod
    def from_profile(cls, profile: str = "paper", **overrides: Any) -> CVConfig:
        """The profile's defaults with ``overrides`` (None values are ignored)."""
        if profile not in PROFILES:
            raise SpinedxError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}", where="--profile")
        base: dict[str, Any] = {}
        if profile == "quick":
            # Sized so 10 folds over the default 190-patient synthetic cohort (570 slices) take
            # about 10 minutes on 2 CPU cores; everything but epochs and views is the paper's.
            base = {"epochs": 8, "patience": 4, "views_benign": 1, "views_malignant": 2}
        elif profile == "cpu":
            # The main job's profile (issue 13): smaller backbone, more views, one-cycle schedule, last epoch kept.
            base = dict(CPU_PROFILE)
        base.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(base) - names
        if unknown:
            raise SpinedxError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        if isinstance(base.get("augment"), dict):
            aug = dict(base["augment"])
            if "scale" in aug:
                aug["scale"] = tuple(aug["scale"])
            base["augment"] = AffineRanges(**aug)
        if "betas" in base:
            base["betas"] = tuple(base["betas"])
        cfg = cls(profile=profile, **base)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`SpinedxError` for values that cannot work (every problem named in one message)."""
        problems = self._count_problems() + self._range_problems() + self._choice_problems()
        if problems:
            raise SpinedxError("; ".join(problems) + ".", where="configuration")

    def _count_problems(self) -> list[str]:
        """Counts that must be large enough: folds, epochs, patience, views, batch size, threads."""
        problems = []
        if self.folds < 2:
            problems.append(f"folds must be >= 2 (got {self.folds})")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.patience < 0:
            problems.append(f"patience must be >= 0 (got {self.patience})")
        if self.views_benign < 1 or self.views_malignant < 1:
            problems.append("views per slice must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.batch_size < 2:
            problems.append("batch_size must be >= 2 (batch normalisation)")
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            problems.append(f"threads must be a whole number >= 1 (got {self.threads!r})")
        return problems

    def _choice_problems(self) -> list[str]:
        """Settings that must be one of their choices."""
        problems = []
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be {' or '.join(LR_SCHEDULES)} (got {self.lr_schedule!r})")
        if self.tta not in TTA_CHOICES:
            problems.append(f"tta must be {' or '.join(TTA_CHOICES)} (got {self.tta!r})")
        if self.early_stop_on not in EARLY_STOP_CHOICES:
            problems.append(f"early_stop_on must be inner, outer or none (got {self.early_stop_on!r})")
        if self.aggregation not in AGGREGATIONS:
            problems.append(f"aggregation must be max or mean (got {self.aggregation!r})")
        if self.bf16 not in ("auto", "on", "off") or self.compile not in ("auto", "on", "off"):
            problems.append("bf16 and compile must be auto, on or off")
        return problems

    def _range_problems(self) -> list[str]:
        """Fractions and rates that must lie in their interval."""
        problems = []
        if not 0.0 < self.inner_val_fraction < 0.5:
            problems.append(f"inner_val_fraction must be in (0, 0.5) (got {self.inner_val_fraction})")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold must be in [0, 1] (got {self.threshold})")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 < self.alpha < 0.5:
            problems.append(f"alpha must be a number in (0, 0.5), the conformal error rate per class (got "
                            f"{self.alpha!r}; 0.10: each class's set holds its label for at least 90% of patients)")
        return problems

    @property
    def optimistic(self) -> bool:
        """True when early stopping saw the outer fold (the paper's literal protocol)."""
        return self.early_stop_on == "outer"

    @property
    def restores_best_epoch(self) -> bool:
        """Whether a fold keeps its best epoch (early stopping) rather than its last (``early_stop_on: none``)."""
        return self.early_stop_on != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples as lists), for YAML/JSON."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["augment"] = {**asdict(self.augment), "scale": list(self.augment.scale)}
        return d

    @classmethod
    def from_record(cls, data: Any, where: str) -> CVConfig:
        """The configuration written by :meth:`to_dict` (a run's ``config.yaml``), read back strictly.

        Every field must be present with a value of its type; unknown keys are refused. Nothing is
        filled in from defaults: a run folder says exactly how it was made, or it is refused.

        Raises:
            SpinedxError: naming ``where`` (the file) and the offending keys.
        """
        if isinstance(data, dict) and "dropout" not in data:
            # written before the dropout setting existed: those runs had no dropout (a fact, not a default)
            data = {**data, "dropout": 0.0}
        if isinstance(data, dict) and "lr_schedule" not in data:
            # written before the schedule setting existed: those runs trained at a constant rate (a fact)
            data = {**data, "lr_schedule": "constant"}
        if isinstance(data, dict) and "recalibrate_bn" not in data:
            # written before the setting existed: those runs kept training's running statistics (a fact)
            data = {**data, "recalibrate_bn": False}
        if isinstance(data, dict) and "alpha" not in data:
            # written before conformal refer existed: alpha shaped nothing such a run computed (it is used only when
            # the run is finished, and those runs have no honest calibration data), so the default stands in
            data = {**data, "alpha": 0.10}
        if isinstance(data, dict) and "tta" not in data:
            # written before the setting existed: those runs predicted the patch alone (a fact)
            data = {**data, "tta": "none"}
        _check_keys(data, [f.name for f in dataclasses.fields(cls)], "config", where)
        problems = [p for f in dataclasses.fields(cls) if f.name != "augment"
                    for p in _type_problems(f"config.{f.name}", data[f.name], _FIELD_TYPES[f.name])]
        aug = data["augment"]
        _check_keys(aug, [f.name for f in dataclasses.fields(AffineRanges)], "config.augment", where)
        problems += _type_problems("config.augment.rotation_deg", aug["rotation_deg"], "float")
        problems += _type_problems("config.augment.translation", aug["translation"], "float")
        problems += _type_problems("config.augment.scale", aug["scale"], "pair")
        problems += _type_problems("config.betas", data["betas"], "pair") if "betas" in data else []
        if problems:
            raise SpinedxError("; ".join(problems) + ". The file was changed by hand or by another program; "
                               "rerun spinedx cv into a new folder", where=where)
        values = dict(data)
        values["betas"] = (float(data["betas"][0]), float(data["betas"][1]))
        values["augment"] = AffineRanges(float(aug["rotation_deg"]), float(aug["translation"]),
                                         (float(aug["scale"][0]), float(aug["scale"][1])))
        for name, kind in _FIELD_TYPES.items():
            if kind == "float" and values[name] is not None:
                values[name] = float(values[name])
        cfg = cls(**values)
        try:
            cfg.validate()
        except SpinedxError as exc:
            raise SpinedxError(f"{exc.message} Rerun spinedx cv into a new folder.", where=where) from None
        return cfg

    def differences(self, other: CVConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """``"key: A there, B here"`` for every field that differs from ``other`` (except ``ignore``)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {theirs[k]!r} there, {mine[k]!r} now" for k in mine if k not in ignore and mine[k] != theirs[k]]


#: Keys that may change between a run and its resume without changing results: none. ``threads`` (the per-fold
#: intra-op thread count: how float sums are split) and ``compile`` (fused kernels round differently) both change the
#: last bits of a fold's results, so a resume must use the run's values (a run written before ``threads`` was fixed,
#: ``threads: null``, resumes with any count: :meth:`spinedx.runfolder.RunRecord.resume_problems`).
RESUMABLE_KEYS: tuple[str, ...] = ()

# Value kinds of the fields in config.yaml (checked by CVConfig.from_record).
_FIELD_TYPES: dict[str, str] = {
    "profile": "str", "folds": "int", "seed": "int", "backbone": "str", "pretrained": "str", "weights": "str?",
    "epochs": "int", "patience": "int", "views_benign": "int", "views_malignant": "int", "lr": "float",
    "betas": "pair", "weight_decay": "float", "dropout": "float", "batch_size": "int", "early_stop_on": "str",
    "lr_schedule": "str", "recalibrate_bn": "bool", "tta": "str",
    "inner_val_fraction": "float", "threshold": "float", "aggregation": "str", "alpha": "float", "augment": "augment",
    "threads": "int?", "device": "str", "bf16": "str", "channels_last": "bool", "compile": "str",
}


def _check_keys(data: Any, expected: list[str], what: str, where: str) -> None:
    if not isinstance(data, dict):
        raise SpinedxError(f"{what} must be a mapping, found {type(data).__name__}; rerun spinedx cv into a new "
                           "folder", where=where)
    missing = [k for k in expected if k not in data]
    unknown = sorted(str(k) for k in data if k not in expected)
    if missing or unknown:
        parts = ([f"missing keys {', '.join(missing)}"] if missing else []) + \
                ([f"unknown keys {', '.join(unknown)}"] if unknown else [])
        raise SpinedxError(f"{what}: {'; '.join(parts)}; this file was not written by this spinedx version's "
                           "spinedx cv (rerun spinedx cv into a new folder)", where=where)


def _type_problems(name: str, value: Any, kind: str) -> list[str]:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None:
        return [] if optional else [f"{name} is empty"]
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "pair": isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
        "augment": True,
    }[kind]
    return [] if ok else [f"{name} = {value!r} is not a {kind if kind != 'pair' else 'pair of numbers'}"]
