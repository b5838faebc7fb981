"""The method's named choices, torch-free: where each model can mix features, and MFW's selection rules and laws
of lam. The method's modules (models, weaken) check against these; the run config validates user input against
the same tuples, so that validating a config needs no model and the method never imports the trainer."""
from __future__ import annotations

MFW_SELECT = ("median", "power", "inverse", "all")  # p(c) rules (mixing.selection_probs)
MFW_LAM = ("uniform", "beta", "beta-folded")  # laws of lam (mixing.draw_mfw)
# where each of our models can mix features (procrustes.method.models runs them as named stages)
MIXING_POINTS = {
    "resnet32": ("input", "stem", "stage1", "stage2", "stage3", "feature"),
    "resnet18": ("input", "stem", "stage1", "stage2", "stage3", "stage4", "feature"),
}


def mixing_points(model: str) -> tuple[str, ...]:
    return MIXING_POINTS[model]
