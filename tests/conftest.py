"""Shared fixtures: one torch thread, a throw-away result store for the whole session, data locations,
generated ImageFolder trees and a helper that runs several `python -m procrustes` commands at once."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread: on a 2-core machine that is also training something, two threads oversubscribe the
# cores and each step gets several times slower. PROCRUSTES_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("PROCRUSTES_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def _private_result_store(tmp_path_factory):
    """No test writes to the repository's results/: the default store is a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PROCRUSTES_RESULTS", str(tmp_path_factory.mktemp("results-default")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    from procrustes.training.data import default_root

    root = default_root("cifar10")
    if not ((root / "train").is_dir() and (root / "test").is_dir()) and not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"CIFAR-10 not found at {root} (extract ../shared/data/cifar10-jpeg.tar.gz there)")
    return root


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    from procrustes.training.data import default_root

    root = default_root("tinyimagenet")
    if not (root / "wnids.txt").exists():
        pytest.skip(f"Tiny-ImageNet-200 not found at {root} (extract ../shared/data/tiny-imagenet-200-slice.tar.gz)")
    return root


def pixel_value(label: int, index: int) -> tuple[int, int, int]:
    """A colour that names (class, image index) in a generated tree: R = class, G = index, B = 7."""
    return (label, index, 7)


def make_imagefolder(root: Path, num_classes: int, train_per_class: int, test_per_class: int, size: int = 32) -> Path:
    """root/{train,test}/cNNN/iNNN.png, each image one flat colour given by `pixel_value` (PNG is lossless)."""
    from PIL import Image

    for split, per in (("train", train_per_class), ("test", test_per_class)):
        for c in range(num_classes):
            d = root / split / f"c{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                a = np.empty((size, size, 3), np.uint8)
                a[:] = pixel_value(c, i)
                Image.fromarray(a).save(d / f"i{i:03d}.png")
    return root


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def run_cli_many(argvs: list[list[str]], env: dict[str, str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start `python -m procrustes ARGV` for every ARGV at once (each spends its time importing torch), then
    wait for all. The timeout only guards against a hang; nothing here asserts on time."""
    procs = [subprocess.Popen([sys.executable, "-m", "procrustes", *a], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in argvs]
    out = []
    for a, p in zip(argvs, procs):
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
        out.append(subprocess.CompletedProcess([sys.executable, "-m", "procrustes", *a], p.returncode, so, se))
    return out


def ldam_drw_reference(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """A literal copy of the reference (IMBALANCECIFAR10.gen_imbalanced_data), on the global np.random."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        new_idx = []
        classes = np.unique(labels)
        for the_class, the_img_num in zip(classes, counts):
            idx = np.where(labels == the_class)[0]
            np.random.shuffle(idx)
            new_idx.append(idx[:the_img_num])
        return np.concatenate(new_idx)
    finally:
        np.random.set_state(state)
