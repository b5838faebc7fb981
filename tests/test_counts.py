"""data.py without images: the LDAM-DRW class counts, the seeded subset choice, class groups; and the
`counts` command line."""
from __future__ import annotations

import numpy as np
import pytest

from procrustes.training.config import ConfigError
from procrustes.method.counts import group_definition, group_scale, shot_thresholds
from procrustes.training.data import benchmark_counts, class_counts, class_groups, major_classes, subset_indices

from .conftest import cli_env, run_cli_many, ldam_drw_reference

CIFAR10_EXP100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]

TOTALS = [
    ("cifar10", "exp", 100, 12406),
    ("cifar10", "exp", 10, 20431),
    ("cifar10", "step", 100, 25250),
    ("cifar10", "step", 10, 27500),
    ("cifar100", "exp", 100, 10847),
    ("cifar100", "step", 100, 25250),
]


def test_cifar10_exp100_per_class():
    assert benchmark_counts("cifar10", "exp", 100) == CIFAR10_EXP100
    assert class_counts(10, 5000, "exp", 100) == CIFAR10_EXP100


@pytest.mark.parametrize("dataset,imbalance,ratio,total", TOTALS)
def test_benchmark_totals(dataset, imbalance, ratio, total):
    counts = benchmark_counts(dataset, imbalance, ratio)
    assert sum(counts) == total
    assert len(counts) == {"cifar10": 10, "cifar100": 100}[dataset]
    assert counts[0] == {"cifar10": 5000, "cifar100": 500}[dataset]


def test_step_profile_shape():
    counts = class_counts(10, 5000, "step", 100)
    assert counts == [5000] * 5 + [50] * 5
    counts = class_counts(100, 500, "step", 10)
    assert counts == [500] * 50 + [50] * 50


def test_exp_profile_is_non_increasing_and_ends_at_n_max_over_rho():
    counts = class_counts(100, 500, "exp", 100)
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts[0] == 500 and counts[-1] == 5


def test_none_and_max_per_class():
    assert class_counts(10, 7, "none", 100) == [7] * 10
    # max_per_class shrinks n_max, never grows it past the benchmark's
    assert benchmark_counts("cifar10", "exp", 10, max_per_class=100)[0] == 100
    assert benchmark_counts("cifar10", "exp", 10, max_per_class=10**6)[0] == 5000
    assert benchmark_counts("cifar10", "step", 10, max_per_class=40) == [40] * 5 + [4] * 5


def test_unknown_imbalance_and_dataset():
    with pytest.raises(ValueError, match="unknown imbalance"):  # the one definition (counts); user input: ConfigError
        class_counts(10, 100, "linear", 10)
    with pytest.raises(ConfigError, match="unknown imbalance"):
        benchmark_counts("cifar10", "linear", 10)
    with pytest.raises(ConfigError):
        benchmark_counts("mnist", "exp", 10)
    with pytest.raises(ConfigError):  # its counts depend on its files
        benchmark_counts("imagefolder", "exp", 10)


@pytest.mark.parametrize("seed", [0, 1])
def test_subset_indices_reproduces_the_reference(seed):
    labels = np.random.RandomState(123).permutation(np.repeat(np.arange(10), 300)).astype(np.int64)
    counts = class_counts(10, 300, "exp", 100)
    ours = subset_indices(labels, counts, seed)
    ref = ldam_drw_reference(labels, counts, seed)
    np.testing.assert_array_equal(ours, ref)
    assert np.bincount(labels[ours], minlength=10).tolist() == counts
    assert len(np.unique(ours)) == len(ours)


def test_subset_indices_leaves_global_numpy_state_alone_and_depends_on_seed():
    labels = np.repeat(np.arange(3), 50)
    state = np.random.get_state()[1].copy()
    a = subset_indices(labels, [20, 10, 5], 0)
    assert np.array_equal(np.random.get_state()[1], state)
    b = subset_indices(labels, [20, 10, 5], 1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, subset_indices(labels, [20, 10, 5], 0))


def test_subset_indices_asks_too_much():
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(ConfigError, match="class 1"):
        subset_indices(labels, [5, 6])


def test_major_classes_and_groups():
    step = class_counts(10, 5000, "step", 100)
    assert major_classes(step).tolist() == [True] * 5 + [False] * 5
    assert class_groups(step, "step") == {"major": [0, 1, 2, 3, 4], "minor": [5, 6, 7, 8, 9]}
    # many > 100, medium 20..100, few < 20
    assert class_groups(CIFAR10_EXP100, "exp") == {"many": list(range(8)), "medium": [8, 9], "few": []}
    g = class_groups(benchmark_counts("cifar100", "exp", 100), "exp")
    assert sorted(g["many"] + g["medium"] + g["few"]) == list(range(100))
    assert g["few"] and g["many"] and g["medium"]
    counts = benchmark_counts("cifar100", "exp", 100)
    assert all(counts[c] > 100 for c in g["many"]) and all(counts[c] < 20 for c in g["few"])
    assert all(20 <= counts[c] <= 100 for c in g["medium"])
    assert "more than 100" in group_definition("exp") and "median" in group_definition("step")


def test_groups_scale_with_n_max():
    """Issue 10: thresholds 100 / 20 at the paper's n_max, scaled with max_per_class (40 / 8 at 2000 of 5000);
    the paper profile's groups stay as they were."""
    assert group_scale("cifar10", None) == 1.0 and group_scale("cifar10", 2000) == 0.4
    assert group_scale("cifar100", 2000) == 1.0 and group_scale("imagefolder", 50) == 1.0
    assert shot_thresholds(0.4) == (40.0, 8.0)
    exp = class_counts(10, 2000, "exp", 100)  # [2000, 1198, 718, 430, 258, 155, 92, 55, 33, 20]
    assert class_groups(exp, "exp", 0.4) == {"many": list(range(8)), "medium": [8, 9], "few": []}
    assert class_groups(exp, "exp") == {"many": list(range(6)), "medium": [6, 7, 8, 9], "few": []}
    assert "fewer than 8" in group_definition("exp", 0.4)
    paper = benchmark_counts("cifar100", "exp", 100)
    assert class_groups(paper, "exp", group_scale("cifar100", None)) == class_groups(paper, "exp")


def test_counts_cli_subprocess(tmp_path):
    """`python -m procrustes counts` as a user runs it (bad input is covered in test_cli.py)."""
    (p,) = run_cli_many([["counts", "--dataset", "cifar10", "--imbalance", "exp", "--ratio", "100"]],
                        cli_env(PROCRUSTES_DATA=str(tmp_path)))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines == [f"cifar10 exp rho=100: {CIFAR10_EXP100}", "total: 12406"]
    assert list(tmp_path.iterdir()) == []  # no data touched


@pytest.mark.parametrize("dataset,imbalance,ratio,total", TOTALS)
def test_counts_cli_prints_totals(capsys, dataset, imbalance, ratio, total):
    from procrustes.__main__ import main

    assert main(["counts", "--dataset", dataset, "--imbalance", imbalance, "--ratio", str(ratio)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{dataset} {imbalance} rho={ratio:g}: [")
    assert lines[-1] == f"total: {total}"


@pytest.mark.parametrize("argv", [["--dataset", "imagefolder"], ["--imbalance", "linear"], ["--ratio", "0.5"],
                                  ["--dataset", "svhn"]])
def test_counts_cli_errors_in_process(capsys, argv):
    from procrustes.__main__ import main

    assert main(["counts", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
