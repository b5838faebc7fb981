"""experiments.py: the run lists behind the notebooks are valid, unique and shaped as documented."""
from __future__ import annotations

import pytest

from procrustes.results import experiments as ex
from procrustes.training.config import make_config, validate


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_all_runs_valid_and_unique(profile):
    runs = ex.all_runs(profile)
    assert len({c.key() for c in runs}) == len(runs)
    for c in runs:
        validate(c)
        assert c.profile == profile


def test_dynamics_runs():
    runs = ex.dynamics_runs("paper", seeds=(0,))
    assert [(c.dataset, c.imbalance, c.ratio, c.method) for c in runs] == [
        ("cifar10", "step", 100, "erm"), ("cifar10", "step", 100, "mfw")]
    assert [(c.method, c.seed) for c in ex.dynamics_runs("cpu")] == [(m, s) for s in (0, 1, 2) for m in ("erm", "mfw")]
    assert {c.imbalance for c in ex.dynamics_runs("cpu", imbalance="exp")} == {"exp"}


def test_cpu_profile_is_the_evidence_regime():
    c = ex.dynamics_runs("cpu")[0]
    assert (c.max_per_class, c.epochs, c.schedule()) == (2000, 80, (2.0, (64, 72), (0.01, 1e-4), 64))


def test_cpu_training_order_follows_issue_10():
    """Rows a-e: step-100 ERM/MFW over seeds, exp-100 ERM/MFW, LDAM-DRW pairs, ablations (seed 0), rho=10."""
    runs = ex.all_runs("cpu")
    labels = [(c.imbalance, c.ratio, c.method, c.seed) for c in runs[:12]]
    assert labels[:6] == [("step", 100, m, s) for s in (0, 1, 2) for m in ("erm", "mfw")]
    assert labels[6:12] == [("exp", 100, m, s) for s in (0, 1, 2) for m in ("erm", "mfw")]
    rows = [ex.priority(c)[0] for c in runs]
    assert rows == sorted(rows)
    assert {c.seed for c in runs if ex.priority(c)[0] == 3} == {0}  # ablations: seed 0
    assert all(c.imbalance == "step" for c in runs if ex.priority(c)[0] == 3)
    # a one-field change of an LDAM-DRW run is an ablation (row d), trained after row c's seeds 1 and 2
    until = make_config("cpu", imbalance="step", ratio=100, method="mfw+ldam-drw", mfw_active="until-drw")
    assert until.key() in {c.key() for c in runs} and ex.priority(until) == (3, 0)
    assert ex.priority(make_config("cpu", imbalance="step", ratio=100, method="mfw+ldam-drw", seed=2)) == (2, 2)


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
    assert groups == {"mixing point", "selection rule", "law of lam", "when active (+DRW)", "when active (+LDAM-DRW)", "relatives"}
    assert len(ex.ablation_variants("cpu")) < len(ex.ablation_variants("paper"))
    cpu = {(v.group, v.label) for v in ex.ablation_variants("cpu")}
    for point in ("input", "stem", "stage1", "stage2", "stage3"):
        assert ("mixing point", point) in cpu
    for rel in ("mixup", "manifold mixup", "Remix"):
        assert ("relatives", rel) in cpu


def test_only_filters_notebooks():
    only = ex.all_runs("smoke", ["02"])
    assert [c.method for c in only] == ["erm"] * len(ex.SEEDS["smoke"])
    assert set(c.key() for c in only) <= set(c.key() for c in ex.all_runs("smoke"))


def test_two_selection_rules_with_the_same_probabilities_are_one_training():
    """On step imbalance the median rule and the power rule (gamma 1) both give p = 1 to the major classes and 0
    to the minor ones: one training under two configs. Not on exp imbalance, nor for other rules or seeds."""
    step = make_config("cpu", dataset="cifar10", imbalance="step", ratio=100, method="mfw")
    power = step.replace(mfw_select="power", mfw_gamma=1.0)
    assert step.key() != power.key() and ex.training_signature(step) == ex.training_signature(power)
    assert ex.training_signature(step.replace(val_per_class=100, eval_per_class=0)) == ex.training_signature(step)
    exp = step.replace(imbalance="exp")
    assert ex.training_signature(exp) != ex.training_signature(exp.replace(mfw_select="power", mfw_gamma=1.0))
    # on step any power of (n - n_min) / span is 1 or 0: gamma 2 is the same training too
    assert ex.training_signature(step.replace(mfw_select="power", mfw_gamma=2.0)) == ex.training_signature(step)
    for other in (step.replace(mfw_select="all"), step.replace(mfw_select="inverse"), step.replace(seed=1),
                  step.replace(method="mfw+drw"), step.replace(mfw_point="stage2"), step.replace(mfw_prob=0.5)):
        assert ex.training_signature(step) != ex.training_signature(other)


def test_the_ablation_table_marks_variants_that_are_one_training():
    """Notebook 07: the rows 'median' and 'power (gamma 1)' of step-100 are one training; the table says so, and
    the note says their gap measures the code path their runs took (from provenance), not the rule."""
    from procrustes.results import tables

    from .test_tables_plots import fake_result

    pairs = ex.ablation_runs("cpu")
    configs = list({c.key(): c for _, c in pairs}.values())
    results = []
    for i, c in enumerate(configs):
        r = fake_result(c, 40.0 + i)
        r["provenance"]["compiled"] = c.mfw_select == "power"  # the power run compiled, the rest eager
        results.append(r)
    df = tables.ablation_table(pairs, results)
    marked = df[df.same_training_as != ""]
    assert sorted(zip(marked.label, marked.same_training_as)) == [("median", "power (gamma 1)"), ("power (gamma 1)", "median")]
    assert set(df[df.label == "power (gamma 1)"].code_path) == {"compiled"} and set(df[df.label == "median"].code_path) == {"eager"}
    [note] = tables.same_training_notes(df)
    assert "'median' and 'power (gamma 1)' are the same training" in note
    assert "it measures the code path (median: eager; power (gamma 1): compiled)" in note
