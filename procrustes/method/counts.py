"""Class counts and reporting groups: pure functions of the counts, importable by config and data alike
(no torch, no images), so neither of those two modules needs the other."""
from __future__ import annotations

import numpy as np

# (number of classes, images per class of the full training set: the paper's n_max) of the named benchmarks
PAPER_SIZES = {"cifar10": (10, 5000), "cifar100": (100, 500), "tinyimagenet": (200, 500)}

# LDAM-DRW / OLTR thresholds at the paper's scale: many-shot > 100 training images, few-shot < 20
MANY_SHOT, FEW_SHOT = 100, 20


def class_counts(num_classes: int, n_max: int, imbalance: str, ratio: float) -> list[int]:
    """Per-class training counts, exactly as the LDAM-DRW code computes them (class 0 is the largest)."""
    if imbalance in ("exp", "step") and num_classes < 2:
        raise ValueError(f"{imbalance} imbalance needs at least 2 classes, got {num_classes}")
    if imbalance == "exp":
        return [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if imbalance == "step":
        half = num_classes // 2
        return [n_max] * half + [int(n_max * (1.0 / ratio))] * (num_classes - half)
    if imbalance == "none":
        return [n_max] * num_classes
    raise ValueError(f"unknown imbalance {imbalance!r}: choose one of exp, step, none")


def major_classes(counts: list[int] | np.ndarray) -> np.ndarray:
    """Boolean mask: classes with at least the median count (for step imbalance, exactly the n_max classes).

    When the smallest count is the median (step imbalance with an odd number of classes, [100, 100, 10, 10, 10]:
    the minority is the larger half), "at least the median" would call every class major; the classes above the
    median are the major ones then. Equal counts (nothing to split) stay all major."""
    c = np.asarray(counts)
    mask = c >= np.median(c)
    above = c > np.median(c)
    return above if mask.all() and above.any() else mask


def group_scale(dataset: str, max_per_class: int | None) -> float:
    """The run's n_max over the benchmark's paper n_max (1 for the paper profile and for user data)."""
    size = PAPER_SIZES.get(dataset)
    if size is None or not max_per_class:
        return 1.0
    return min(max_per_class, size[1]) / size[1]


def shot_thresholds(scale: float = 1.0) -> tuple[float, float]:
    """(many-shot above, few-shot below) in training images, scaled by `scale` = the run's n_max over the
    benchmark's paper n_max (1 in the paper profile: 100 and 20; CIFAR-10 at n_max 2000: 40 and 8)."""
    return MANY_SHOT * scale, FEW_SHOT * scale


def group_definition(imbalance: str, scale: float = 1.0) -> str:
    if imbalance == "step":
        return "major: classes with at least the median training count; minor: the rest"
    many, few = shot_thresholds(scale)
    return (f"many: more than {many:g} training images; medium: {few:g} to {many:g}; few: fewer than {few:g}"
            + (f" (the usual 100 / 20 scaled by n_max / paper n_max = {scale:g})" if scale != 1 else ""))


def report_groups(counts: list[int] | np.ndarray, imbalance: str, scale: float = 1.0) -> dict[str, list[int]]:
    """THE reporting groups of a run (its result summary, the CLI, every table, figure and claim): the non-empty
    groups of `class_groups`, or, when one of them holds every class (exp-10 at CIFAR-10 size: all many-shot), the
    halves of the median split ("upper half": `major_classes`; "lower half": the rest), so that head and tail
    can still be contrasted. Equal counts (no split to make) keep the one group."""
    g = {k: v for k, v in class_groups(counts, imbalance, scale).items() if v}
    if len(g) > 1:
        return g
    upper = major_classes(counts)
    halves = {"upper half": np.where(upper)[0].tolist(), "lower half": np.where(~upper)[0].tolist()}
    return halves if all(halves.values()) else g


def report_group_definition(counts: list[int] | np.ndarray, imbalance: str, scale: float = 1.0) -> str:
    """The definition of `report_groups` for these counts, in words."""
    if "upper half" in report_groups(counts, imbalance, scale):
        return ("upper half: classes with at least the median training count; lower half: the rest (every class is in "
                "one shot group: " + group_definition(imbalance, scale) + ")")
    return group_definition(imbalance, scale)


def class_groups(counts: list[int] | np.ndarray, imbalance: str, scale: float = 1.0) -> dict[str, list[int]]:
    """Reporting groups: major/minor for step; many/medium/few otherwise, with the thresholds of
    `shot_thresholds(scale)`. A group may be empty (CIFAR-10's smallest class, n_max / rho, is never few-shot)."""
    c = np.asarray(counts)
    if imbalance == "step":
        mask = major_classes(c)
        return {"major": np.where(mask)[0].tolist(), "minor": np.where(~mask)[0].tolist()}
    many, few = shot_thresholds(scale)
    return {
        "many": np.where(c > many)[0].tolist(),
        "medium": np.where((c >= few) & (c <= many))[0].tolist(),
        "few": np.where(c < few)[0].tolist(),
    }
