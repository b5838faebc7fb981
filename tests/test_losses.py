"""losses.py: class-balanced weights, LDAM margins, the per-example losses and their weighted reduction,
and the deferred re-weighting switch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from procrustes.method.losses import Criterion, class_balanced_weights, class_weights, ldam_margins, reduce

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _batch(seed=0, b=32, c=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 3, torch.randint(0, c, (b,), generator=g)


def test_class_balanced_weights():
    w = class_balanced_weights(COUNTS, 0.9999)
    assert w.shape == (10,) and w.dtype == torch.float32
    assert w.sum().item() == pytest.approx(10, rel=1e-6)
    assert torch.all(w[1:] > w[:-1])  # rarer class, larger weight
    n = np.asarray(COUNTS, float)
    ref = (1 - 0.9999) / (1 - 0.9999 ** n)
    np.testing.assert_allclose(w.numpy(), ref / ref.sum() * 10, rtol=1e-6)
    assert torch.allclose(class_balanced_weights([7, 7, 7]), torch.ones(3))


def test_ldam_margins():
    m = ldam_margins(COUNTS, 0.5)
    assert m.max().item() == pytest.approx(0.5)
    assert m.argmax().item() == 9  # the rarest class has the largest margin
    prod = m.double().numpy() * np.asarray(COUNTS, float) ** 0.25
    np.testing.assert_allclose(prod, prod[0], rtol=1e-6)
    assert ldam_margins(COUNTS, 0.3).max().item() == pytest.approx(0.3)


def test_erm_is_cross_entropy():
    logits, y = _batch()
    crit = Criterion("erm", COUNTS)
    torch.testing.assert_close(crit.per_example(logits, y), F.cross_entropy(logits, y, reduction="none"))
    torch.testing.assert_close(reduce([crit.per_example(logits, y)], [y], [torch.ones(32)], torch.ones(10)),
                               F.cross_entropy(logits, y))


def test_weighted_reduce_is_weighted_cross_entropy():
    logits, y = _batch(1)
    w = class_balanced_weights(COUNTS)
    crit = Criterion("erm", COUNTS)
    got = reduce([crit.per_example(logits, y)], [y], [torch.ones(32)], w)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, weight=w))
    assert not torch.allclose(got, F.cross_entropy(logits, y))


def test_reduce_with_mixed_targets():
    logits, y1 = _batch(2)
    y2 = torch.roll(y1, 1)
    lam = torch.full((32,), 0.3)
    crit = Criterion("erm", COUNTS)
    got = reduce([crit.per_example(logits, y1), crit.per_example(logits, y2)], [y1, y2], [lam, 1 - lam], torch.ones(10))
    want = 0.3 * F.cross_entropy(logits, y1) + 0.7 * F.cross_entropy(logits, y2)
    torch.testing.assert_close(got, want)


def test_focal():
    logits, y = _batch(3)
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(Criterion("focal", COUNTS, focal_gamma=0.0).per_example(logits, y), ce)
    p = logits.softmax(1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(Criterion("focal", COUNTS, focal_gamma=2.0).per_example(logits, y), (1 - p) ** 2 * ce)


def test_ldam_subtracts_the_margin_only_at_the_true_class():
    cos, y = _batch(4)
    cos = torch.tanh(cos)  # cosines
    crit = Criterion("ldam", COUNTS, ldam_max_margin=0.5, ldam_scale=30.0)
    assert crit.uses_cosine and Criterion("ldam-drw", COUNTS).uses_cosine and not Criterion("drw", COUNTS).uses_cosine
    m = ldam_margins(COUNTS, 0.5)
    adjusted = cos.clone()
    for i in range(len(y)):
        adjusted[i, y[i]] -= m[y[i]]
    torch.testing.assert_close(crit.per_example(cos, y), F.cross_entropy(30 * adjusted, y, reduction="none"))
    # the margin matters: without it the loss is smaller for every example
    assert torch.all(crit.per_example(cos, y) > F.cross_entropy(30 * cos, y, reduction="none"))


def test_logit_adjustment():
    logits, y = _batch(5)
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    got = Criterion("logit-adjust", COUNTS, la_tau=1.0).per_example(logits, y)
    torch.testing.assert_close(got, F.cross_entropy(logits + prior.log(), y, reduction="none"))


@pytest.mark.parametrize("loss", ["drw", "ldam-drw"])
def test_drw_switches_at_drw_epoch(loss):
    cb = class_balanced_weights(COUNTS, 0.9999)
    assert torch.equal(class_weights(loss, COUNTS, 0, 160, 0.9999), torch.ones(10))
    assert torch.equal(class_weights(loss, COUNTS, 159, 160, 0.9999), torch.ones(10))
    assert torch.equal(class_weights(loss, COUNTS, 160, 160, 0.9999), cb)
    assert torch.equal(class_weights(loss, COUNTS, 199, 160, 0.9999), cb)


def test_other_losses_weights():
    cb = class_balanced_weights(COUNTS, 0.999)
    assert torch.equal(class_weights("cb", COUNTS, 0, 160, 0.999), cb)
    for loss in ("erm", "focal", "ldam", "logit-adjust"):
        assert torch.equal(class_weights(loss, COUNTS, 199, 160, 0.999), torch.ones(10))
