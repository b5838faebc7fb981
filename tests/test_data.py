"""data.py with images: real CIFAR-10 through load_benchmark, and generated ImageFolder trees (CIFAR-100 is not
available here, so its code path runs on a 100-class tree of flat-colour PNGs). Every decoded cache goes to a
temporary PROCRUSTES_DATA folder, except the CIFAR-10 one that the data folder already holds."""
from __future__ import annotations

import numpy as np
import pytest

from procrustes.training.config import make_config
from procrustes.training.data import (DataError, check_root, class_counts, load_benchmark, load_split, load_tinyimagenet,
                             spec)

from .conftest import ldam_drw_reference, make_imagefolder

CIFAR10_EXP100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(scope="module")
def tree100(tmp_path_factory):
    """A CIFAR-100-shaped ImageFolder tree: 100 classes, 4 train and 2 test images a class."""
    return make_imagefolder(tmp_path_factory.mktemp("tree100"), 100, 4, 2)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "cache"


def _check_pixels(x, y, labels_all, chosen):
    """Generated images are flat colours (R = class, G = index within the class)."""
    assert np.all(x == x[:, :1, :1, :])  # flat
    np.testing.assert_array_equal(x[:, 0, 0, 0], y)
    np.testing.assert_array_equal(y, labels_all[chosen])
    per_class = np.bincount(labels_all)
    start = np.concatenate([[0], np.cumsum(per_class)[:-1]])
    np.testing.assert_array_equal(x[:, 0, 0, 1], chosen - start[labels_all[chosen]])


def test_imagefolder_benchmark_cifar100_shaped(tree100, private_cache):
    cfg = make_config("smoke", dataset="imagefolder", imbalance="exp", ratio=4)
    b = load_benchmark(cfg, tree100)
    counts = class_counts(100, 4, "exp", 4)
    assert counts[0] == 4 and counts[-1] == 1
    assert b.counts == counts
    assert b.spec.num_classes == 100 and b.spec.n_max == 4 and b.spec.image_size == 32 and b.spec.pad == 4
    assert b.classes == [f"c{c:03d}" for c in range(100)]
    assert b.train_x.shape == (sum(counts), 32, 32, 3) and b.train_x.dtype == np.uint8
    assert np.bincount(b.train_y, minlength=100).tolist() == counts
    labels_all = np.repeat(np.arange(100), 4)
    _check_pixels(b.train_x, b.train_y, labels_all, ldam_drw_reference(labels_all, counts, 0))
    # the test set is whole and balanced
    assert np.bincount(b.test_y).tolist() == [2] * 100
    np.testing.assert_array_equal(b.test_x[:, 0, 0, 0], b.test_y)
    assert len(list(private_cache.glob("imagefolder-*.npz"))) == 2


def test_cifar100_code_path_on_a_tree(tree100, private_cache):
    cfg = make_config("smoke", dataset="cifar100", imbalance="step", ratio=4, max_per_class=4)
    b = load_benchmark(cfg, tree100)
    assert b.counts == [4] * 50 + [1] * 50
    assert b.spec == spec("cifar100")
    labels_all = np.repeat(np.arange(100), 4)
    _check_pixels(b.train_x, b.train_y, labels_all, ldam_drw_reference(labels_all, b.counts, 0))
    # a second load comes from the cache and gives the same arrays
    again = load_benchmark(cfg, tree100)
    np.testing.assert_array_equal(again.train_x, b.train_x)


def test_imagefolder_none_keeps_what_is_there(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 3, 5, 1, size=16)
    b = load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)
    assert b.counts == [5, 5, 5] and b.train_x.shape == (15, 16, 16, 3)
    assert b.spec.image_size == 16 and b.spec.pad == 4


def test_wrong_number_of_classes(tree100, private_cache):
    with pytest.raises(DataError, match="100 classes"):
        load_benchmark(make_config("smoke", dataset="cifar10", imbalance="none"), tree100)


def test_missing_data(tmp_path, private_cache):
    with pytest.raises(DataError):
        load_split("imagefolder", tmp_path / "nowhere", "train")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_split("imagefolder", tmp_path / "empty", "train")
    with pytest.raises(DataError, match="wnids"):
        load_tinyimagenet(tmp_path, "train")
    with pytest.raises(DataError, match="does not exist"):
        check_root("cifar10", tmp_path / "nowhere")
    check_root("cifar10", tmp_path)  # exists: fine


def test_damaged_cache_is_rebuilt(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    first = load_split("imagefolder", root, "train")
    (cache,) = private_cache.glob("imagefolder-train-*.npz")
    cache.write_bytes(b"not a zip")
    again = load_split("imagefolder", root, "train")
    np.testing.assert_array_equal(again.images, first.images)
    np.load(cache)  # readable again


def test_real_cifar10_exp100(cifar10_root):
    b = load_benchmark(make_config("paper", dataset="cifar10", imbalance="exp", ratio=100))
    assert b.counts == CIFAR10_EXP100
    assert b.train_x.shape == (12406, 32, 32, 3) and b.train_x.dtype == np.uint8
    assert np.bincount(b.train_y, minlength=10).tolist() == CIFAR10_EXP100
    assert b.test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(b.test_y).tolist() == [1000] * 10
    assert b.classes[:2] == ["airplane", "automobile"] and len(b.classes) == 10
    assert 100 < b.train_x.mean() < 150  # real photographs, not blank arrays


def test_real_tiny_imagenet_slice(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path))  # its decoded cache goes here
    va = load_tinyimagenet(tiny_root, "val")
    assert va.images.shape[1:] == (64, 64, 3) and len(va.classes) == 200
    assert va.labels.min() == 0 and va.labels.max() == 199
