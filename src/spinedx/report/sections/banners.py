"""The banners at the top of the report: research use, synthetic cohort, optimistic estimates, weights, folds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spinedx import RESEARCH_USE_ONLY
from spinedx.common import SYNTHETIC_BANNER

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """Banners: always research use only; the others when they apply (each with its own HTML id)."""
    rec = inp.record
    page.banners.append(("research", f"{RESEARCH_USE_ONLY[0].upper()}{RESEARCH_USE_ONLY[1:]}. "
                                     "All figures are cross-validated estimates on the cohort below."))
    if rec.synthetic:
        page.banners.append(("synthetic", f"{SYNTHETIC_BANNER[0].upper()}{SYNTHETIC_BANNER[1:]}. The run was trained "
                                          "on a simulated cohort (spinedx synth) and the readers are simulated: "
                                          "every figure below describes the simulation and says nothing about "
                                          "patients. Reader-vs-model comparisons (Table 2's reader rows, the "
                                          "McNemar tests) are illustrations of the method."))
    if rec.optimistic:
        page.banners.append(("optimistic", "Optimistic estimates: early stopping chose each fold's epoch on that "
                                           "fold's own validation patients (as the paper describes), so the "
                                           "performance below is biased upward."))
    if not rec.weights.pretrained:
        why = ("no local ImageNet weights file was found" if rec.weights.source == "fallback-none"
               else "as asked (pretrained: none)")
        page.banners.append(("warning", f"No ImageNet weights: the models were trained from scratch ({why}), unlike "
                                        "the paper, which initialised ResNet50 from ImageNet. See Provenance."))
    radiomics = (inp.metrics.get("baselines") or {}).get("radiomics") or {}
    vs = radiomics.get("vs_model") if isinstance(radiomics.get("vs_model"), dict) else None
    if vs is not None and vs.get("verdict") != "exceeds":
        why = ("the CNN's AUC is the higher, but the interval of the difference includes zero: this cohort cannot "
               "tell it apart from hand-crafted radiomics features with a logistic regression, fitted on the same "
               "folds" if vs.get("verdict") == "not shown" else
               "hand-crafted radiomics features with a logistic regression, fitted on the same folds, do as well or "
               "better")
        page.banners.append(("baseline", f"{vs['sentence'][0].upper()}{vs['sentence'][1:]}: {why}. See Model vs "
                                         "baselines."))
    from spinedx.models.run import oof_inference

    note = oof_inference(inp.run, list(inp.fold_models.paths), rec)["note"]
    if note:  # out-of-fold probabilities computed (or perhaps computed) under bf16, not as the deployed model
        page.banners.append(("precision", f"{note[0].upper()}{note[1:]}."))
    missing = inp.fold_models.missing
    if missing:
        page.banners.append(("folds", f"Fold model(s) {', '.join(map(str, missing))} of {rec.config.folds} are "
                                      "missing (--allow-missing-folds): their gallery cases have no heatmap."))
    if inp.patches_changed:
        page.banners.append(("patches", "The patches file changed since training (--allow-changed-patches): the "
                                        "gallery shows no images."))
