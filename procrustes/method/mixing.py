"""Major feature weakening (MFW, our reconstruction of Procrustean training) and its label-mixing relatives.

MFW: pick example i with probability p(y_i) (high for major classes, 0 for minor ones), draw a partner j from
the same batch and lam_i, replace the hidden feature h_i by lam_i h_i + (1 - lam_i) h_j at one mixing point,
and KEEP the label y_i. Mixup, manifold mixup and Remix mix labels too; they are here for comparison.
Each batch gets a `BatchMix`: where to mix, with whom and how much, plus the targets and their coefficients.
The draws and the math live here once, the mechanism once in `procrustes.method.weaken`: forward hooks on a named
submodule of any torch model, which the trainer uses on its own models too (`staged_point_mixers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .counts import major_classes
from .transfer import to_device


def selection_probs(counts, rule: str = "median", prob: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """p(c) of weakening an example of class c.

    median: prob for the major classes (counts.major_classes: n_c >= median count), 0 for the rest;
    power: prob * ((n_c - n_min)/(n_max - n_min))**gamma; inverse: prob * (1 - n_min / n_c);
    all: prob for every class (an ablation: no class dependence)."""
    n = np.asarray(counts, dtype=np.float64)
    if rule == "median":
        p = major_classes(n).astype(np.float64)  # one definition of "major" (counts.major_classes)
    elif rule == "power":
        span = n.max() - n.min()
        p = ((n - n.min()) / span) ** gamma if span > 0 else np.zeros_like(n)
    elif rule == "inverse":
        p = 1.0 - n.min() / n
    elif rule == "all":
        p = np.ones_like(n)
    else:
        raise ValueError(f"unknown selection rule {rule!r}")
    return prob * p


def draw_lam(law: str, size: int, rng: np.random.Generator, lam_min: float = 0.5, alpha: float = 1.0) -> np.ndarray:
    """uniform: U(lam_min, 1); beta: Beta(alpha, alpha); beta-folded: max(l, 1 - l) with l ~ Beta(alpha, alpha)."""
    if law == "uniform":
        return rng.uniform(lam_min, 1.0, size)
    b = rng.beta(alpha, alpha, size)
    if law == "beta":
        return b
    if law == "beta-folded":
        return np.maximum(b, 1.0 - b)
    raise ValueError(f"unknown law of lam {law!r}")


def mix_features(h: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lam_i * h_i + (1 - lam_i) * h_perm(i); lam = 1 leaves h_i exactly as it was.

    Computed in h's dtype (under bf16 autocast: bf16 after a convolution or a linear layer, fp32 after a layer
    autocast keeps in fp32 or that promotes to it, such as LayerNorm or ConvNeXt's layer scale) along its first
    (batch) dimension, whatever the other dimensions are (NCHW or channels_last maps, (B, N, D) tokens, (B, D) vectors)."""
    shape = (-1,) + (1,) * (h.dim() - 1)
    lam = lam.to(h.dtype).view(shape)
    return lam * h + (1 - lam) * h[perm]


