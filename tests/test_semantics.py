"""Tests that pin the paper's semantics (issue 26, item 5), so that a change which alters results cannot pass
silently. Each test below was checked against a single-line mutant of the code it pins (it fails on the mutant,
passes on the code): the step counts with an odd class count, the paper profile's protocol constants (also
read from the text of docs/paper.md), the median tie of `major_classes`, the many-shot / few-shot boundaries, the
denominator of per-class accuracy, and each part of the claims' noise rule on a case that only that part decides.
"""
from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from procrustes.results import claims
from procrustes.training.config import PROFILES, RunConfig, make_config
from procrustes.training.signature import MEASURE_ONLY
from procrustes.method.counts import MANY_SHOT, FEW_SHOT, class_counts, class_groups, major_classes, shot_thresholds

trainer = importlib.import_module("procrustes.training.train")  # `procrustes.training.train` is the function (re-exported)

REPO = Path(__file__).resolve().parents[1]
PAPER_MD = REPO / "docs" / "paper.md"  # the repository's summary of the paper and its protocol
SHARED_PAPER_MD = REPO.parent / "shared" / "reference" / "PAPER.md"  # the summary it was written from, where present


# ----------------------------------------------------------------------------------------------- class counts


@pytest.mark.parametrize("num_classes, expected", [
    (3, [100, 10, 10]),
    (5, [100, 100, 10, 10, 10]),
    (7, [100, 100, 100, 10, 10, 10, 10]),
    (10, [100] * 5 + [10] * 5),
])
def test_step_counts_keep_floor_half_at_n_max(num_classes, expected):
    """docs/paper.md: "in step, the first C//2 classes keep n_max and the rest int(n_max / rho)" - with an odd C the
    larger half is the minor one (floor, not ceil, of C/2)."""
    assert class_counts(num_classes, 100, "step", 10) == expected


def test_step_counts_minor_is_int_of_n_max_over_rho():
    assert class_counts(4, 500, "step", 3) == [500, 500, 166, 166]  # int(166.67), not round


# ------------------------------------------------------------------------------------ major classes, shot groups


def test_major_classes_include_a_class_exactly_at_the_median():
    """Major = count >= median: classes tied with the median are major."""
    assert major_classes([5, 3, 3, 1]).tolist() == [True, True, True, False]  # median 3
    assert major_classes([9, 4, 4, 4, 1]).tolist() == [True, True, True, True, False]  # median 4
    assert class_groups([5, 3, 3, 1], "step") == {"major": [0, 1, 2], "minor": [3]}


def test_step_major_half_is_the_n_max_half():
    step = class_counts(10, 5000, "step", 10)
    assert class_groups(step, "step") == {"major": [0, 1, 2, 3, 4], "minor": [5, 6, 7, 8, 9]}


def test_step_with_an_odd_class_count_keeps_a_minority():
    """Step imbalance with an odd number of classes: the minority is the larger half, so the median is the minority
    count; the n_max classes are the major ones (not every class), for the groups and for MFW's median rule."""
    from procrustes.method.mixing import selection_probs

    step = class_counts(5, 100, "step", 10)
    assert step == [100, 100, 10, 10, 10]
    assert major_classes(step).tolist() == [True, True, False, False, False]
    assert class_groups(step, "step") == {"major": [0, 1], "minor": [2, 3, 4]}
    assert selection_probs(step, "median").tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert major_classes([7, 7, 7]).tolist() == [True, True, True]  # equal counts: nothing to split
    assert major_classes([9, 4, 2]).tolist() == [True, True, False]  # exp, odd: the median class stays major


def test_shot_thresholds_are_the_paper_ones():
    assert (MANY_SHOT, FEW_SHOT) == (100, 20)
    assert shot_thresholds() == (100, 20)
    assert shot_thresholds(0.4) == (40, 8)


