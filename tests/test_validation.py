"""The validation split (issue 24): drawn from training images the imbalanced subset leaves unused, balanced,
the same for every benchmark of a dataset, evaluated every epoch into the history, and never a change to
training; the per-epoch test curve on a subset (or none) gives the same last-epoch numbers as the full set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from procrustes import store
from procrustes.config import ConfigError, RunConfig, make_config
from procrustes.data import load_benchmark, subset_and_validation, subset_indices
from procrustes.train import run


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
