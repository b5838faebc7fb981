"""`python -m procrustes bench` at tiny size on the CPU, and the augmentation of both pipelines: the same
crop-and-flip family, offsets uniform over 0..8 in each axis, fair flips. Nothing here asserts on time."""
from __future__ import annotations

import re

import numpy as np
import pytest

from procrustes.tooling import bench


def test_bench_cli_end_to_end(cifar10_root, capsys):
    from procrustes.tooling.cli import main

    rc = main(["bench", "--device", "cpu", "--steps", "1", "--rounds", "1", "--workers", "0", "--aug-samples", "400"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert re.fullmatch(r"ratio ours/reference: \d+\.\d\d", lines[-1]), lines[-1]
    assert any(line.startswith("round 1/1: reference") for line in lines)
    assert any(line.startswith("median: reference") for line in lines)
    assert any("reference vs ours" in line and line.endswith("-> agree") for line in lines)


def test_bench_compiled_pipeline(cifar10_root, capsys):
    """--compile adds ours compiled to every round and prints its ratio just before the last line."""
    from procrustes.tooling.cli import main

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

    from procrustes.training.data import load_benchmark

    cfg = bench.bench_config()
    b = load_benchmark(cfg)
    out = []
    res = bench.accuracy_compare(b, cfg, torch.device("cpu"), 1, 0, per_class=2, out=out.append)
    assert res["same_init"]
    assert set(res["accuracy"]) == {"reference", "ours"} and all(0 <= a <= 1 for a in res["accuracy"].values())
    assert "within noise" in out[-1] or "OUTSIDE" in out[-1]


def test_bench_eval_prints_every_batch_and_the_ratio_last(capsys):
    from procrustes.tooling.cli import main

    assert main(["bench", "--device", "cpu", "--eval", "24", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    for b in bench.EVAL_BATCHES:
        assert f"batch {b} " in lines[-2]
    assert re.fullmatch(r"ratio eval batch 128 \(the trainer's on cpu\)/batch 1000: \d+\.\d\d", lines[-1])


def test_the_evaluation_batch_changes_no_count():
    """evaluate() is per image (eval mode): any batch gives the same per-class counts, top-5 hits and major
    predictions, so EVAL_BATCH may differ by device without moving a result."""
    import torch

    from procrustes.method.models import build_model
    from procrustes.training.train import EVAL_BATCH, eval_batch, evaluate

    torch.manual_seed(0)
    model = build_model("resnet32", 10, normed=False).to(memory_format=torch.channels_last)
    for _ in range(3):  # running statistics away from their initial values, so that eval mode differs from train
        model.train()(torch.randn(16, 3, 32, 32))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (70, 32, 32, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (70,), generator=g)
    is_major = torch.arange(10) < 5
    args = (model, x, y, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), False)
    whole = evaluate(*args, batch=1000, is_major=is_major)
    for b in (1, 7, 64):
        for a, c in zip(whole, evaluate(*args, batch=b, is_major=is_major)):
            assert torch.equal(a, c), b
    assert whole[1].sum() == 70 and eval_batch("cpu") == EVAL_BATCH["cpu"] and eval_batch("meta") == 1000
