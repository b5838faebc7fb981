"""`python -m procrustes bench` at tiny size on the CPU, and the augmentation of both pipelines: the same
crop-and-flip family, offsets uniform over 0..8 in each axis, fair flips. Nothing here asserts on time."""
from __future__ import annotations

import re

import numpy as np
import pytest

from procrustes import bench


def test_bench_cli_end_to_end(cifar10_root, capsys):
    from procrustes.__main__ import main

    rc = main(["bench", "--device", "cpu", "--steps", "1", "--rounds", "1", "--workers", "0", "--aug-samples", "400"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert re.fullmatch(r"ratio ours/reference: \d+\.\d\d", lines[-1]), lines[-1]
    assert any(line.startswith("round 1/1: reference") for line in lines)
    assert any(line.startswith("median: reference") for line in lines)
    assert any("reference vs ours" in line and line.endswith("-> agree") for line in lines)


def test_bench_compiled_pipeline(cifar10_root, capsys):
    """--compile adds ours compiled to every round and prints its ratio just before the last line."""
    from procrustes.__main__ import main

    rc = main(["bench", "--device", "cpu", "--steps", "1", "--rounds", "1", "--workers", "0", "--aug-samples", "100",
               "--compile"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("ratio ours/reference: ")
    assert re.fullmatch(r"ratio ours compiled/reference: \d+\.\d\d \(default mode; compiled/eager \d+\.\d\d; compilation \d+ s\)",
                        lines[-2]), lines[-2]
    assert any(line.startswith("round 1/1: reference") and "ours compiled" in line for line in lines)


def test_augmentation_of_both_pipelines_is_uniform_and_agrees():
    st = bench.augmentation_stats(4000, "cpu", seed=0)
    for name in ("reference", "ours"):
        r = st[name]
        assert r["exact"] == 1.0, f"{name}: some crops are not zero-padded crops of the image"
        assert len(r["hist_rows"]) == len(r["hist_cols"]) == 9 and sum(r["hist_rows"]) == 4000
        assert r["uniform"], (name, r["hist_rows"], r["hist_cols"], r["flip_rate"])
    assert st["ours"]["reported_match"]  # augment() reports the offsets and flips it applied
    assert st["agree"], (st["homogeneity_chi2"], st["flip_diff_z"])


@pytest.mark.parametrize("flip", [False, True])
def test_decode_crops_reads_known_offsets(flip):
    img = np.pad(bench.coordinate_image(32), ((4, 4), (4, 4), (0, 0)))
    offs = [(0, 0), (8, 8), (3, 7), (8, 0)]
    crops = np.stack([img[r : r + 32, c : c + 32][:, ::-1] if flip else img[r : r + 32, c : c + 32] for r, c in offs])
    o, f, exact = bench.decode_crops(crops, 4)
    assert o.tolist() == [list(x) for x in offs]
    assert f.tolist() == [flip] * len(offs) and exact.all()
    crops[0, 5, 5, 2] = 0  # one wrong pixel: no longer an exact crop
    assert not bench.decode_crops(crops, 4)[2][0]


def test_accuracy_compare_starts_from_the_same_weights(cifar10_root):
    import torch

    from procrustes.data import load_benchmark

    cfg = bench.bench_config()
    b = load_benchmark(cfg)
    out = []
    res = bench.accuracy_compare(b, cfg, torch.device("cpu"), 1, 0, per_class=2, out=out.append)
    assert res["same_init"]
    assert set(res["accuracy"]) == {"reference", "ours"} and all(0 <= a <= 1 for a in res["accuracy"].values())
    assert "within noise" in out[-1] or "OUTSIDE" in out[-1]
