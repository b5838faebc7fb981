"""data.py regressions on generated trees: a cache keyed by content, concurrent cache writers, train/test classes
matched by name, Tiny-ImageNet classes in sorted wnid order, and one-line errors for bad data. Every decoded cache
goes to a temporary PROCRUSTES_DATA folder."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from procrustes.training.config import ConfigError, make_config
from procrustes.training.data import (DataError, ImageArrays, check_root, class_counts, load_benchmark, load_split,
                             load_tinyimagenet)

from .conftest import REPO, cli_env, make_imagefolder


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "cache"


def _save(path: Path, colour, size: int = 8) -> None:
    from PIL import Image

    a = np.empty((size, size, 3), np.uint8)
    a[:] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _pngs(root: Path, split: str = "train") -> list[Path]:
    return sorted((root / split).glob("*/*.png"))


# ---------------------------------------------------------------- B2: the cache is keyed by content


def test_cache_sees_rewritten_images(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 3, 1, size=8)
    first = load_split("imagefolder", root, "train")
    assert first.images[:, 0, 0, 2].tolist() == [7] * 6
    time.sleep(0.02)  # past the file system's timestamp tick
    for f in _pngs(root):
        _save(f, (f.parent.name == "c001", 0, 200))  # same size on disk, other pixels
    again = load_split("imagefolder", root, "train")
    assert again.images[:, 0, 0, 2].tolist() == [200] * 6
    assert len(list(private_cache.glob("imagefolder-train-*.npz"))) == 2


def test_cache_sees_rewrite_that_keeps_size_and_mtime(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    load_split("imagefolder", root, "train")
    f = _pngs(root)[0]
    st = f.stat()
    time.sleep(0.02)
    _save(f, (0, 0, 99))  # a flat PNG of another colour has the same size...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the mtime is put back
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    again = load_split("imagefolder", root, "train")
    assert again.images[0, 0, 0].tolist() == [0, 0, 99]


def test_cache_sees_files_moved_between_classes(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 3, 1, size=8)
    first = load_split("imagefolder", root, "train")
    assert first.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # same number of files, same first and last file: the old key did not change
    (root / "train" / "c000" / "i001.png").rename(root / "train" / "c001" / "i001x.png")
    again = load_split("imagefolder", root, "train")
    assert again.labels.tolist() == [0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(again.images[:, 0, 0, :2], [[0, 0], [0, 2], [1, 0], [1, 1], [0, 1], [1, 2]])


def test_cache_stores_and_checks_its_key(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    load_split("imagefolder", root, "train")
    (cache,) = private_cache.glob("imagefolder-train-*.npz")
    z = dict(np.load(cache))
    assert str(z["key"]).startswith(cache.stem.split("-")[-1])
    z["key"] = np.asarray("another key")
    z["images"] = np.zeros_like(z["images"])
    with open(cache, "wb") as fh:  # a cache whose name matches but whose stored key does not
        np.savez(fh, **z)
    again = load_split("imagefolder", root, "train")
    assert again.images[:, 0, 0, 2].tolist() == [7] * 4  # rebuilt from the images, not read back
    assert str(np.load(cache)["key"]) != "another key"


# ---------------------------------------------------------------- B9: two processes build the same cache at once

_WRITER = textwrap.dedent("""
    import os, sys, time, types
    from pathlib import Path

    pkg = types.ModuleType("procrustes")  # procrustes.training.data without the package's __init__ (which imports torch)
    pkg.__path__ = [sys.argv[4]]
    sys.modules["procrustes"] = pkg
    import procrustes.training.data as d

    root, base, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    decode = d._decode

    def in_step(files, size, desc):  # decode, then wait for the other process: both write the cache together
        out = decode(files, size, desc)
        (base / f"ready-{me}").touch()
        t = time.time()
        while len(list(base.glob("ready-*"))) < 2 and time.time() - t < 30:
            time.sleep(0.001)
        return out

    d._decode = in_step
    for r in range(5):
        base = Path(sys.argv[2]) / f"round{r}"
        os.environ["PROCRUSTES_DATA"] = str(base)
        arr = d.load_split("imagefolder", root, "train")
        assert arr.images.shape == (400, 32, 32, 3), arr.images.shape
    print("ok")
