"""Notebook 08's demo, apart from the method: MFW on a model you did not write, trained by a plain PyTorch loop
on your ImageFolder data. `procrustes.method.weaken` holds the method (the forward hooks); this module only loads
data, trains with and without the hook, and scores per class."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..method.augment import augment, normalise
from ..training.config import make_config
from ..training.data import default_root, load_benchmark
from ..training.train import balanced_subset, evaluate
from ..method.weaken import LayerMixing, MajorFeatureWeakening, WeakeningError


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise WeakeningError(message)



# The sizes of notebooks/08_your_model.ipynb per profile: training images a class at most (before the
# imbalance), test images a class, epochs, batch size. smoke: seconds of CPU (nbval); cpu: minutes on 2 cores.
DEMO_SIZES = {
    "smoke": {"max_per_class": 40, "test_per_class": 20, "epochs": 2, "batch_size": 32},
    "cpu": {"max_per_class": 400, "test_per_class": 200, "epochs": 12, "batch_size": 64},
    "paper": {"max_per_class": None, "test_per_class": None, "epochs": 60, "batch_size": 128},
}


def demo_sizes(profile: str | None = None, **overrides) -> tuple[str, dict]:
    """(profile, sizes) of notebook 08: profile None reads $PROCRUSTES_PROFILE, else "cpu"; overrides that
    are not None replace the profile's values (max_per_class, test_per_class, epochs, batch_size)."""
    profile = profile or os.environ.get("PROCRUSTES_PROFILE") or "cpu"
    _require(profile in DEMO_SIZES, f"unknown profile {profile!r}: choose one of {', '.join(DEMO_SIZES)}")
    unknown = set(overrides) - set(DEMO_SIZES[profile])
    _require(not unknown, f"unknown size(s) {', '.join(sorted(unknown))}: choose among {', '.join(DEMO_SIZES[profile])}")
    return profile, {**DEMO_SIZES[profile], **{k: v for k, v in overrides.items() if v is not None}}


def load_image_data(root=None, imbalance: str = "step", ratio: float = 10, max_per_class: int | None = None,
                    test_per_class: int | None = None, subset_seed: int = 0):
    """An ImageFolder tree ROOT/{train,test}/<class>/* (default: the CIFAR-10 JPEGs at data/cifar10) as a
    `procrustes.training.data.Benchmark` (uint8 arrays): the training set made imbalanced with the LDAM-DRW rule
    (`imbalance` exp/step/none, ratio rho, n_max = min(max_per_class, largest class)), the test set cut to the
    first `test_per_class` images of each class (None: all)."""
    cfg = make_config("paper", dataset="imagefolder", imbalance=imbalance, ratio=ratio, max_per_class=max_per_class,
                      subset_seed=subset_seed)
    bench = load_benchmark(cfg, root if root is not None else default_root("cifar10"))
    keep = balanced_subset(bench.test_y, test_per_class)
    bench.test_x, bench.test_y = bench.test_x[keep], bench.test_y[keep]
    return bench


def fit(model: nn.Module, data, epochs: int, batch_size: int = 64, lr: float = 0.05,
        weakening: LayerMixing | None = None, seed: int = 0, device: str | torch.device = "cpu") -> list[float]:
    """A plain PyTorch training loop (SGD, cosine lr, pad-crop-flip augmentation) of `model` on data.train_x /
    train_y (a Benchmark); with `weakening`, the three lines marked MFW are what it adds. Returns the mean
    training loss of each epoch."""
    x, y, s, gen = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y), data.spec, torch.Generator().manual_seed(seed)
    steps = len(y) // batch_size  # full batches only (BatchNorm needs more than one example)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * steps))
    model.to(device).train()
    losses = []
    with weakening if weakening is not None else contextlib.nullcontext():  # MFW: attach the hook
        for epoch in range(epochs):
            if isinstance(weakening, MajorFeatureWeakening):
                weakening.set_epoch(epoch)  # only matters with until_epoch
            total = 0.0
            for idx in torch.randperm(len(y), generator=gen)[: steps * batch_size].split(batch_size):
                xb = normalise(augment(x[idx], s.pad, gen)[0], s.mean, s.std).to(device)
                yb = y[idx].to(device)
                if weakening is not None:
                    weakening.set_labels(yb)  # MFW: this batch's labels, before the forward pass
                loss = F.cross_entropy(model(xb), yb)  # MFW keeps the labels: the loss is unchanged
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            losses.append(total / max(1, steps))
    return losses


def per_class_accuracy(model: nn.Module, data, device: str | torch.device = "cpu") -> np.ndarray:
    """Top-1 accuracy of each class on data.test_x / test_y (eval mode, no augmentation)."""
    x, y = torch.from_numpy(data.test_x).to(device), torch.from_numpy(data.test_y).to(device)
    correct, total, _ = evaluate(model, x, y, len(data.counts), data.spec.mean, data.spec.std, bf16=False)
    return (correct / total.clamp(min=1)).cpu().numpy()


__all__ = ["DEMO_SIZES", "demo_sizes", "load_image_data", "fit", "per_class_accuracy"]