def test_many_shot_is_more_than_100_and_few_shot_fewer_than_20():
    """Exactly 100 training images is medium (many-shot is MORE than 100); exactly 20 is medium (few-shot is
    FEWER than 20)."""
    counts = [101, 100, 99, 21, 20, 19]
    assert class_groups(counts, "exp") == {"many": [0], "medium": [1, 2, 3, 4], "few": [5]}


def test_shot_boundaries_scale_with_n_max():
    counts = [41, 40, 8, 7]  # thresholds 40 and 8 at scale 0.4 (CIFAR-10 with n_max 2000)
    assert class_groups(counts, "exp", 0.4) == {"many": [0], "medium": [1, 2], "few": [3]}


# ------------------------------------------------------------------------------------------ protocol constants

# LDAM-DRW protocol, as docs/paper.md states it (the test below reads the same numbers from the file itself)
PAPER_CIFAR = dict(lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128, epochs=200, cb_beta=0.9999,
                   focal_gamma=1.0, ldam_max_margin=0.5, ldam_scale=30.0)


def test_paper_profile_protocol_constants():
    """The paper profile trains with RunConfig's defaults, untouched: every LDAM-DRW constant, and its schedule. Its
    own settings only say how often, and on how many images, it measures (a CPU's evaluation budget)."""
    assert set(PROFILES["paper"]) <= set(MEASURE_ONLY), PROFILES["paper"]
    trains = [f.name for f in dataclasses.fields(RunConfig) if f.name not in MEASURE_ONLY]
    paper, defaults = make_config("paper"), RunConfig(profile="paper")
    assert {k: getattr(paper, k) for k in trains} == {k: getattr(defaults, k) for k in trains}
    for dataset in ("cifar10", "cifar100"):
        cfg = make_config("paper", dataset=dataset)
        assert {k: getattr(cfg, k) for k in PAPER_CIFAR} == PAPER_CIFAR, dataset
        assert cfg.max_per_class is None and cfg.ratio == 100 and cfg.subset_seed == 0
        assert cfg.resolved_model() == "resnet32"
        assert cfg.schedule() == (5.0, (160, 180), (0.01, 1e-4), 160), dataset  # DRW from epoch 160
    tiny = make_config("paper", dataset="tinyimagenet")
    assert tiny.epochs == 120 and tiny.lr == 0.1 and tiny.resolved_model() == "resnet18"
    assert tiny.schedule()[1:] == ((90,), (0.1,), 90)
    # the defaults themselves, so that a profile cannot hide a changed default
    for k, v in PAPER_CIFAR.items():
        assert getattr(RunConfig, k) == v, k


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text, flags=re.S)
    assert m, f"docs/paper.md no longer says {pattern!r}: update this test together with the protocol"
    return float(m.group(1))


def _numbers(pattern: str, text: str) -> tuple[float, ...]:
    m = re.search(pattern, text, flags=re.S)
    assert m, f"docs/paper.md no longer says {pattern!r}: update this test together with the protocol"
    return tuple(float(g) for g in m.groups())


