"""mixing.py: major feature weakening (MFW) and its label-mixing relatives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from procrustes.training.config import make_config
from procrustes.method.mixing import BatchMix, draw_lam, mix_features, plan_batch, plan_points, selection_probs

STEP = [100] * 5 + [10] * 5  # a step profile: classes 0-4 major, 5-9 minor


def _plan(method, y, counts=STEP, epoch=0, drw_epoch=100, seed=0, rng=None, **over):
    cfg = make_config("smoke", method=method, **over)
    gen = torch.Generator().manual_seed(seed)
    return plan_batch(cfg, y, counts, epoch, drw_epoch, gen, rng or np.random.default_rng(seed))


Y = torch.arange(10).repeat(20)  # 200 examples, 20 of each class


def _at(mix: BatchMix, name: str, h: torch.Tensor) -> torch.Tensor:
    """What the trainer's forward hook at point `name` does with this plan (procrustes.method.weaken.LayerMixing)."""
    return mix_features(h, mix.perm, mix.lam) if name == mix.point and mix.perm is not None else h


def test_minor_classes_untouched_by_mfw():
    mix = _plan("mfw", Y, mfw_point="stage1")
    minor = Y >= 5
    assert selection_probs(STEP, "median").tolist() == [1.0] * 5 + [0.0] * 5
    assert not mix.weakened[minor].any()
    assert torch.all(mix.lam[minor] == 1)
    h = torch.randn(200, 16, 4, 4)
    out = _at(mix, "stage1", h)
    assert torch.equal(out[minor], h[minor])
    # the major classes (p = 1) are all weakened, by lam in [0.5, 1)
    assert mix.weakened[~minor].all()
    assert torch.all((mix.lam[~minor] >= 0.5) & (mix.lam[~minor] < 1))
    assert not torch.allclose(out[~minor], h[~minor])
    # at other points the hook does nothing
    for name in ("input", "stem", "stage2", "feature"):
        assert _at(mix, name, h) is h


def test_mfw_never_changes_labels():
    for over in ({}, {"mfw_select": "all"}, {"mfw_select": "power", "mfw_gamma": 2.0}, {"mfw_point": "random"}):
        mix = _plan("mfw", Y, **over)
        assert len(mix.targets) == 1 and torch.equal(mix.targets[0], Y)
        assert len(mix.coefs) == 1 and torch.equal(mix.coefs[0], torch.ones(200))
    mix = _plan("mfw", Y, mfw_point="random", seed=3)
    assert mix.point in ("stem", "stage1", "stage2")


def test_mfw_with_loss_keeps_labels():
    mix = _plan("mfw+ldam-drw", Y)
    assert mix.perm is not None and len(mix.targets) == 1


def test_mfw_until_drw():
    on = _plan("mfw", Y, epoch=4, drw_epoch=5, mfw_active="until-drw")
    off = _plan("mfw", Y, epoch=5, drw_epoch=5, mfw_active="until-drw")
    assert on.perm is not None and on.weakened.any()
    assert off.perm is None and off.point is None
    h = torch.randn(200, 3)
    assert _at(off, "stage1", h) is h
    assert _plan("mfw", Y, epoch=5, drw_epoch=5, mfw_active="always").perm is not None


def test_plain_training_has_no_mixing():
    mix = _plan("ldam-drw", Y)
    assert mix.perm is None and len(mix.targets) == 1 and torch.equal(mix.targets[0], Y)


def test_lam_one_is_identity():
    h = torch.randn(6, 4, 3, 3)
    out = mix_features(h, torch.tensor([5, 4, 3, 2, 1, 0]), torch.ones(6))
    assert torch.equal(out, h)


def test_mix_features_values():
    h = torch.randn(3, 5)
    perm = torch.tensor([2, 0, 1])
    lam = torch.tensor([0.25, 1.0, 0.5])
    out = mix_features(h, perm, lam)
    torch.testing.assert_close(out[0], 0.25 * h[0] + 0.75 * h[2])
    assert torch.equal(out[1], h[1])
    torch.testing.assert_close(out[2], 0.5 * h[2] + 0.5 * h[1])


