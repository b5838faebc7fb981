"""The protocol's augmentation (zero-pad, random crop, horizontal flip, normalise) on whole uint8 batches on
the training device: one gather instead of per-image PIL work."""
from __future__ import annotations

import torch

from .transfer import constant


def augment(x: torch.Tensor, pad: int, generator: torch.Generator, train: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (B, H, W, C) uint8. Returns the crops (B, H, W, C) uint8, the offsets (B, 2) and the flips (B,).

    Offsets are uniform over 0..2*pad in each axis and flips fair coins, exactly like torchvision's
    RandomCrop(H, padding=pad) (zero fill) followed by RandomHorizontalFlip()."""
    b, h, w, _ = x.shape
    dev = x.device
    if not train:
        return x, torch.zeros(b, 2, dtype=torch.long, device=dev), torch.zeros(b, dtype=torch.bool, device=dev)
    padded = torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad))  # zeros, like RandomCrop(padding=pad)
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    rows = off[:, :1] + torch.arange(h, device=dev)  # (B, H)
    ar = torch.arange(w, device=dev)
    cols = off[:, 1:] + torch.where(flip[:, None], w - 1 - ar, ar)  # (B, W)
    out = padded[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out, off, flip


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float in channels_last memory, (x/255 - mean) / std."""
    m = constant(tuple(mean), str(x.device)) * 255  # copied to the device once, not each step
    s = constant(tuple(std), str(x.device)) * 255
    return ((x.float() - m) / s).permute(0, 3, 1, 2)
