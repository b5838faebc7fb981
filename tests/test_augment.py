"""augment.py: zero-pad + random crop + horizontal flip on uint8 batches, and normalisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from procrustes.method.augment import augment, normalise
from procrustes.training.data import CIFAR_MEAN, CIFAR_STD


def _images(b, h=8, w=8, seed=0):
    # every pixel non-zero, so that zero padding is recognisable
    return torch.randint(1, 256, (b, h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_offsets_uniform_and_flips_fair():
    pad, b = 4, 9000
    _, off, flip = augment(_images(b, 2, 2), pad, torch.Generator().manual_seed(0))
    assert off.shape == (b, 2) and flip.shape == (b,) and flip.dtype == torch.bool
    assert off.min() == 0 and off.max() == 2 * pad
    for axis in (0, 1):
        observed = torch.bincount(off[:, axis], minlength=2 * pad + 1).numpy()
        expected = b / (2 * pad + 1)
        chi2 = ((observed - expected) ** 2 / expected).sum()
        assert chi2 < 40, (axis, observed)  # 8 degrees of freedom: P(chi2 > 40) is about 3e-6
    assert 0.45 < flip.float().mean().item() < 0.55


def test_crop_matches_pad_crop_flip():
    pad = 4
    x = _images(400, 8, 10)
    out, off, flip = augment(x, pad, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = np.pad(x.numpy(), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for i in range(len(x)):
        oy, ox = off[i].tolist()
        crop = padded[i, oy : oy + 8, ox : ox + 10]
        if flip[i]:
            crop = crop[:, ::-1]
        np.testing.assert_array_equal(out[i].numpy(), crop)


def test_special_offsets():
    pad = 4
    x = _images(2000, 8, 8, seed=2)
    out, off, flip = augment(x, pad, torch.Generator().manual_seed(3))
    centre = (off[:, 0] == pad) & (off[:, 1] == pad)
    plain, mirrored = centre & ~flip, centre & flip
    assert plain.any() and mirrored.any()
    assert torch.equal(out[plain], x[plain])  # offset (pad, pad), no flip: the original image
    assert torch.equal(out[mirrored], x[mirrored].flip(2))  # a flip reverses the columns
    corner = (off[:, 0] == 0) & (off[:, 1] == 0) & ~flip
    assert corner.any()
    assert torch.all(out[corner][:, :pad] == 0) and torch.all(out[corner][:, :, :pad] == 0)
    assert torch.all(out[corner][:, pad:, pad:] > 0)
    far = (off[:, 0] == 2 * pad) & (off[:, 1] == 2 * pad) & ~flip
    assert far.any()
    assert torch.all(out[far][:, -pad:] == 0) and torch.all(out[far][:, :, -pad:] == 0)
    assert torch.equal(out[far][:, : 8 - pad, : 8 - pad], x[far][:, pad:, pad:])


def test_eval_mode_is_identity():
    x = _images(5)
    out, off, flip = augment(x, 4, torch.Generator().manual_seed(0), train=False)
    assert torch.equal(out, x) and not off.any() and not flip.any()


def test_normalise_matches_torchvision():
    transforms = pytest.importorskip("torchvision.transforms")
    x = _images(3, 32, 32, seed=4)
    got = normalise(x, CIFAR_MEAN, CIFAR_STD)
    assert got.shape == (3, 3, 32, 32) and got.dtype == torch.float32
    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    want = torch.stack([t(img.numpy()) for img in x])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