def test_gradients_flow_to_both_partners():
    h = torch.randn(4, 3, requires_grad=True)
    perm = torch.tensor([2, 3, 0, 1])
    lam = torch.tensor([0.7, 1.0, 1.0, 1.0])
    out = mix_features(h, perm, lam)
    out[0].sum().backward()
    torch.testing.assert_close(h.grad[0], torch.full((3,), 0.7))
    torch.testing.assert_close(h.grad[2], torch.full((3,), 0.3))  # the partner
    assert torch.all(h.grad[[1, 3]] == 0)


def test_selection_probs_rules():
    n = [100, 55, 10]
    np.testing.assert_allclose(selection_probs(n, "median"), [1, 1, 0])
    np.testing.assert_allclose(selection_probs(n, "power", gamma=1.0), [1, 0.5, 0])
    np.testing.assert_allclose(selection_probs(n, "power", gamma=2.0), [1, 0.25, 0])
    np.testing.assert_allclose(selection_probs(n, "inverse"), [0.9, 1 - 10 / 55, 0])
    np.testing.assert_allclose(selection_probs(n, "all"), [1, 1, 1])
    np.testing.assert_allclose(selection_probs(n, "median", prob=0.4), [0.4, 0.4, 0])
    np.testing.assert_allclose(selection_probs([5, 5], "power"), [0, 0])  # balanced: nobody is major
    with pytest.raises(ValueError):
        selection_probs(n, "max")


def test_selection_prob_is_used():
    mix = _plan("mfw", Y, mfw_select="all", mfw_prob=0.5)
    share = mix.weakened.float().mean().item()
    assert 0.35 < share < 0.65  # 200 coin flips, sd 0.035
    assert not _plan("mfw", Y, mfw_prob=0.0).weakened.any()


@pytest.mark.parametrize("lam_min", [0.0, 0.5, 0.8])
def test_draw_lam_uniform(lam_min):
    lam = draw_lam("uniform", 5000, np.random.default_rng(0), lam_min=lam_min)
    assert lam.shape == (5000,)
    assert lam.min() >= lam_min and lam.max() <= 1
    assert lam.mean() == pytest.approx((1 + lam_min) / 2, abs=0.02)


def test_draw_lam_beta_laws():
    rng = np.random.default_rng(0)
    b = draw_lam("beta", 5000, rng, alpha=0.5)
    assert b.min() >= 0 and b.max() <= 1 and b.min() < 0.1 and b.max() > 0.9
    f = draw_lam("beta-folded", 5000, rng, alpha=1.0)
    assert f.min() >= 0.5 and f.max() <= 1
    assert f.mean() == pytest.approx(0.75, abs=0.02)  # max(U, 1 - U) for U ~ Beta(1, 1)
    with pytest.raises(ValueError):
        draw_lam("gauss", 3, rng)


class FixedBeta:
    """An rng whose beta draws are one fixed value (the batch lam of the label-mixing methods)."""

    def __init__(self, lam):
        self.lam = lam

    def beta(self, a, b):
        return self.lam

    def choice(self, a):
        return a[0]


@pytest.mark.parametrize("lam", [0.3, 0.7])
def test_remix_gives_the_label_to_the_minor_class(lam):
    counts = [1000, 10]  # ratio 100 >= kappa 3
    y = torch.tensor([0, 1] * 8)
    mix = _plan("remix", y, counts=counts, rng=FixedBeta(lam), seed=1)
    assert mix.point == "input"
    assert torch.allclose(mix.lam, torch.full((16,), lam))
    yi, yj = mix.targets
    assert torch.equal(yi, y) and torch.equal(yj, y[mix.perm])
    label_i = mix.coefs[0]  # share of the label that goes to y_i
    major_minor = (yi == 0) & (yj == 1)
    minor_major = (yi == 1) & (yj == 0)
    same = yi == yj
    assert major_minor.any() and minor_major.any() and same.any()
    if lam < 0.5:  # i (major) is the smaller part of the pixels: the label is all the minor partner's
        assert torch.all(label_i[major_minor] == 0)
        assert torch.allclose(label_i[minor_major], torch.tensor(lam))
    else:  # i (minor) dominates and its partner is major: the label is all i's
        assert torch.all(label_i[minor_major] == 1)
        assert torch.allclose(label_i[major_minor], torch.tensor(lam))
    assert torch.allclose(label_i[same], torch.tensor(lam))
    torch.testing.assert_close(mix.coefs[0] + mix.coefs[1], torch.ones(16))