def draw_mfw(y: torch.Tensor, probs, law: str, lam_min: float, alpha: float, gen: torch.Generator,
             rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MFW draws of one batch with labels y: (perm, lam, chosen), in this order of draws (the trainer's,
    kept bit for bit): the partners perm (randperm, gen), a selection coin per example (rand, gen; example i is
    chosen when its coin < probs[y_i]), lam per example from `law` (rng); lam is 1 for examples not chosen."""
    b, dev = y.numel(), y.device
    perm = torch.randperm(b, generator=gen, device=dev)
    p = probs.to(dev, torch.float32) if isinstance(probs, torch.Tensor) else to_device(probs, dev)
    chosen = torch.rand(b, generator=gen, device=dev) < p[y]
    lam = to_device(draw_lam(law, b, rng, lam_min, alpha), dev)  # no host synchronisation on CUDA
    lam = torch.where(chosen, lam, torch.ones(b, device=dev))
    return perm, lam, chosen


def mixup_targets(y: torch.Tensor, perm: torch.Tensor, lam: float, counts=None, remix_kappa: float = 3.0,
                  remix_tau: float = 0.5) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(targets, coefs, lam_x) of the label-mixing methods with one lam per batch: the features mix with lam_x
    (lam for every example) and the label of example i is lam_y y_i + (1 - lam_y) y_perm(i). lam_y = lam
    (mixup, manifold mixup) unless `counts` is given: Remix (Chou et al. 2020) gives the label to the minor
    side when the counts differ by remix_kappa or more and the minor side's share of the features is at
    least 1 - remix_tau."""
    b, dev = y.numel(), y.device
    lam_x = torch.full((b,), lam, device=dev)
    lam_y = lam_x.clone()
    if counts is not None:
        n = to_device(np.asarray(counts, np.float64), dev)
        r = n[y] / n[y[perm]]
        lam_y = torch.where((r >= remix_kappa) & (lam_x < remix_tau), torch.zeros_like(lam_y), lam_y)
        lam_y = torch.where((r <= 1 / remix_kappa) & (1 - lam_x < remix_tau), torch.ones_like(lam_y), lam_y)
    return [y, y[perm]], [lam_y, 1 - lam_y], lam_x


def mfw_is_active(active: str, epoch: int, drw_epoch: int) -> bool:
    """mfw_active: "always", or "until-drw" (off from drw_epoch on)."""
    return not (active == "until-drw" and epoch >= drw_epoch)


@dataclass
class BatchMix:
    """What one batch does: where to mix (point), with whom (perm) and how much (lam per example), and the
    targets of the loss with their coefficients."""

    targets: list[torch.Tensor]
    coefs: list[torch.Tensor]
    point: str | None = None
    perm: torch.Tensor | None = None
    lam: torch.Tensor | None = None
    weakened: torch.Tensor | None = None  # bool mask of MFW-selected examples (for diagnostics)
    extra: dict = field(default_factory=dict)


def plan_points(cfg) -> tuple[str, ...]:
    """The mixing points `plan_batch` may choose for cfg (empty without a mixing method): where the trainer
    attaches its forward hooks."""
    mixer = cfg.mixer
    if mixer is None:
        return ()
    if mixer == "mfw":
        return tuple(cfg.mfw_random_points) if cfg.mfw_point == "random" else (cfg.mfw_point,)
    return ("input",) if mixer in ("mixup", "remix") else tuple(cfg.manifold_points)


def plan_batch(cfg, y: torch.Tensor, counts, epoch: int, drw_epoch: int, gen: torch.Generator, rng: np.random.Generator) -> BatchMix:
    """The BatchMix of one batch for cfg.mixer (None: plain training).

    The random draws, in order: MFW: `draw_mfw` (partners and coins from gen, lam from rng), then the point
    from rng when mfw_point="random"; the label-mixing methods: partners (gen), lam (rng), then the point
    (rng) for manifold mixup. `procrustes.method.weaken` draws through the same functions in the same order."""
    b, dev = y.numel(), y.device
    ones = torch.ones(b, device=dev)
    mixer = cfg.mixer
    if mixer is None or (mixer == "mfw" and not mfw_is_active(cfg.mfw_active, epoch, drw_epoch)):
        return BatchMix([y], [ones])
    if mixer == "mfw":
        probs = selection_probs(counts, cfg.mfw_select, cfg.mfw_prob, cfg.mfw_gamma)
        perm, lam, chosen = draw_mfw(y, probs, cfg.mfw_lam, cfg.mfw_lam_min, cfg.mfw_alpha, gen, rng)
        point = cfg.mfw_point if cfg.mfw_point != "random" else str(rng.choice(list(cfg.mfw_random_points)))
        return BatchMix([y], [ones], point, perm, lam, chosen)
    # label-mixing relatives: one lam per batch, as in mixup
    perm = torch.randperm(b, generator=gen, device=dev)
    lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
    point = "input" if mixer in ("mixup", "remix") else str(rng.choice(list(cfg.manifold_points)))
    remix = counts if mixer == "remix" else None  # Chou et al. 2020: the label goes to the minor side
    targets, coefs, lam_x = mixup_targets(y, perm, lam, remix, cfg.remix_kappa, cfg.remix_tau)
    return BatchMix(targets, coefs, point, perm, lam_x)
