"""experiments.py: the run lists behind the notebooks are valid, unique and shaped as documented."""
from __future__ import annotations

import pytest

from procrustes import experiments as ex
from procrustes.config import validate


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_all_runs_valid_and_unique(profile):
    runs = ex.all_runs(profile)
    assert len({c.key() for c in runs}) == len(runs)
    for c in runs:
        validate(c)
        assert c.profile == profile


def test_dynamics_runs():
    runs = ex.dynamics_runs("paper")
    assert [(c.dataset, c.imbalance, c.ratio, c.method) for c in runs] == [
        ("cifar10", "step", 100, "erm"), ("cifar10", "step", 100, "mfw")]


def test_paper_table_grid():
    runs = ex.cifar_table_runs("paper")
    assert len(runs) == 2 * 2 * 2 * len(ex.TABLE_METHODS) * 3
    assert {(c.dataset, c.imbalance, c.ratio) for c in runs} == {
        (d, i, r) for d in ("cifar10", "cifar100") for i in ("exp", "step") for r in (100, 10)}
    assert {c.seed for c in runs} == {0, 1, 2}


def test_tiny_runs_outside_paper_are_the_slice():
    for c in ex.tiny_table_runs("smoke"):
        assert (c.dataset, c.max_per_class, c.epochs, c.resolved_model()) == ("tinyimagenet", 10, 1, "resnet18")
    assert all(c.epochs == 120 for c in ex.tiny_table_runs("paper"))


def test_ablations_cover_every_reconstructed_choice():
    groups = {v.group for v in ex.ablation_variants("paper")}
    assert groups == {"mixing point", "selection rule", "law of lam", "when active", "relatives"}
    assert len(ex.ablation_variants("quick")) < len(ex.ablation_variants("paper"))


def test_only_filters_notebooks():
    only = ex.all_runs("smoke", ["02"])
    assert [c.method for c in only] == ["erm"]
    assert set(c.key() for c in only) <= set(c.key() for c in ex.all_runs("smoke"))
