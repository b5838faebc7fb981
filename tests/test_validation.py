"""The validation split (issue 24): drawn from training images the imbalanced subset leaves unused, balanced,
the same for every benchmark of a dataset, evaluated every epoch into the history, and never a change to
training; the per-epoch test curve on a subset (or none) gives the same last-epoch numbers as the full set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from procrustes.training import store
from procrustes.training.config import ConfigError, RunConfig, make_config
from procrustes.training.data import load_benchmark, subset_and_validation, subset_indices
from procrustes.training.train import run


def test_validation_images_are_unused_balanced_and_shared_across_benchmarks():
    labels = np.repeat(np.arange(4), 50)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]
    tr_a, va_a = subset_and_validation(labels, [40, 20, 10, 5], 0, 10)
    tr_b, va_b = subset_and_validation(labels, [30, 30, 3, 3], 0, 10)
    assert not set(tr_a) & set(va_a) and not set(tr_b) & set(va_b)
    assert np.bincount(labels[va_a]).tolist() == [10, 10, 10, 10]
    np.testing.assert_array_equal(va_a, va_b)  # the same validation images whatever the counts
    np.testing.assert_array_equal(tr_a, subset_indices(labels, [40, 20, 10, 5], 0))  # training is the reference's
    with pytest.raises(ConfigError, match="leaving 5 for validation"):
        subset_and_validation(labels, [45, 20, 10, 5], 0, 10)


def test_val_per_class_leaves_old_keys_alone():
    """A field added after results were stored: at its neutral value the key and the stored config do not move."""
    cfg = make_config("cpu", imbalance="step", ratio=100, method="mfw")
    assert "val_per_class" not in cfg.to_dict()
    assert cfg.key() == "afb3da4e76ad"  # the committed step-100 MFW seed 0 run (results/cpu/afb3da4e76ad-5e3ebf61)
    v = cfg.replace(val_per_class=100)
    assert v.key() != cfg.key() and v.to_dict()["val_per_class"] == 100
    assert RunConfig.from_dict(v.to_dict()) == v and RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="val_per_class"):
        make_config("cpu", val_per_class=0)
    assert make_config("cpu", eval_per_class=0).eval_per_class == 0  # 0: no per-epoch test curve
    with pytest.raises(ConfigError, match="eval_per_class"):
        make_config("cpu", eval_per_class=-1)


@pytest.fixture(scope="module")
def base():
    return make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, method="mfw+drw", epochs=2, drw_epoch=1,
                       max_per_class=40, batch_size=64, eval_per_class=20, test_per_class=50)


def _weights(cfg, root, data_id):
    return torch.load(store.run_dir(cfg, root, data_id) / "model.pt", weights_only=True)


def test_validation_leaves_training_bit_identical(cifar10_root, base, tmp_path):
    with_val = base.replace(val_per_class=10)
    a = run(base, results=tmp_path, device="cpu", progress=False, compile="off")
    b = run(with_val, results=tmp_path, device="cpu", progress=False, compile="off")
    wa, wb = _weights(base, tmp_path, a["data"]["id"]), _weights(with_val, tmp_path, b["data"]["id"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    for k in ("train_loss", "train_acc", "feature_grad", "test_acc", "test_top1", "train_acc_clean"):
        assert a["history"][k] == b["history"][k], k
    assert a["summary"]["test_acc_per_class"] == b["summary"]["test_acc_per_class"]
    # the validation record: per class, every epoch, and a data id that covers it
    h, s = b["history"], b["summary"]
    assert len(h["val_acc"]) == 2 and all(len(v) == 10 for v in h["val_acc"])
    assert s["val_error"] == pytest.approx(100 * (1 - np.mean(h["val_acc"][-1])))
    assert b["data"]["val_id"] and b["data"]["id"] != a["data"]["id"] and "val_acc" not in a["history"]
    assert b["provenance"]["eval_s"] > 0 and b["provenance"]["eval_s"] < b["provenance"]["wall_s"]
    # the validation images are training images the subset leaves unused, 10 a class
    bench = load_benchmark(with_val)
    assert np.bincount(bench.val_y).tolist() == [10] * 10
    train_rows = {x.tobytes() for x in bench.train_x}
    assert not any(x.tobytes() in train_rows for x in bench.val_x)


def test_subset_curve_then_full_test_gives_the_full_curve_last_epoch(cifar10_root, base, tmp_path):
    """The per-epoch curve on a test subset, or none at all, changes nothing at the last epoch."""
    full = base.replace(eval_per_class=None, test_per_class=None)
    sub = full.replace(eval_per_class=5)
    none = full.replace(eval_per_class=0)
    rs = [run(c, results=tmp_path, device="cpu", progress=False, compile="off") for c in (full, sub, none)]
    for r in rs[1:]:
        assert r["summary"]["test_acc_per_class"] == rs[0]["summary"]["test_acc_per_class"]
        assert r["summary"]["test_error"] == rs[0]["summary"]["test_error"]
        assert r["history"]["test_top1"][-1] == rs[0]["history"]["test_top1"][-1]
        assert r["history"]["train_loss"] == rs[0]["history"]["train_loss"]
    assert rs[2]["history"]["test_top1"][0] is None and rs[2]["summary"]["test_images"] == 10000


# ---------------------------------------------------------------------------------------- the selection protocol

from procrustes.results import selection  # noqa: E402


def _fake(err: float, correct: str) -> dict:
    return {"summary": {"val_error": err, "val_correct": correct}}


def test_paired_standard_error_counts_only_discordant_images():
    a, b = _fake(50, "1100" * 25), _fake(50, "1100" * 25)
    assert selection.paired_se(a, b) == 0.0
    # 100 images, b gets 10 more right than a and nothing else differs: sqrt(10 - 100/100) / 100 = 3 points
    common = "1100" * 22 + "10"  # 90 images both get equally right or wrong
    a, b = _fake(50, "0" * 10 + common), _fake(40, "1" * 10 + common)
    assert len(a["summary"]["val_correct"]) == 100
    assert selection.paired_se(a, b) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="different images"):
        selection.paired_se(a, _fake(50, "1"))


def _stage_a(errors: dict[str, float], flips: int) -> dict[str, dict]:
    """Stage A results on 1000 validation images: the default gets images [0, R) right; a challenger with R' right
    gets [flips/2, flips/2 + R') right, so the two disagree on flips + (R' - R) images."""
    out = {}
    for c in selection.STAGE_A:
        right = 1000 - round(10 * errors[c.label])
        start = 0 if c.default else flips // 2
        out[c.label] = _fake(errors[c.label], "0" * start + "1" * right + "0" * (1000 - start - right))
    return out


def test_choose_keeps_the_default_within_noise_and_takes_a_clear_winner():
    labels = [c.label for c in selection.STAGE_A]
    tie = _stage_a(dict(zip(labels, (40.0, 39.5, 41.0, 39.6))), flips=0)
    ch = selection.choose("A", "step-100", tie)
    assert ch.chosen.default and "kept" in ch.reason  # 0.5 points: under the 1-point floor
    win = _stage_a(dict(zip(labels, (40.0, 41.0, 37.0, 38.0))), flips=0)
    ch = selection.choose("A", "step-100", win)
    assert ch.chosen.label == "stage2 / median" and ch.scores["stage2 / median"] == 37.0
    # the same 3-point gain drowned in discordant images: 2 x paired SE exceeds it, the default stays
    noisy = _stage_a(dict(zip(labels, (40.0, 41.0, 37.0, 38.0))), flips=600)
    assert selection.paired_se(noisy["stage1 / median"], noisy["stage2 / median"]) > 1.5
    assert selection.choose("A", "step-100", noisy).chosen.default
    # equal challengers: the first listed wins
    both = _stage_a(dict(zip(labels, (40.0, 36.0, 36.0, 38.0))), flips=0)
    assert selection.choose("A", "step-100", both).chosen.label == "stage1 / power"
    part = dict(win, **{"stage2 / power": None})
    ch = selection.choose("A", "step-100", part)
    assert ch.chosen is None and "stage2 / power" in ch.reason


def test_selection_grid_is_staged_and_seed_runs_accept_their_training_twins(tmp_path, monkeypatch):
    """Stage B is listed once stage A chose on its benchmark; a seed run counts as stored when the same training
    is stored without validation (the grid's runs); a screening run does not (it must carry validation)."""
    from procrustes.training import store

    runs = selection.screening_runs("cpu", tmp_path)
    assert len(runs) == 12 and all(c.val_per_class == 100 and c.eval_per_class == 0 and c.seed == 0 for c in runs)
    assert {(c.imbalance, c.ratio) for c in runs} == {("step", 100), ("exp", 100), ("exp", 10)}
    stored: dict[str, dict] = {}
    labels = [c.label for c in selection.STAGE_A]
    fake = _stage_a(dict(zip(labels, (40.0, 41.0, 37.0, 38.0))), flips=0)
    for c in selection.STAGE_A:
        cfg = selection.screening_config("cpu", "step", 100, "mfw", c.overrides)
        stored[cfg.key()] = fake[c.label]
    twin_of_default = selection.training_twin(selection.screening_config("cpu", "step", 100, "mfw", {}, seed=1))
    stored[twin_of_default.key()] = {"summary": {"test_error": 1.0}}
    exp_twin = selection.training_twin(selection.screening_config("cpu", "exp", 100, "mfw", {}, seed=0))
    stored[exp_twin.key()] = {"summary": {"test_error": 1.0}}  # the grid's exp-100 MFW seed 0: no validation
    monkeypatch.setattr(store, "read_result", lambda cfg, root=None, data_id=None: stored.get(cfg.key()))
    assert twin_of_default == selection.training_twin(twin_of_default) and twin_of_default.val_per_class is None
    assert twin_of_default.eval_per_class == 200  # the cpu grid's form
    runs = selection.screening_runs("cpu", tmp_path)
    b = [c for c in runs if c.method == "mfw+ldam-drw"]
    assert len(b) == 2 and all(c.mfw_point == "stage2" and c.imbalance == "step" for c in b)
    seeds = selection.seed_runs("cpu", tmp_path)
    assert sorted(c.seed for c in seeds) == [1, 2] and all(c.mfw_point == "stage2" for c in seeds)
    # the default's seed 1 stands for itself through its twin; a seed 0 screening run does not
    default_1 = selection.screening_config("cpu", "step", 100, "mfw", {}, seed=1)
    assert selection.stored(default_1, tmp_path) is not None
    exp_default_0 = selection.screening_config("cpu", "exp", 100, "mfw", {}, seed=0)
    assert selection.stored(exp_default_0, tmp_path) is None and selection.find(exp_default_0, tmp_path) is not None


def _run(err: float, compiled, commit: str = "a" * 40) -> dict:
    prov = {"git_commit": commit} if compiled is None else {"git_commit": commit, "compiled": compiled}
    return {"summary": {"test_error": err}, "provenance": prov}


def test_a_run_stored_on_two_code_paths_is_measured_and_a_mixed_comparison_says_so(tmp_path, monkeypatch):
    """twin_pairs finds a selection run stored as itself and as its training twin, and reports the two paths and
    their difference; path_caveat is silent when every run took one path and names the paths and the measured
    moves when they differ."""
    from procrustes.training import store

    stored: dict[str, dict] = {}
    cfg = selection.screening_config("cpu", "step", 100, "mfw", {})
    stored[cfg.key()] = {**_run(43.61, True), "summary": {"test_error": 43.61, "val_error": 44.3, "val_correct": "1"}}
    stored[selection.training_twin(cfg).key()] = _run(46.41, None)  # the grid's: from before `compiled` was recorded
    monkeypatch.setattr(store, "read_result", lambda c, root=None, data_id=None: stored.get(c.key()))
    pairs = selection.twin_pairs("cpu", tmp_path)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert (row["benchmark"], row["seed"], row["path"], row["twin_path"]) == ("step-100", 0, "compiled", "eager")
    assert row["difference"] == pytest.approx(43.61 - 46.41)
    one = {"ERM": {0: _run(52.0, False), 1: _run(53.0, None)}, "MFW": {0: _run(46.0, None), 1: _run(47.0, False)}}
    assert selection.path_caveat(one, pairs) == ""
    mixed = {"ERM": {0: _run(52.0, False), 1: _run(53.0, None)}, "MFW": {0: _run(43.6, True), 1: _run(47.0, False)}}
    text = selection.path_caveat(mixed, pairs)
    assert "ERM eager (seeds 0, 1)" in text and "MFW compiled (seed 0), eager (seed 1)" in text
    assert "-2.80 (step-100 mfw seed 0)" in text
