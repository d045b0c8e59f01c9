"""Which cohort seeds may be used to tune the simulation, and which seed evaluates (issue 12 item 3).

Anything tuned by looking at results (the difficulty levels of :data:`spinedx.synth.phantom.DIFFICULTY`,
the quick training profile) is tuned only on cohorts whose seed lies in :data:`DEVELOPMENT_SEEDS`;
:data:`TUNING_SEEDS` lists the ones actually used. The main job (``spinedx demo``) and every headline
figure use :data:`EVALUATION_SEED`, which lies outside that range and was never used for tuning.
``synth.json`` records both facts for the cohort it describes.
"""

from __future__ import annotations

#: Seeds reserved for development: tuning may look at cohorts made with these, never at others.
DEVELOPMENT_SEEDS: range = range(100)

#: Cohort seeds that were used to tune something, with what (see docs/synth.md, "Tuning and evaluation").
TUNING_SEEDS: dict[int, str] = {
    0: "historical: medium difficulty (model in the loop) and the quick training profile (cv seed 0), before "
       "issue 12",
    1: "difficulty levels (issue 12): first-order probes on the fast stand-in (200 patients) and on synth + "
       "extract (60 patients); the probe table's tuning seed; the cpu training profile (issue 13: 190 patients, "
       "generator before the causal-chain rework, cv seed 0, outer folds 0-1; benchmarks/cnn_vs_radiomics.py)",
    2: "difficulty levels (issue 12): first-order probes on the fast stand-in (200 patients) and on synth + "
       "extract (60 patients)",
    5: "the cpu training profile of the main job (issue 13): backbone speed, BatchNorm momentum, early stopping "
       "vs last epoch, epochs (190 patients, causal-chain generator, cv seed 0, all 10 folds; "
       "docs/data/training_dev_seed5.json); after-training variants: weight averaging, test-time augmentation, "
       "BatchNorm re-estimation (docs/data/training_dev_bn.json); the test-time views "
       "(docs/data/training_dev_tta.json)",
    6: "the cpu training profile (issue 13): a second development cohort for the after-training variants "
       "(BatchNorm re-estimation chosen; 190 patients, cv seed 0, all 10 folds; docs/data/training_dev_bn.json); the "
       "test-time views (fixed affine8 vs random views, on the same fold models; docs/data/training_dev_tta.json); "
       "the domain check's threshold quantile (issue 20: its reference cohort of 120 patients; docs/decision.md)",
    7: "the cpu training profile (issue 13): a third development cohort for the after-training variants "
       "(190 patients, cv seed 0, all 10 folds; docs/data/training_dev_bn.json); the test-time views "
       "(docs/data/training_dev_tta.json); the domain check's threshold quantile (issue 20: 48 held-out patients "
       "of this seed; docs/decision.md)",
}

#: The default cohort seed of the main job: outside DEVELOPMENT_SEEDS, never used for tuning.
EVALUATION_SEED: int = 2022

assert EVALUATION_SEED not in DEVELOPMENT_SEEDS and EVALUATION_SEED not in TUNING_SEEDS
assert all(s in DEVELOPMENT_SEEDS for s in TUNING_SEEDS)


def tuning_record(seed: int) -> dict[str, object]:
    """What ``synth.json`` says about tuning for a cohort made with ``seed``."""
    return {
        "tuning_seeds": sorted(TUNING_SEEDS),
        "tuning_seed_uses": {str(k): v for k, v in sorted(TUNING_SEEDS.items())},
        "seed_used_for_tuning": seed in TUNING_SEEDS,
        "seed_in_development_range": seed in DEVELOPMENT_SEEDS,
        "development_seeds": [DEVELOPMENT_SEEDS.start, DEVELOPMENT_SEEDS.stop - 1],
        "evaluation_seed": EVALUATION_SEED,
    }