@pytest.mark.parametrize("path", [PAPER_MD, SHARED_PAPER_MD], ids=["docs/paper.md", "shared PAPER.md"])
def test_paper_profile_matches_the_text_of_paper_md(path):
    """The numbers of the protocol section of docs/paper.md (and of the shared summary it was written from, where
    that file exists), parsed from its text, against make_config("paper")."""
    if path == SHARED_PAPER_MD and not path.exists():
        pytest.skip(f"reference file not found at {path}")
    text = path.read_text()
    proto = text[text.index("## The protocol"):]
    proto = proto[:proto.index("\n## ", 1)]  # only the protocol section
    ws = r"\s+"
    cifar = make_config("paper", dataset="cifar10")
    warm, miles, factors, drw = cifar.schedule()
    assert cifar.momentum == _number(rf"SGD{ws}momentum{ws}([0-9.]+)", proto)
    assert cifar.lr == _number(rf"lr{ws}([0-9.]+),{ws}weight", proto)
    assert cifar.weight_decay == _number(rf"weight{ws}decay{ws}([0-9.e-]+)", proto)
    assert cifar.batch_size == _number(rf"batch{ws}(\d+)", proto)
    assert cifar.epochs == _number(rf"batch{ws}\d+,{ws}(\d+){ws}epochs", proto)
    assert warm == _number(rf"warm-up{ws}over{ws}the{ws}first{ws}(\d+){ws}epochs", proto)
    f1, e1, f2, e2 = _numbers(rf"lr{ws}x([0-9.]+){ws}at{ws}epoch{ws}(\d+){ws}and{ws}x([0-9.]+){ws}at{ws}epoch{ws}(\d+)", proto)
    assert (factors, miles) == ((f1, f2), (e1, e2))
    assert drw == _number(rf"DRW{ws}={ws}plain{ws}weights{ws}until{ws}epoch{ws}(\d+)", proto)
    assert cifar.focal_gamma == _number(rf"focal{ws}\(gamma{ws}([0-9.]+)\)", proto)
    assert cifar.cb_beta == _number(rf"beta{ws}([0-9.]+),", proto)
    assert cifar.ldam_max_margin == _number(rf"largest{ws}([0-9.]+),{ws}scale", proto)
    assert cifar.ldam_scale == _number(rf"scale{ws}s{ws}={ws}([0-9.]+)", proto)
    tiny = make_config("paper", dataset="tinyimagenet")
    t_epochs, t_lr, t_factor, t_mile = _numbers(
        rf"Tiny-ImageNet-200:.*?(\d+){ws}epochs,{ws}lr{ws}([0-9.]+),{ws}x([0-9.]+){ws}at{ws}epoch{ws}(\d+)", proto)
    assert (tiny.epochs, tiny.lr) == (t_epochs, t_lr)
    assert tiny.schedule()[1:3] == ((t_mile,), (t_factor,))
    # n_max of the benchmarks
    from procrustes.method.counts import PAPER_SIZES

    assert PAPER_SIZES["cifar10"][1] == _number(rf"n_max{ws}={ws}(\d+){ws}\(CIFAR-10\)", proto)
    assert PAPER_SIZES["cifar100"][1] == _number(rf"or{ws}(\d+){ws}\(CIFAR-100\)", proto)


# --------------------------------------------------------------------------------------------- the noise rule


def _sides(diffs: list[float], a: list[float]) -> tuple[dict, dict, dict]:
    a_ = {k: float(v) for k, v in enumerate(a)}
    b_ = {k: a_[k] + d for k, d in enumerate(diffs)}
    return a_, b_, {k: b_[k] - a_[k] for k in a_}


def test_noise_is_the_larger_sample_std_of_the_sides():
    a, b, d = _sides([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])  # sides' std 1 (ddof 1), differences' std 0
    assert claims.rule_noise(d, [a, b]) == pytest.approx(1.0)
    narrow, wide = {0: 0.0, 1: 0.0, 2: 0.0}, {0: 0.0, 1: 2.0, 2: 4.0}
    assert claims.rule_noise({0: 0.0, 1: 2.0, 2: 4.0}, [narrow, wide]) == pytest.approx(2.0)
    assert claims.rule_noise({0: 0.0, 1: 2.0, 2: 4.0}, [wide, narrow]) == pytest.approx(2.0)
    assert claims.rule_noise({0: 1.0, 1: 3.0}) == pytest.approx(np.sqrt(2.0))  # no sides: the diffs' std


def test_noise_rule_between_one_and_two_noise_is_not_shown():
    """All signs equal, |mean| = 1.5 x noise: NOT SHOWN (the margin is 2 x the noise, not 1 x)."""
    a, b, d = _sides([1.5, 1.5, 1.5], [0.0, 1.0, 2.0])  # noise 1
    assert claims.noise_test(d, [a, b]) == (claims.NOT_SHOWN, 0)
    assert claims.compare("x", "s", a, b, "A", "B", expect=+1).verdict == claims.NOT_SHOWN


