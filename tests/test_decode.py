"""data.py's decoding for the GPU harvest (issue 27, issue 25 item 19): large image folders decode in parallel
processes, and a decoded cache is found again by content when the same images are extracted or copied anew
(new timestamps), without decoding them again."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from procrustes.training import data as d
from procrustes.training.data import load_split

from .conftest import make_imagefolder


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "cache"


def test_parallel_decode_equals_serial(tmp_path, private_cache, monkeypatch):
    root = make_imagefolder(tmp_path / "tree", 4, 60, 1, size=8)
    monkeypatch.setenv("PROCRUSTES_DECODE_WORKERS", "1")
    serial = load_split("imagefolder", root, "train")
    shutil.rmtree(private_cache)
    monkeypatch.setenv("PROCRUSTES_DECODE_WORKERS", "2")
    monkeypatch.setattr(d, "DECODE_PARALLEL_MIN", 100)
    used = []
    real = d._decode_parallel
    monkeypatch.setattr(d, "_decode_parallel", lambda *a: used.append(a[3]) or real(*a))
    par = load_split("imagefolder", root, "train")
    assert used == [2]
    np.testing.assert_array_equal(par.images, serial.images)
    np.testing.assert_array_equal(par.labels, serial.labels)


def test_same_images_copied_anew_reuse_the_cache(tmp_path, private_cache, monkeypatch):
    root = make_imagefolder(tmp_path / "tree", 2, 3, 1, size=8)
    first = load_split("imagefolder", root, "train")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # other timestamps, other root: the stat key misses
    monkeypatch.setattr(d, "_decode", lambda *a: pytest.fail("decoded again although the content is the same"))
    again = load_split("imagefolder", copy, "train")
    np.testing.assert_array_equal(again.images, first.images)
    assert len(list(private_cache.glob("imagefolder-train-*.npz"))) == 2  # one a stat key; both record the content
    # other content under the same names is decoded
    from PIL import Image

    a = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(a).save(sorted((copy / "train").glob("*/*.png"))[0])
    monkeypatch.undo()
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    changed = load_split("imagefolder", copy, "train")
    assert changed.images[0].max() == 0 and not np.array_equal(changed.images, first.images)