def test_remix_needs_a_large_enough_ratio():
    y = torch.tensor([0, 1] * 8)
    mix = _plan("remix", y, counts=[20, 10], rng=FixedBeta(0.3), seed=1)  # ratio 2 < kappa 3: plain mixup
    assert torch.allclose(mix.coefs[0], torch.full((16,), 0.3))


@pytest.mark.parametrize("method", ["mixup", "manifold-mixup", "remix", "mixup+ldam"])
def test_mixup_family_targets_and_coefs(method):
    mix = _plan(method, Y, seed=2)
    assert len(mix.targets) == 2 and torch.equal(mix.targets[0], Y) and torch.equal(mix.targets[1], Y[mix.perm])
    torch.testing.assert_close(mix.coefs[0] + mix.coefs[1], torch.ones(200))
    assert torch.all((mix.coefs[0] >= 0) & (mix.coefs[0] <= 1))
    assert torch.equal(mix.perm.sort().values, torch.arange(200))
    if method.startswith("manifold"):
        assert mix.point in ("input", "stem", "stage1", "stage2")
    else:
        assert mix.point == "input"
    h = torch.randn(200, 3, 8, 8)
    lam = mix.lam[0].item()
    torch.testing.assert_close(_at(mix, mix.point, h), lam * h + (1 - lam) * h[mix.perm])


def test_plan_points_cover_every_point_plan_batch_draws():
    """The trainer attaches hooks at plan_points(cfg) only: every plan's point must be among them."""
    cases = [("erm", {}), ("mfw", {}), ("mfw", {"mfw_point": "feature"}), ("mfw", {"mfw_point": "random"}),
             ("mixup", {}), ("remix", {}), ("manifold-mixup", {})]
    for method, over in cases:
        cfg = make_config("smoke", method=method, **over)
        seen = {_plan(method, Y, seed=s, **over).point for s in range(30)} - {None}
        assert seen <= set(plan_points(cfg)), (method, over)
        assert len(seen) == len(plan_points(cfg)), (method, over)  # and each of them is drawn
    assert plan_points(make_config("smoke", method="erm")) == ()


def test_to_device_gives_the_values_of_a_plain_copy():
    from procrustes.method.transfer import constant, to_device

    a = np.random.default_rng(0).uniform(0.5, 1.0, 1000)
    assert torch.equal(to_device(a, "cpu"), torch.tensor(a, dtype=torch.float32))
    assert torch.equal(to_device([0.4914, 0.4822], torch.device("cpu")), torch.tensor([0.4914, 0.4822]))
    assert constant((0.1, 0.2), "cpu") is constant((0.1, 0.2), "cpu")  # copied once


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mfw_and_remix_steps_do_not_wait_for_the_device():
    """On CUDA the mixing plans and the normalisation reach the device without a host synchronisation
    (torch.cuda.set_sync_debug_mode('error') raises on any)."""
    from procrustes.method.augment import augment, normalise

    y = Y.cuda()
    x = torch.randint(0, 256, (200, 32, 32, 3), dtype=torch.uint8, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    rng = np.random.default_rng(0)
    normalise(x, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))  # the constants' one copy happens here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for method in ("mfw", "remix"):
            cfg = make_config("smoke", method=method)
            mix = plan_batch(cfg, y, STEP, 0, 100, gen, rng)
            xb, _, _ = augment(x, 4, gen)
            normalise(xb, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert mix.perm is not None