def test_noise_rule_just_above_two_noise_is_shown():
    a, b, d = _sides([2.05, 2.05, 2.05], [0.0, 1.0, 2.0])  # noise 1
    assert claims.noise_test(d, [a, b]) == (claims.SHOWN, 1)
    assert claims.compare("x", "s", a, b, "A", "B", expect=+1).verdict == claims.SHOWN
    a, b, d = _sides([-2.05, -2.05, -2.05], [0.0, 1.0, 2.0])
    assert claims.noise_test(d, [a, b]) == (claims.SHOWN, -1)


def test_noise_rule_uses_the_sample_std_ddof_1():
    """|mean| = 1.8: above 2 x the population std of [0, 1, 2] (1.63) but below 2 x the sample std (2)."""
    a, b, d = _sides([1.8, 1.8, 1.8], [0.0, 1.0, 2.0])
    assert claims.noise_test(d, [a, b]) == (claims.NOT_SHOWN, 0)


def test_noise_rule_one_seed_of_the_other_sign_is_not_shown():
    """|mean| well above 2 x the noise, but one seed's difference has the other sign: NOT SHOWN."""
    diffs = [10.0] * 9 + [-0.1]
    a, b, d = _sides(diffs, [0.0] * 10)
    m, noise = np.mean(diffs), claims.rule_noise(d, [a, b])
    assert abs(m) > 2 * noise  # only the sign rule can refuse it
    assert claims.noise_test(d, [a, b]) == (claims.NOT_SHOWN, 0)
    assert claims.noise_test(d) == (claims.NOT_SHOWN, 0)
    assert claims.compare("x", "s", a, b, "A", "B", expect=+1).verdict == claims.NOT_SHOWN


def test_noise_rule_std_alone_decides():
    """Every seed agrees in sign but |mean| is below the noise itself: NOT SHOWN by the std rule alone (a rule
    of 1 x the noise refuses it too; a rule without the std condition would show it)."""
    a, b, d = _sides([0.5, 0.5, 0.5], [0.0, 1.0, 2.0])  # noise 1
    assert claims.noise_test(d, [a, b]) == (claims.NOT_SHOWN, 0)
    assert claims.compare("x", "s", a, b, "A", "B", expect=+1).verdict == claims.NOT_SHOWN
    # without sides: the differences' own std is the noise (here 1.04, |mean| 0.8)
    assert claims.noise_test({0: 0.1, 1: 2.0, 2: 0.3}) == (claims.NOT_SHOWN, 0)


# ------------------------------------------------------------------------------- per-class accuracy denominators


