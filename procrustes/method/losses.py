"""Losses and class re-weighting of the LDAM-DRW line: CE, focal, class-balanced weights, LDAM, deferred
re-weighting (DRW), and logit adjustment. Every loss is computed per example, then reduced by one weighted
mean, so label-mixing methods (mixup, Remix) combine two targets the same way for every loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_balanced_weights(counts, beta: float = 0.9999) -> torch.Tensor:
    """(1 - beta) / (1 - beta ** n_c), normalised to sum to the number of classes (Cui et al. 2019)."""
    n = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    w = w / w.sum() * len(n)
    return torch.tensor(w, dtype=torch.float32)


def ldam_margins(counts, max_margin: float = 0.5) -> torch.Tensor:
    """Per-class margins proportional to n_c ** -1/4, the largest equal to max_margin (Cao et al. 2019)."""
    m = 1.0 / np.sqrt(np.sqrt(np.asarray(counts, dtype=np.float64)))
    return torch.tensor(m * (max_margin / m.max()), dtype=torch.float32)


def class_weights(loss: str, counts, epoch: int, drw_epoch: int, beta: float) -> torch.Tensor:
    """The weights of this epoch: class-balanced for 'cb' always, for the *-drw losses from drw_epoch on."""
    if loss == "cb" or (loss in ("drw", "ldam-drw") and epoch >= drw_epoch):
        return class_balanced_weights(counts, beta)
    return torch.ones(len(counts))


class Criterion:
    """Per-example loss l(logits, y) for one of the losses; weights are applied by `reduce`."""

    def __init__(self, loss: str, counts, *, focal_gamma=1.0, ldam_max_margin=0.5, ldam_scale=30.0, la_tau=1.0, device="cpu"):
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.scale = ldam_scale
        self.margins = ldam_margins(counts, ldam_max_margin).to(device)
        prior = torch.tensor(np.asarray(counts, np.float64) / np.sum(counts), dtype=torch.float32)
        self.log_prior = (la_tau * prior.log()).to(device)

    @property
    def uses_cosine(self) -> bool:
        return self.loss.startswith("ldam")

    def per_example(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.uses_cosine:  # subtract the class margin from the true-class cosine, then scale
            logits = logits - F.one_hot(y, logits.shape[1]) * self.margins[y][:, None]
            logits = logits * self.scale
        elif self.loss == "logit-adjust":
            logits = logits + self.log_prior
        ce = F.cross_entropy(logits, y, reduction="none")
        if self.loss == "focal":  # focal on the unweighted CE; weights enter in `reduce` (a fix of the reference)
            p = torch.exp(-ce)
            return (1 - p) ** self.focal_gamma * ce
        return ce


def reduce(losses: list[torch.Tensor], targets: list[torch.Tensor], coefs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k sum_i coef_ki w[y_ki] l_ki / sum_k sum_i coef_ki w[y_ki]: F.cross_entropy's weighted mean,
    extended to mixed targets (coef = lam and 1 - lam)."""
    num = sum((c * weights[t] * loss).sum() for loss, t, c in zip(losses, targets, coefs))
    den = sum((c * weights[t]).sum() for t, c in zip(targets, coefs))
    return num / den
