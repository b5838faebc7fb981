"""samplers.py: the index stream of one epoch for each sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from procrustes.method.samplers import class_probs, epoch_indices

COUNTS = [1000, 100, 10]
LABELS = torch.from_numpy(np.repeat(np.arange(3), COUNTS))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_instance_sampler_is_a_permutation():
    idx = epoch_indices("instance", LABELS, COUNTS, 0, 10, 5, _gen())
    assert idx.shape == (1110,)
    assert torch.equal(idx.sort().values, torch.arange(1110))
    assert not torch.equal(idx, torch.arange(1110))
    assert not torch.equal(idx, epoch_indices("instance", LABELS, COUNTS, 0, 10, 5, _gen()).flip(0))
    assert torch.equal(idx, epoch_indices("instance", LABELS, COUNTS, 0, 10, 5, _gen()))  # seeded


def test_class_balanced_sampler_draws_classes_uniformly():
    idx = epoch_indices("class", LABELS, COUNTS, 0, 10, 5, _gen(1))
    assert idx.shape == (1110,)
    per_class = torch.bincount(LABELS[idx], minlength=3).numpy()
    # 370 expected each, binomial sd about 16: +-100 is more than 6 sd
    assert np.all(np.abs(per_class - 370) < 100), per_class
    # within the rarest class every one of its 10 images is drawn (about 37 draws)
    assert len(torch.unique(idx[LABELS[idx] == 2])) == 10


def test_class_probs():
    assert class_probs("instance", COUNTS, 3, 10, 5) is None
    np.testing.assert_allclose(class_probs("class", COUNTS, 0, 10, 5), [1 / 3] * 3)
    s = np.sqrt(COUNTS)
    np.testing.assert_allclose(class_probs("sqrt", COUNTS, 0, 10, 5), s / s.sum())
    with pytest.raises(ValueError):
        class_probs("oversample", COUNTS, 0, 10, 5)


def test_drs_switches_at_drw_epoch():
    assert class_probs("drs", COUNTS, 4, 10, 5) is None
    np.testing.assert_allclose(class_probs("drs", COUNTS, 5, 10, 5), [1 / 3] * 3)
    before = epoch_indices("drs", LABELS, COUNTS, 4, 10, 5, _gen())
    assert torch.equal(before.sort().values, torch.arange(1110))
    after = epoch_indices("drs", LABELS, COUNTS, 5, 10, 5, _gen())
    assert torch.bincount(LABELS[after], minlength=3)[2] > 200  # instance sampling would give 10


def test_progressive_interpolates():
    n = np.asarray(COUNTS, float)
    np.testing.assert_allclose(class_probs("progressive", COUNTS, 0, 11, 5), n / n.sum())
    np.testing.assert_allclose(class_probs("progressive", COUNTS, 10, 11, 5), [1 / 3] * 3)
    mid = class_probs("progressive", COUNTS, 5, 11, 5)
    np.testing.assert_allclose(mid, 0.5 * n / n.sum() + 0.5 / 3)
    assert mid.sum() == pytest.approx(1)