class _Oracle(torch.nn.Module):
    """Reads the label from pixel (0, 0) channel 0 and a 'get it wrong' flag from channel 1 (mean 0, std 1 ->
    normalised values are pixel / 255), and predicts the label, or the next class when the flag is set."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        label = torch.round(x[:, 0, 0, 0] * 255).long()
        wrong = torch.round(x[:, 1, 0, 0] * 255).long()
        pred = (label + wrong) % self.num_classes
        return torch.nn.functional.one_hot(pred, self.num_classes).float()


def test_evaluate_divides_by_the_images_of_each_class():
    """Per-class accuracy = correct / images OF THAT CLASS (not the batch, not the whole set), on unbalanced
    labels and batches that mix classes."""
    labels = [0, 0, 1, 0, 2, 1, 0, 1, 0, 3]  # 5, 3, 1, 1 images
    wrong = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    x = torch.zeros(len(labels), 4, 4, 3, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.uint8)
    x[:, 0, 0, 1] = torch.tensor(wrong, dtype=torch.uint8)
    y = torch.tensor(labels)
    correct, total, top5 = trainer.evaluate(_Oracle(4), x, y, 4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False, batch=3)
    assert total.tolist() == [5, 3, 1, 1]
    assert correct.tolist() == [4, 2, 0, 1]
    assert (correct / total).tolist() == pytest.approx([0.8, 2 / 3, 0.0, 1.0])
    assert float(top5) == 10  # 4 classes: every label is in the top 5


@pytest.fixture(scope="module")
def smoke_run(cifar10_root, tmp_path_factory):
    """A real 2-epoch run on CIFAR-10 (step 10, n_max 40), balanced final test set (30 a class), per-epoch curve on
    20 a class, a balanced validation split of 10 a class and the clean training sample (20 a class, 4 for the
    minor classes)."""
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, method="erm", epochs=2,
                      max_per_class=40, batch_size=32, eval_per_class=20, test_per_class=30, clean_per_class=20,
                      val_per_class=10)
    root = tmp_path_factory.mktemp("semantics")
    res = trainer.run(cfg, results=root, device="cpu", progress=False, compile="off")
    return cfg, root, res


def test_mean_of_per_class_accuracy_is_top1_on_a_balanced_test_set(smoke_run):
    cfg, _, res = smoke_run
    s, h = res["summary"], res["history"]
    assert s["test_images"] == 10 * 30
    per = np.asarray(s["test_acc_per_class"])
    assert ((per >= 0) & (per <= 1)).all()
    assert np.allclose(per * 30, np.round(per * 30))  # each is (correct images) / 30
    assert per.mean() == pytest.approx(s["test_acc"], abs=1e-6)  # float32 sums
    assert h["test_acc"][-1] == pytest.approx(s["test_acc_per_class"])  # the last epoch is the final test set
    for acc, top1 in zip(h["test_acc"], h["test_top1"]):  # every epoch's curve (20 a class, then 30 a class)
        assert np.mean(acc) == pytest.approx(top1, abs=1e-6)
    for acc, top1 in zip(h["val_acc"], h["val_top1"]):  # the validation split (10 a class)
        assert np.mean(acc) == pytest.approx(top1, abs=1e-6)
        assert np.allclose(np.asarray(acc) * 10, np.round(np.asarray(acc) * 10))


def test_per_class_accuracies_recomputed_from_the_stored_weights(smoke_run):
    """The stored model's predictions, counted here by class with numpy, give the result's per-class test accuracy
    and the last epoch's clean training accuracy (whose classes differ in size: 20 and 4 images)."""
    cfg, root, res = smoke_run
    from procrustes.training import store
    from procrustes.method.augment import normalise
    from procrustes.training.data import load_benchmark

    bench = load_benchmark(cfg)
    model = trainer.make_model(cfg, 10, False, torch.device("cpu"))
    model.load_state_dict(torch.load(store.run_dir(cfg, root, bench.data["id"]) / "model.pt", weights_only=True))
    model.eval()

    def per_class(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y, b = torch.from_numpy(x[idx]), y[idx], trainer.eval_batch("cpu")  # evaluate's batches
        with torch.no_grad():
            pred = torch.cat([model(normalise(x[i:i + b], bench.spec.mean, bench.spec.std)).argmax(1)
                              for i in range(0, len(x), b)]).numpy()
        n = np.bincount(y, minlength=10)
        return np.bincount(y, weights=(pred == y), minlength=10) / n, n

    acc, n = per_class(bench.test_x, bench.test_y, trainer.balanced_subset(bench.test_y, cfg.test_per_class))
    assert n.tolist() == [30] * 10
    assert np.asarray(res["summary"]["test_acc_per_class"]) == pytest.approx(acc, abs=1e-6)
    acc, n = per_class(bench.train_x, bench.train_y, trainer.balanced_subset(bench.train_y, cfg.clean_per_class))
    assert n.tolist() == [20] * 5 + [4] * 5
    assert np.asarray(res["history"]["train_acc_clean"][-1]) == pytest.approx(acc, abs=1e-6)
