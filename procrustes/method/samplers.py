"""Index streams for one epoch, generated on the training device. Unlike the reference code's re-sampling
option (which never took effect), these are what the trainer iterates over."""
from __future__ import annotations

import numpy as np
import torch


def class_probs(sampler: str, counts, epoch: int, epochs: int, drw_epoch: int) -> np.ndarray | None:
    """Probability of drawing each class this epoch; None means instance-balanced (a plain permutation).

    class: 1/C each; sqrt: proportional to sqrt(n_c); progressive: (1 - t/T) instance + (t/T) class-balanced
    (Kang et al. 2020); drs: instance-balanced, then class-balanced from drw_epoch (Cao et al. 2019)."""
    n = np.asarray(counts, dtype=np.float64)
    if sampler == "instance" or (sampler == "drs" and epoch < drw_epoch):
        return None
    if sampler in ("class", "drs"):
        return np.full(len(n), 1.0 / len(n))
    if sampler == "sqrt":
        return np.sqrt(n) / np.sqrt(n).sum()
    if sampler == "progressive":
        t = epoch / max(1, epochs - 1)
        return (1 - t) * n / n.sum() + t / len(n)
    raise ValueError(f"unknown sampler {sampler!r}")


def epoch_indices(sampler: str, labels: torch.Tensor, counts, epoch: int, epochs: int, drw_epoch: int,
                  generator: torch.Generator) -> torch.Tensor:
    """One epoch of training indices (as many as there are training images), on labels' device."""
    n = labels.numel()
    q = class_probs(sampler, counts, epoch, epochs, drw_epoch)
    if q is None:
        return torch.randperm(n, generator=generator, device=labels.device)
    per_example = torch.tensor(q / np.asarray(counts, np.float64), dtype=torch.float32, device=labels.device)[labels]
    return torch.multinomial(per_example, n, replacement=True, generator=generator)
