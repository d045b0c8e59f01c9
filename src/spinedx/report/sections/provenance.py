"""Provenance: run and cohort paths, what the run was trained on, weights, versions, the whole config.yaml."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spinedx import __version__

if TYPE_CHECKING:
    from spinedx.report.loading import ReportInputs
    from spinedx.report.page import Page


def build(inp: ReportInputs, page: Page) -> None:
    """The provenance table, package versions (run and report) and the run's configuration."""
    import yaml

    from spinedx.models.tta import TTAViews
    from spinedx.provenance import provenance

    rec = inp.record
    w = rec.weights
    prov = provenance()
    ex = rec.patches.extract
    page.provenance = [
        ["Run folder", str(inp.run.path.resolve())],
        ["Cohort manifest", str(inp.cohort_path) if inp.cohort_path else "not found"],
        ["Patches", f"{rec.patches.path} (sha256 {rec.patches.sha256})"],
        ["Patches as trained on", "yes" if inp.patches is not None else ("no: changed since training"
                                                                          if inp.patches_changed else "not found")],
        ["Extraction settings", "not recorded" if ex is None else ", ".join(f"{k} {v}" for k, v in ex.items())],
        ["Synthetic cohort", "yes" if rec.synthetic else "no"],
        ["Backbone", rec.config.backbone],
        ["ImageNet weights used", "yes" if w.pretrained else "no"],
        ["Weights", " ".join(str(v) for v in (w.source, w.path, w.sha256) if v) or "n/a"],
        ["Weights note", w.message],
        ["Fold models", f"{len(inp.fold_models.paths)} of {rec.config.folds}"
         + (f" (missing: {', '.join(map(str, inp.fold_models.missing))})" if inp.fold_models.missing else "")],
        ["Test-time augmentation", TTAViews.from_config(rec.config).describe()],
        ["Early stopping optimistic", "yes (validation fold chose the epoch)" if rec.optimistic else "no"],
        ["Decision threshold", f"{rec.threshold:g}"],
        ["Run git commit", str(rec.git_commit or "n/a")],
        ["Report made by", f"spinedx {__version__}, git {prov['git_commit'] or 'n/a'}, {prov['created']}"],
    ]
    run_versions = rec.versions
    page.versions = [[k, str(run_versions.get(k, "")), str(v)] for k, v in prov["versions"].items()]
    page.config_text = yaml.safe_dump(rec.to_dict(), sort_keys=False, default_flow_style=False)