""")


def test_two_processes_build_the_same_cache(tmp_path):
    root = make_imagefolder(tmp_path / "tree", 4, 100, 1, size=32)
    for r in range(5):
        (tmp_path / "runs" / f"round{r}").mkdir(parents=True)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = cli_env(OMP_NUM_THREADS="1")
    pkg_dir = str(Path(sys.modules[load_split.__module__].__file__).parent)  # the procrustes under test
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path / "runs"), str(i), pkg_dir], cwd=REPO, env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0 and so.strip() == "ok", se[-2000:]
    for r in range(5):
        base = tmp_path / "runs" / f"round{r}"
        assert len(list(base.glob("ready-*"))) == 2
        (cache,) = (base / "cache").iterdir()  # one cache, no temporary file left behind
        assert cache.suffix == ".npz" and np.load(cache)["images"].shape == (400, 32, 32, 3)


# ---------------------------------------------------------------- B3: test classes are matched to training classes by name


def _tree(root: Path, train: list[str], test: list[str], size: int = 8) -> Path:
    for split, names in (("train", train), ("test", test)):
        for c, name in enumerate(names):
            for i in range(2):
                _save(root / split / name / f"i{i}.png", (c, i, 7), size)
    return root


def test_test_classes_other_than_train(tmp_path, private_cache):
    root = _tree(tmp_path / "t", ["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(DataError, match=r"test class x \(in .*test\) is not a training class.*nor are 2 other") as e:
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)
    assert "\n" not in str(e.value)


def test_test_lacks_a_training_class(tmp_path, private_cache):
    root = _tree(tmp_path / "t", ["a", "b", "c"], ["a", "c"])
    with pytest.raises(DataError, match=r"training class b \(in .*train\) has no test images"):
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)


def test_test_has_more_classes_than_train(tmp_path, private_cache):
    root = _tree(tmp_path / "t", ["a", "b"], ["a", "b", "d"])
    with pytest.raises(DataError, match=r"test class d .* is not a training class"):
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)


def test_same_classes_keep_their_labels(tmp_path, private_cache):
    root = _tree(tmp_path / "t", ["a", "b", "c"], ["a", "b", "c"])
    b = load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)
    assert b.classes == ["a", "b", "c"] and b.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(b.test_x[:, 0, 0, 0], b.test_y)


def test_test_labels_follow_names_not_positions():
    from procrustes.training.data import _test_labels_by_name

    img = np.zeros((3, 1, 1, 3), np.uint8)
    tr = ImageArrays(img, np.array([0, 1, 2]), ["a", "b", "c"])
    te = ImageArrays(img, np.array([0, 1, 2]), ["c", "a", "b"])
    assert _test_labels_by_name(tr, te).tolist() == [2, 0, 1]


# ---------------------------------------------------------------- Tiny-ImageNet: classes in sorted wnid order


def _tiny(root: Path, wnids_in_file: list[str]) -> Path:
    wnids = sorted(wnids_in_file)
    for c, w in enumerate(wnids):
        for i in range(2):
            _save(root / "train" / w / "images" / f"{w}_{i}.JPEG", (40 * c, 60 * i, 7), 64)
    ann = []
    for k, w in enumerate(wnids * 2):
        _save(root / "val" / "images" / f"val_{k}.JPEG", (40 * wnids.index(w), 100, 7), 64)
        ann.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    (root / "wnids.txt").write_text("\n".join(wnids_in_file) + "\n")
    return root


def test_tiny_imagenet_classes_in_sorted_order(tmp_path, private_cache):
    wnids = ["n01443537", "n01629819", "n01641577", "n01644900", "n01698640"]
    shuffled = wnids[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != wnids
    a, b = _tiny(tmp_path / "sorted", wnids), _tiny(tmp_path / "shuffled", shuffled)
    for split in ("train", "val"):
        x, y = load_tinyimagenet(a, split), load_tinyimagenet(b, split)
        assert x.classes == y.classes == wnids
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.images, y.images)
    tr = load_split("tinyimagenet", b, "train")
    assert tr.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert tr.images.shape == (10, 64, 64, 3)


# ---------------------------------------------------------------- one-line errors


def _one_line(e) -> str:
    s = str(e.value)
    assert "\n" not in s
    return s


@pytest.mark.parametrize("content", [b"not an image at all", "half"])
def test_corrupt_image_names_the_file(tmp_path, private_cache, content):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    bad = root / "train" / "c001" / "broken.jpg"
    if content == "half":
        _save(tmp_path / "whole.jpg", (1, 2, 3), 64)
        content = (tmp_path / "whole.jpg").read_bytes()[:300]  # a truncated JPEG
    bad.write_bytes(content)
    with pytest.raises(DataError, match="cannot be read as an image") as e:
        load_split("imagefolder", root, "train")
    assert str(bad) in _one_line(e)


def test_one_class_is_refused_whatever_the_imbalance(tmp_path, private_cache):
    """Issue 25.12: a one-class dataset (imbalance none too) trained and reported 0% error."""
    root = make_imagefolder(tmp_path / "tree", 1, 3, 1, size=8)
    for imbalance in ("exp", "step", "none"):
        with pytest.raises(DataError, match=f"needs at least 2 classes \\(imbalance {imbalance}\\)") as e:
            load_benchmark(make_config("smoke", dataset="imagefolder", imbalance=imbalance, ratio=2), root)
        assert "c000" in _one_line(e)
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        class_counts(1, 10, "exp", 10)


def test_data_root_is_a_file(tmp_path, private_cache):
    f = tmp_path / "data.zip"
    f.write_bytes(b"zip")
    for dataset in ("cifar10", "imagefolder", "tinyimagenet"):
        with pytest.raises(DataError, match="is a file, not a folder") as e:
            check_root(dataset, f)
        assert str(f) in _one_line(e)
        with pytest.raises(DataError, match="is a file, not a folder"):
            load_split(dataset, f, "train")
    with pytest.raises(DataError, match="does not exist"):
        check_root("imagefolder", tmp_path / "nowhere")


def test_empty_class_folder_is_named(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 3, 2, 1, size=8)
    for f in (root / "train" / "c001").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="c001 holds no images") as e:
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)
    assert "impossible ratio" not in _one_line(e)


def test_mixed_image_sizes_name_two_files(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    odd = root / "train" / "c001" / "i001.png"
    _save(odd, (1, 1, 7), 16)
    with pytest.raises(DataError, match=r"images of different sizes \(.*i000.png is 8x8, .*i001.png is 16x16\): resize") as e:
        load_split("imagefolder", root, "train")
    assert "pass image_size" not in _one_line(e) and str(odd) in str(e.value)


def test_train_and_test_of_different_sizes(tmp_path, private_cache):
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    for f in _pngs(root, "test"):
        _save(f, (0, 0, 7), 16)
    with pytest.raises(DataError, match=r"images of different sizes \(.*train.*is 8x8, .*test.*is 16x16\)"):
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)


def test_a_class_with_too_few_images_is_named(tmp_path, private_cache):
    root = _tree(tmp_path / "t", ["big", "small"], ["big", "small"])
    (root / "train" / "small" / "i1.png").unlink()
    for i in range(2, 4):
        _save(root / "train" / "big" / f"i{i}.png", (0, i, 7))
    # exp with rho 2 on n_max 4 asks for 4 and 2; "small" has 1
    with pytest.raises(ConfigError, match="class small .* has 1 training images, fewer than the 2"):
        load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="exp", ratio=2), root)


# ---------------------------------------------------------------- provenance: the root, without machine paths


def test_data_root_is_recorded_without_the_machines_path(tmp_path, private_cache, monkeypatch):
    """Issue 25.8: committed results carried the absolute path of the machine that trained them."""
    from procrustes.training.data import portable_root

    cfg = make_config("smoke", dataset="imagefolder", imbalance="none")
    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    assert load_benchmark(cfg, str(root)).data["root"] == "external"  # absolute, outside the repository
    repo = Path(__file__).resolve().parents[1]
    assert portable_root(repo / "data" / "cifar10") == "data/cifar10"
    assert portable_root(str(repo / "data" / ".." / "data" / "x")) == "data/x"
    monkeypatch.chdir(tmp_path)
    given = load_benchmark(cfg, "tree").data
    assert given["root"] == "tree"
    make_imagefolder(tmp_path / "data" / "imagefolder", 2, 2, 1, size=8)  # the default location
    default = load_benchmark(cfg).data
    assert default["root"] == "default"
    assert default["id"] == given["id"]  # the same images: the id does not depend on where they are


# ---------------------------------------------------------------- issue 25.12: what ImageFolder reads


def test_images_in_nested_class_subfolders_are_read_as_torchvision_does(tmp_path, private_cache):
    import torchvision

    root = make_imagefolder(tmp_path / "tree", 2, 2, 1, size=8)
    _save(root / "train" / "c000" / "sub" / "n0.png", (0, 100, 7))
    _save(root / "train" / "c000" / "sub" / "deeper" / "n1.png", (0, 101, 7))
    _save(root / "train" / "c001" / "a_sub" / "n2.png", (1, 102, 7))
    arr = load_split("imagefolder", root, "train")
    ref = torchvision.datasets.ImageFolder(str(root / "train"))
    assert [str(f) for f in arr.files] == [p for p, _ in ref.samples]
    assert arr.labels.tolist() == [y for _, y in ref.samples]
    assert len(arr.files) == 7 and sorted(arr.images[:, 0, 0, 1].tolist())[-3:] == [100, 101, 102]


def test_16_bit_png_is_scaled_not_clipped(tmp_path, private_cache):
    from PIL import Image

    root = make_imagefolder(tmp_path / "tree", 2, 1, 1, size=8)
    for i, value in enumerate((65535, 32896, 257, 0)):
        Image.fromarray(np.full((8, 8), value, np.uint16)).save(root / "train" / "c001" / f"g{i}.png")
    arr = load_split("imagefolder", root, "train")
    grey = {Path(f).name: arr.images[i, 0, 0].tolist() for i, f in enumerate(arr.files) if Path(f).name.startswith("g")}
    assert grey == {"g0.png": [255] * 3, "g1.png": [128] * 3, "g2.png": [1] * 3, "g3.png": [0] * 3}
