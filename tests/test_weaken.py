"""weaken.py: MFW (and manifold mixup) at a named layer of any torch model, through forward hooks.

Real torchvision models built without weights, small inputs; the weakened feature is checked against
lam * h_i + (1 - lam) * h_perm(i) computed by hand from the clean feature (captured by a second hook), and the
forward-hook path (which the trainer uses) against the same mixing written in line on this package's ResNet-32."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from procrustes.method import mixing
from procrustes.training.config import make_config
from procrustes.method.mixing import BatchMix, plan_batch
from procrustes.method.models import resnet32
from procrustes.tooling.bench_hooks import bench_hook_overhead, inline_mixed_forward
from procrustes.method.weaken import MajorFeatureWeakening, ManifoldMixup, WeakeningError, find_layer, staged_point_mixers
from procrustes.examples.your_model import demo_sizes, fit, per_class_accuracy

COUNTS = [100] * 5 + [10] * 5  # step: classes 0-4 major (weakened by the median rule), 5-9 minor
Y = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])  # batch 8: examples 0-3 major, 4-7 minor


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10)


def mobilenet():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)


def vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                                mlp_dim=64, num_classes=10)


def images(size=32, b=8, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def first(out):
    return out[0] if isinstance(out, tuple) else out


class Capture:
    """A forward hook that keeps (a clone of) the output's first tensor: registered before the weakening hook it
    sees the clean feature, after it the mixed one (forward hooks run in registration order, each on what
    the previous returned)."""

    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.value = first(out).detach().clone()

    def remove(self):
        self.handle.remove()


def weaken_and_capture(model, layer, x, y=Y, **kw):
    """(clean feature, mixed feature, plan, logits) of one training forward pass with MFW at `layer`."""
    module = find_layer(model, layer)
    clean = Capture(module)
    w = MajorFeatureWeakening(model, layer, COUNTS, **kw)
    with w:
        mixed = Capture(module)
        plan = w.set_labels(y)
        logits = model(x)
        mixed.remove()
    clean.remove()
    return clean.value, mixed.value, plan, logits


def by_hand(h, plan):
    """lam_i * h_i + (1 - lam_i) * h_perm(i) for the selected examples, h_i for the rest, one example at a time."""
    out = h.clone()
    for i in range(h.shape[0]):
        if plan.weakened[i]:
            lam = plan.lam[i].to(h.dtype)
            out[i] = lam * h[i] + (1 - lam) * h[plan.perm[i]]
    return out


def check_weakened(clean, mixed, plan):
    chosen = plan.weakened
    assert chosen[:4].all() and not chosen[4:].any()  # median rule, prob 1: exactly the major classes
    assert torch.all((plan.lam[:4] >= 0.5) & (plan.lam[:4] < 1)) and torch.all(plan.lam[4:] == 1)
    assert mixed.shape == clean.shape and mixed.dtype == clean.dtype
    torch.testing.assert_close(mixed, by_hand(clean, plan), rtol=1e-6, atol=1e-6)
    assert torch.equal(mixed[~chosen], clean[~chosen])  # the others are untouched, bit for bit
    moved = plan.perm[chosen] != torch.nonzero(chosen).flatten()
    assert not torch.allclose(mixed[chosen][moved], clean[chosen][moved])


# ---------------------------------------------------------------------------- the mixed feature, by hand


@pytest.mark.parametrize("name, build, layer, size", [
    ("resnet18 NCHW", resnet18, "layer2", 32),
    ("resnet18 block", resnet18, "layer1.1", 32),
    ("mobilenet_v3_small", mobilenet, "features.6", 64),
    ("vit tokens (B, N, D)", vit, "encoder.layers.encoder_layer_0", 32),
])
def test_weakened_feature_equals_hand_mix(name, build, layer, size):
    model = build().train()
    clean, mixed, plan, logits = weaken_and_capture(model, layer, images(size))
    check_weakened(clean, mixed, plan)
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    if name.startswith("vit"):
        assert clean.shape == (8, 17, 32)


def test_channels_last_feature_maps():
    model = resnet18().to(memory_format=torch.channels_last).train()
    x = images().contiguous(memory_format=torch.channels_last)
    clean, mixed, plan, _ = weaken_and_capture(model, "layer2", x)
    assert clean.is_contiguous(memory_format=torch.channels_last)
    check_weakened(clean, mixed, plan)


def test_tuple_output_mixes_its_first_element():
    model = vit().train()
    layer = "encoder.layers.encoder_layer_0.self_attention"  # nn.MultiheadAttention: (out, weights=None)
    seen = []
    h = find_layer(model, layer).register_forward_hook(lambda m, a, out: seen.append(out))
    clean, mixed, plan, _ = weaken_and_capture(model, layer, images())
    h.remove()
    check_weakened(clean, mixed, plan)
    assert isinstance(seen[0], tuple) and len(seen[0]) == 2 and seen[0][1] is None


def test_bf16_autocast_mixes_in_the_feature_dtype():
    model = resnet18().train()
    module = model.layer2
    clean = Capture(module)
    w = MajorFeatureWeakening(model, "layer2", COUNTS)
    with w, torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = Capture(module)
        plan = w.set_labels(Y)
        model(images())
    assert clean.value.dtype == torch.bfloat16 and mixed.value.dtype == torch.bfloat16
    lam = plan.lam.to(torch.bfloat16).view(-1, 1, 1, 1)
    assert torch.equal(mixed.value, lam * clean.value + (1 - lam) * clean.value[plan.perm])
    assert torch.equal(mixed.value[4:], clean.value[4:])


def test_eval_mode_is_untouched_and_needs_no_labels():
    model = resnet18().eval()
    ref = copy.deepcopy(model)
    x = images()
    with MajorFeatureWeakening(model, "layer2", COUNTS) as w, torch.no_grad():
        assert torch.equal(model(x), ref(x))  # no labels set: fine in eval mode
        w.set_labels(Y)
        assert torch.equal(model(x), ref(x))  # labels set: still untouched in eval mode
        model.train()
        ref.train()
        assert not torch.equal(model(x), ref(x))  # the labels were kept for this training pass


def test_paused_leaves_training_passes_alone():
    model = resnet18().train()
    ref = copy.deepcopy(model)
    x = images()
    with MajorFeatureWeakening(model, "layer2", COUNTS) as w:
        with w.paused():
            assert torch.equal(model(x), ref(x))
        w.set_labels(Y)
        model(x)


def test_select_all_and_prob_zero():
    model = resnet18().train()
    clean, mixed, plan, _ = weaken_and_capture(model, "layer2", images(), select="all", lam="beta-folded")
    assert plan.weakened.all() and torch.all(plan.lam >= 0.5)
    torch.testing.assert_close(mixed, by_hand(clean, plan), rtol=1e-6, atol=1e-6)
    clean, mixed, plan, _ = weaken_and_capture(model, "layer2", images(), prob=0.0)
    assert not plan.weakened.any() and torch.equal(mixed, clean)


# ---------------------------------------------------------------------------- gradients


def test_gradients_flow_to_parameters_before_the_layer():
    x = images()
    grads = {}
    for weaken in (False, True):
        model = resnet18().train()
        if weaken:
            with MajorFeatureWeakening(model, "layer2", COUNTS, select="all") as w:
                w.set_labels(Y)
                loss = F.cross_entropy(model(x), Y)
        else:
            loss = F.cross_entropy(model(x), Y)
        loss.backward()
        grads[weaken] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for n in ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight"):  # before / inside the layer
        g = grads[True][n]
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        assert not torch.allclose(g, grads[False][n])  # the backward pass goes through the mixing


def test_gradient_reaches_the_partner():
    """ViT has no batch coupling (LayerNorm): the logits of a weakened example depend on its own image and on
    its partner's, and on no other."""
    model = vit().train()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the ViT head at zero: no gradient at all
    x = images().requires_grad_()
    with MajorFeatureWeakening(model, "encoder.layers.encoder_layer_0", COUNTS) as w:
        plan = w.set_labels(Y)
        logits = model(x)
    i = next(k for k in range(4) if plan.perm[k] != k)
    logits[i].sum().backward()
    touched = {k for k in range(8) if x.grad[k].abs().sum() > 0}
    assert touched == {i, int(plan.perm[i])}


# ---------------------------------------------------------------------------- attach / detach


def test_detach_restores_the_model():
    model = resnet18().train()
    ref = copy.deepcopy(model)
    x, x2 = images(seed=1), images(seed=2)
    hooks = lambda m: sum(len(s._forward_hooks) + len(s._forward_pre_hooks) for s in m.modules())  # noqa: E731
    w = MajorFeatureWeakening(model, "layer2", COUNTS)
    w.attach()
    assert len(model.layer2._forward_hooks) == 1 and w.attached
    w.detach()
    assert hooks(model) == 0 and not w.attached
    assert model.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    with w:
        w.set_labels(Y)
        assert not torch.equal(model(x), ref(x))
    assert hooks(model) == 0 and len(model.layer2._forward_hooks) == 0
    assert torch.equal(model(x2), ref(x2))  # training mode, batch statistics: the very same computation
    model.eval(), ref.eval()
    w.detach()  # a second detach is harmless
    assert hooks(model) == 0


def test_detach_after_an_exception():
    model = resnet18().train()
    with pytest.raises(RuntimeError):
        with MajorFeatureWeakening(model, "layer2", COUNTS):
            raise RuntimeError("boom")
    assert len(model.layer2._forward_hooks) == 0


def test_attach_twice_is_an_error():
    w = MajorFeatureWeakening(resnet18(), "layer2", COUNTS).attach()
    with pytest.raises(WeakeningError, match="already attached"):
        w.attach()
    w.detach()


# ---------------------------------------------------------------------------- errors


def test_unknown_layer_lists_close_matches():
    with pytest.raises(WeakeningError, match=r"no submodule 'layer22' in ResNet; close matches: layer2"):
        MajorFeatureWeakening(resnet18(), "layer22", COUNTS)
    with pytest.raises(WeakeningError, match="close matches: features.6"):
        MajorFeatureWeakening(mobilenet(), "feature.6", COUNTS)
    with pytest.raises(WeakeningError, match="top-level submodules: conv1"):
        MajorFeatureWeakening(resnet18(), "zzz", COUNTS)
    assert issubclass(WeakeningError, ValueError)


class ScalarOut(nn.Module):
    def forward(self, h):
        return h.pow(2).mean()


class TinyNet(nn.Module):
    """Linear -> a module with a 0-d output; and a sequence-first attention (batch in dimension 1)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.energy = ScalarOut()
        self.attn = nn.MultiheadAttention(4, 1)  # batch_first=False: (N, B, D)

    def forward(self, x):  # x: (B, 4)
        h = self.body(x)
        seq = h.unsqueeze(0).expand(3, -1, -1)  # (N=3, B, D)
        a, _ = self.attn(seq, seq, seq)
        return h * self.energy(h) + a.mean(0)


def test_output_without_batch_dimension():
    model = TinyNet().train()
    with MajorFeatureWeakening(model, "energy", COUNTS) as w:
        w.set_labels(Y)
        with pytest.raises(WeakeningError, match="has no batch dimension"):
            model(torch.randn(8, 4))


def test_batch_size_differs():
    model = TinyNet().train()
    with MajorFeatureWeakening(model, "attn", COUNTS, batch_dim=0) as w:  # its output is (3, 8, 4): batch second
        w.set_labels(Y)
        with pytest.raises(WeakeningError, match=r"batch size differs: labels for 8 examples.*\(3, 8, 4\)"):
            model(torch.randn(8, 4))
    model = resnet18().train()
    with MajorFeatureWeakening(model, "layer2", COUNTS) as w:
        w.set_labels(Y[:6])
        with pytest.raises(WeakeningError, match="batch size differs: labels for 6 examples"):
            model(images())


def test_labels_not_set_for_a_training_pass():
    model = resnet18().train()
    with MajorFeatureWeakening(model, "layer2", COUNTS):
        with pytest.raises(WeakeningError, match=r"no labels for this training forward pass: call set_labels\(y\)"):
            model(images())


def test_stale_labels_are_an_error():
    model = resnet18().train()
    with MajorFeatureWeakening(model, "layer2", COUNTS) as w:
        w.set_labels(Y)
        model(images())
        with pytest.raises(WeakeningError, match="stale labels"):
            model(images())
        w.set_labels(Y)  # fresh labels: fine again
        model(images())


@pytest.mark.parametrize("kwargs, match", [
    ({"select": "max"}, "unknown select 'max'"),
    ({"lam": "gauss"}, "unknown law of lam 'gauss'"),
    ({"prob": 1.5}, "impossible prob 1.5"),
    ({"lam_min": -0.1}, "impossible lam_min"),
    ({"alpha": 0}, "impossible alpha 0"),
    ({"gamma": float("nan")}, "impossible gamma"),
    ({"until_epoch": -1}, "impossible until_epoch"),
    ({"where": "middle"}, "unknown where 'middle'"),
    ({"seed": -1}, "impossible seed"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(WeakeningError, match=match):
        MajorFeatureWeakening(resnet18(), "layer2", COUNTS, **kwargs)


def test_bad_labels_layers_and_counts():
    model = resnet18()
    with pytest.raises(WeakeningError, match="class_counts"):
        MajorFeatureWeakening(model, "layer2", [])
    with pytest.raises(WeakeningError, match="dotted submodule name"):
        MajorFeatureWeakening(model, 2, COUNTS)
    with pytest.raises(WeakeningError, match="whole model"):
        MajorFeatureWeakening(model, "", COUNTS)
    w = MajorFeatureWeakening(model, "layer2", COUNTS)
    with pytest.raises(WeakeningError, match="1-D tensor of class indices"):
        w.set_labels(torch.zeros(8, 2, dtype=torch.long))
    with pytest.raises(WeakeningError, match="1-D tensor of class indices"):
        w.set_labels(torch.rand(8))
    with pytest.raises(WeakeningError, match=r"labels must lie in 0..9"):
        w.set_labels(torch.tensor([0, 10]))
    with pytest.raises(WeakeningError, match="use ManifoldMixup.from_config"):
        MajorFeatureWeakening.from_config(model, "layer2", make_config("smoke", method="remix"), COUNTS)


def test_output_that_is_not_a_tensor():
    class Dict(nn.Module):
        def forward(self, x):
            return {"h": x}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.d = Dict()

        def forward(self, x):
            return self.d(x)["h"]

    model = Net().train()
    with MajorFeatureWeakening(model, "d", COUNTS) as w:
        w.set_labels(Y)
        with pytest.raises(WeakeningError, match="is a dict: expected a tensor"):
            model(torch.randn(8, 3))


# ---------------------------------------------------------------------------- schedule and config


def test_until_epoch_stops_weakening_without_drawing():
    model = resnet18().train()
    ref = copy.deepcopy(model)  # training mode: outputs from batch statistics, comparable after other passes
    x = images(seed=3)
    w = MajorFeatureWeakening(model, "layer2", COUNTS, until_epoch=1)
    with w:
        assert w.set_labels(Y).perm is not None
        assert not torch.equal(model(x), ref(x))
        w.set_epoch(1)
        state = w._gen.get_state().clone(), copy.deepcopy(w.rng.bit_generator.state)
        plan = w.set_labels(Y)
        assert plan.perm is None and torch.equal(plan.targets[0], Y)
        assert torch.equal(model(x), ref(x))
        assert torch.equal(w._gen.get_state(), state[0]) and w.rng.bit_generator.state == state[1]


def test_from_config_takes_the_reconstructed_choices():
    cfg = make_config("smoke", method="mfw+drw", mfw_select="power", mfw_gamma=2.0, mfw_prob=0.7, mfw_lam="beta",
                      mfw_alpha=0.4, mfw_lam_min=0.2, mfw_active="until-drw", seed=5)
    w = MajorFeatureWeakening.from_config(resnet18(), "layer2", cfg, COUNTS)
    # lam_min bounds only the uniform law: a beta config keeps the default (one training, one key)
    assert (w.select, w.prob, w.gamma, w.lam_law, w.alpha, w.lam_min, w.seed) == ("power", 0.7, 2.0, "beta", 0.4, 0.5, 5)
    uniform = MajorFeatureWeakening.from_config(resnet18(), "layer2", cfg.replace(mfw_lam="uniform", mfw_lam_min=0.2), COUNTS)
    assert (uniform.lam_law, uniform.lam_min) == ("uniform", 0.2)
    assert w.until_epoch == cfg.schedule()[3]
    np.testing.assert_allclose(w.probs, mixing.selection_probs(COUNTS, "power", 0.7, 2.0))
    assert MajorFeatureWeakening.from_config(resnet18(), "layer2", make_config("smoke"), COUNTS).until_epoch is None


# ---------------------------------------------------------------------------- same as the trainer


@pytest.mark.parametrize("bf16", [False, True])
def test_resnet32_stage1_same_as_the_trainer(bf16):
    """MajorFeatureWeakening at "stages.stage1" of procrustes' ResNet-32 against the mixing written in line
    (inline_mixed_forward with plan_batch's plan, the trainer's path before it moved onto hooks): same seeds -> same plans,
    outputs and gradients, bit for bit,
    over several steps."""
    cfg = make_config("smoke", method="mfw", mfw_point="stage1", seed=3)
    torch.manual_seed(0)
    a = resnet32(10).to(memory_format=torch.channels_last).train()
    b = copy.deepcopy(a)
    gen, rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
    w = MajorFeatureWeakening.from_config(b, "stages.stage1", cfg, COUNTS)  # its own generators from cfg.seed
    y = torch.arange(16) % 10
    with w:
        for step in range(2 if bf16 else 3):  # bf16 on a CPU without native bf16 is slow
            x = images(b=16, seed=10 + step).contiguous(memory_format=torch.channels_last)
            mix = plan_batch(cfg, y, COUNTS, step, 100, gen, rng)
            plan = w.set_labels(y)
            assert torch.equal(mix.perm, plan.perm) and torch.equal(mix.lam, plan.lam)
            assert torch.equal(mix.weakened, plan.weakened) and mix.weakened.any()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out_a, out_b = inline_mixed_forward(a, x, mix), b(x)
            assert torch.equal(out_a, out_b)
            F.cross_entropy(out_a.float(), y).backward()
            F.cross_entropy(out_b.float(), y).backward()
            for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
                assert torch.equal(pa.grad, pb.grad), n
                pa.grad, pb.grad = None, None
    clean = resnet32(10)
    assert not torch.equal(inline_mixed_forward(a, x, mix), clean(x))  # the weakening did something


@pytest.mark.parametrize("method", ["mfw", "manifold-mixup", "remix"])
def test_every_trainer_point_through_forward_hooks(method):
    """A BatchMix applied by LayerMixing (forward hook on stages.<p>, pre-hook on the model for input and on fc
    for feature) gives the trainer's output at every point: the mapping a TrainStep on forward hooks uses."""
    cfg = make_config("smoke", method=method)
    torch.manual_seed(0)
    model = resnet32(10).train()
    x, y = images(b=16), torch.arange(16) % 10
    plain = model(x)
    mixers = staged_point_mixers(model)
    assert {p: (m.layer, m.where) for p, m in mixers.items()} == {
        "input": ("", "input"), "stem": ("stages.stem", "output"), "stage1": ("stages.stage1", "output"),
        "stage2": ("stages.stage2", "output"), "stage3": ("stages.stage3", "output"), "feature": ("fc", "input")}
    for m in mixers.values():
        m.attach()
    for point in model.points:
        mix = plan_batch(cfg, y, COUNTS, 0, 100, torch.Generator().manual_seed(1), np.random.default_rng(1))
        mix.point = point
        for p, m in mixers.items():
            m.set_plan(mix if p == point else None)
        out = model(x)  # through the forward hooks
        for m in mixers.values():
            m.set_plan(None)  # the hooks mix nothing in the next pass
        assert torch.equal(out, inline_mixed_forward(model, x, mix)), point  # mixed in line
        for m in mixers.values():
            m.set_plan(None)
        assert torch.equal(model(x), plain)
    for m in mixers.values():
        m.detach()
    assert sum(len(s._forward_hooks) + len(s._forward_pre_hooks) for s in model.modules()) == 0


def test_plan_batch_draws_unchanged():
    """plan_batch after the refactor into draw_mfw / mixup_targets: a literal copy of the former code gives the
    same plans and leaves the generators in the same state (committed results stay reproducible)."""

    def former(cfg, y, counts, gen, rng):
        b, dev = y.numel(), y.device
        ones = torch.ones(b, device=dev)
        perm = torch.randperm(b, generator=gen, device=dev)
        if cfg.mixer == "mfw":
            p = torch.tensor(mixing.selection_probs(counts, cfg.mfw_select, cfg.mfw_prob, cfg.mfw_gamma), dtype=torch.float32)
            chosen = torch.rand(b, generator=gen, device=dev) < p[y]
            lam = torch.tensor(mixing.draw_lam(cfg.mfw_lam, b, rng, cfg.mfw_lam_min, cfg.mfw_alpha), dtype=torch.float32)
            lam = torch.where(chosen, lam, ones)
            point = cfg.mfw_point if cfg.mfw_point != "random" else str(rng.choice(list(cfg.mfw_random_points)))
            return BatchMix([y], [ones], point, perm, lam, chosen)
        lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
        point = "input" if cfg.mixer in ("mixup", "remix") else str(rng.choice(list(cfg.manifold_points)))
        lam_x = torch.full((b,), lam, device=dev)
        lam_y = lam_x.clone()
        if cfg.mixer == "remix":
            n = torch.tensor(np.asarray(counts, np.float64), dtype=torch.float32, device=dev)
            r = n[y] / n[y[perm]]
            lam_y = torch.where((r >= cfg.remix_kappa) & (lam_x < cfg.remix_tau), torch.zeros_like(lam_y), lam_y)
            lam_y = torch.where((r <= 1 / cfg.remix_kappa) & (1 - lam_x < cfg.remix_tau), torch.ones_like(lam_y), lam_y)
        return BatchMix([y, y[perm]], [lam_y, 1 - lam_y], point, perm, lam_x)

    for method, over in [("mfw", {}), ("mfw", {"mfw_point": "random"}),
                         ("mfw", {"mfw_select": "power", "mfw_lam": "beta", "mfw_alpha": 0.4}),
                         ("mfw", {"mfw_select": "inverse", "mfw_lam": "beta-folded", "mfw_prob": 0.5}),
                         ("mixup", {}), ("manifold-mixup", {}), ("remix", {})]:
        cfg = make_config("smoke", method=method, **over)
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
        for step in range(3):
            y = torch.randint(0, 10, (33,), generator=torch.Generator().manual_seed(step))
            old, new = former(cfg, y, COUNTS, g1, r1), plan_batch(cfg, y, COUNTS, step, 100, g2, r2)
            assert old.point == new.point
            for f in ("perm", "lam", "weakened"):
                u, v = getattr(old, f), getattr(new, f)
                assert (u is None and v is None) or (torch.equal(u, v) and u.dtype == v.dtype), (method, f)
            for u, v in zip(old.targets + old.coefs, new.targets + new.coefs, strict=True):
                assert torch.equal(u, v) and u.dtype == v.dtype
        assert torch.equal(g1.get_state(), g2.get_state()) and r1.bit_generator.state == r2.bit_generator.state


# ---------------------------------------------------------------------------- manifold mixup


def test_manifold_mixup_mixes_features_and_labels():
    model = resnet18().train()
    module = model.layer1
    clean = Capture(module)
    w = ManifoldMixup(model, "layer1", alpha=0.4, seed=2)
    with w:
        mixed = Capture(module)
        plan = w.set_labels(Y)
        logits = model(images())
        loss = w.loss(logits)
    lam = plan.lam[0].item()
    assert torch.all(plan.lam == lam)
    torch.testing.assert_close(mixed.value, lam * clean.value + (1 - lam) * clean.value[plan.perm])
    assert torch.equal(plan.targets[1], Y[plan.perm])
    expect = lam * F.cross_entropy(logits, Y) + (1 - lam) * F.cross_entropy(logits, Y[plan.perm])
    torch.testing.assert_close(loss, expect)
    loss.backward()
    assert model.conv1.weight.grad.abs().sum() > 0


def test_manifold_mixup_same_draws_as_the_trainer():
    cfg = make_config("smoke", method="remix", seed=7)
    w = ManifoldMixup.from_config(resnet18(), "layer1", cfg, COUNTS)
    assert w.remix and w.alpha == cfg.mixup_alpha
    y = torch.arange(16) % 10
    mix = plan_batch(cfg, y, COUNTS, 0, 100, torch.Generator().manual_seed(7), np.random.default_rng(7))
    plan = w.set_labels(y)
    assert torch.equal(plan.perm, mix.perm) and torch.equal(plan.lam, mix.lam)
    for u, v in zip(plan.targets + plan.coefs, mix.targets + mix.coefs, strict=True):
        assert torch.equal(u, v)
    with pytest.raises(WeakeningError, match="does not mix labels"):
        ManifoldMixup.from_config(resnet18(), "layer1", make_config("smoke", method="mfw"))


def test_mfw_loss_is_the_plain_loss():
    model = resnet18().train()
    with MajorFeatureWeakening(model, "layer2", COUNTS) as w:
        w.set_labels(Y)
        logits = model(images())
        torch.testing.assert_close(w.loss(logits), F.cross_entropy(logits, Y))


# ---------------------------------------------------------------------------- helpers of the notebook


class _Spec:
    pad, mean, std = 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class _Data:
    """A Benchmark-like set: 3 classes of flat-colour 16x16 images."""

    def __init__(self):
        g = np.random.default_rng(0)
        self.counts = [24, 24, 8]
        self.train_y = np.repeat(np.arange(3), self.counts)
        self.train_x = (self.train_y[:, None, None, None] * 90 + g.integers(0, 20, (56, 16, 16, 3))).astype(np.uint8)
        self.test_y = np.repeat(np.arange(3), 5)
        self.test_x = (self.test_y[:, None, None, None] * 90 + g.integers(0, 20, (15, 16, 16, 3))).astype(np.uint8)
        self.spec = _Spec()


def test_fit_and_per_class_accuracy():
    data = _Data()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    w = MajorFeatureWeakening(model, "layer1", data.counts)
    losses = fit(model, data, epochs=2, batch_size=8, lr=0.01, weakening=w)
    assert len(losses) == 2 and all(np.isfinite(losses)) and not w.attached
    assert len(model.layer1._forward_hooks) == 0
    acc = per_class_accuracy(model, data)
    assert acc.shape == (3,) and np.all((acc >= 0) & (acc <= 1))


def test_bench_hook_overhead_runs():
    r = bench_hook_overhead(steps=1, rounds=1, batch_size=8, out=None)
    assert set(r["median"]) == {"in line", "forward hook"} and r["ratio"] > 0


def test_bench_cli_hooks_prints_the_ratio_last(capsys):
    from procrustes.__main__ import main

    assert main(["bench", "--hooks", "--steps", "1", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio forward hook/in line: ") and "round 1/1: in line" in "\n".join(lines)


def test_demo_sizes(monkeypatch):
    monkeypatch.setenv("PROCRUSTES_PROFILE", "smoke")
    profile, sizes = demo_sizes(None, epochs=None, batch_size=16)
    assert profile == "smoke" and sizes["epochs"] == 2 and sizes["batch_size"] == 16
    monkeypatch.delenv("PROCRUSTES_PROFILE")
    assert demo_sizes()[0] == "cpu"
    with pytest.raises(WeakeningError, match="unknown profile"):
        demo_sizes("quick")
    with pytest.raises(WeakeningError, match="unknown size"):
        demo_sizes("smoke", epoch=3)


def test_staged_point_mixers_needs_a_staged_net():
    with pytest.raises(WeakeningError, match="not a procrustes StagedNet"):
        staged_point_mixers(resnet18())


@pytest.mark.parametrize("method,point", [("mfw", "input"), ("mfw", "stage2"), ("mfw", "feature"), ("mfw", "random"),
                                          ("manifold-mixup", None), ("erm", None)])
def test_the_trainer_step_mixes_through_these_hooks(method, point):
    """procrustes.training.train.TrainStep (hooks at plan_points(cfg), feature gradients from a pre-hook on fc) against
    one step written by hand with the mixing in line: same plan, same logits, same weights after the step and
    the same feature gradients, bit for bit; close() leaves no hook behind."""
    from procrustes.training.data import spec
    from procrustes.method.losses import Criterion, reduce
    from procrustes.method.mixing import plan_points
    from procrustes.training.train import TrainStep

    cfg = make_config("smoke", method=method, **({"mfw_point": point} if point else {}), seed=4)
    s = spec("cifar10")
    torch.manual_seed(0)
    a = resnet32(10).to(memory_format=torch.channels_last)
    b = copy.deepcopy(a)
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (a, b))
    crit = Criterion("ce", COUNTS)
    is_major = torch.tensor([True] * 5 + [False] * 5)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    step = TrainStep(cfg, a, opt_a, crit, COUNTS, s, False, gen_a, rng_a, is_major)
    hooked = {n for n, m in a.named_modules() if m._forward_hooks or m._forward_pre_hooks}
    assert len(step.mixers) == len(plan_points(cfg)) and "fc" in hooked
    g = torch.Generator().manual_seed(7)
    from procrustes.method.augment import augment, normalise
    for k in range(3):
        x_u8 = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=g)
        y = torch.arange(16) % 10
        a.train(), b.train()
        step(x_u8, y, 0.1)
        # by hand: the same draws in the same order, the mixing in line
        xb, _, _ = augment(x_u8, s.pad, gen_b)
        mix = plan_batch(cfg, y, COUNTS, 0, cfg.schedule()[3], gen_b, rng_b)
        feats = []
        hnd = b.fc.register_forward_pre_hook(lambda m, args: feats.append(args[0]))
        out = inline_mixed_forward(b, normalise(xb, s.mean, s.std), mix)
        hnd.remove()
        feats[0].retain_grad()
        loss = reduce([crit.per_example(out, t) for t in mix.targets], mix.targets, mix.coefs, torch.ones(10))
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        opt_b.step()
        assert torch.equal(step.grads[0], feats[0].grad), k
        for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), (k, n)
    step.close()
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in a.modules()) == 0


# ---------------------------------------------------------------------------- issue 25.17-18: edge cases, honest docs


class SeqFirst(nn.Module):
    """A sequence-first model: tokens (L, B, D) through nn.MultiheadAttention (batch_first=False), then a
    plain (L, B, D) module of our own, mean over the sequence, a linear head."""

    def __init__(self, d=4):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 1)
        self.mine = nn.Linear(d, d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):  # x: (L, B, D)
        a, _ = self.attn(x, x, x)
        return self.head(self.mine(a).mean(0))


@pytest.mark.parametrize("layer, kw", [("attn", {}), ("mine", {"batch_dim": 1})])
def test_sequence_first_output_with_length_equal_to_batch_mixes_the_batch_axis(layer, kw):
    """L == B == 8: the batch axis of (L, B, D) is 1 (from batch_first=False, or batch_dim=1), never 0."""
    torch.manual_seed(0)
    model = SeqFirst().train()
    x = torch.randn(8, 8, 4)
    clean, mixed, plan, _ = weaken_and_capture(model, layer, x, **kw)
    check_weakened(clean.movedim(1, 0), mixed.movedim(1, 0), plan)


def test_batch_dim_is_checked():
    with pytest.raises(WeakeningError, match="impossible batch_dim"):
        MajorFeatureWeakening(SeqFirst(), "mine", COUNTS, batch_dim=-1)
    model = SeqFirst().train()
    with MajorFeatureWeakening(model, "mine", COUNTS, batch_dim=2) as w:
        w.set_labels(Y)
        with pytest.raises(WeakeningError, match="batch size differs.*batch_dim 2"):
            model(torch.randn(8, 8, 4))


class LastState(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        return self.head(h_n[-1])


def test_an_rnn_whose_state_is_not_mixed_warns():
    from procrustes.method.weaken import WeakeningWarning

    with pytest.warns(WeakeningWarning, match="h_n and c_n"):
        MajorFeatureWeakening(LastState(), "lstm", COUNTS)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MajorFeatureWeakening(LastState(), "head", COUNTS, where="input")  # the advice: no warning


def test_labels_outside_the_class_counts_are_an_error():
    model = TinyNet().train()
    for bad in (torch.tensor([0, 1, 2, 10]), torch.tensor([-1, 1, 2, 3])):
        with pytest.raises(WeakeningError, match=r"labels must lie in 0..9"):
            MajorFeatureWeakening(model, "energy", COUNTS).set_labels(bad)
        with pytest.raises(WeakeningError, match=r"labels must lie in 0..9"):
            ManifoldMixup(model, "energy", class_counts=COUNTS, remix=True).set_labels(bad)


def test_a_deep_copy_of_an_attached_model_is_a_plain_model():
    model = resnet18().train()
    ref = copy.deepcopy(model)
    w = MajorFeatureWeakening(model, "layer2", COUNTS).attach()
    twin = copy.deepcopy(model)  # e.g. an EMA copy taken while the hook is attached
    w.detach()
    x = images(seed=3)
    assert torch.equal(twin(x), ref(x))  # training mode, no labels: nothing mixed, no error
    with w:
        w.set_labels(Y)
        twin(x)  # the copy consumes no labels ...
        assert not torch.equal(model(x), ref(x))  # ... the attached model still mixes with them


def test_convnext_block_output_is_mixed_in_fp32_under_bf16_autocast():
    """The docs said bf16: a ConvNeXt block ends with an fp32 layer scale, so its output (and mixing) is fp32."""
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(num_classes=10).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        clean, mixed, plan, _ = weaken_and_capture(model, "features.1", images())
    assert mixed.dtype == torch.float32
    check_weakened(clean, mixed, plan)


def test_a_train_mode_batchnorm_after_the_layer_moves_minor_logits():
    """'The others stay exactly as they were' holds at the hooked layer only."""
    torch.manual_seed(0)
    model = resnet18().train()
    ref = copy.deepcopy(model)
    x = images()
    clean, mixed, plan, logits = weaken_and_capture(model, "layer2", x)
    minor = ~plan.weakened
    assert torch.equal(mixed[minor], clean[minor])  # at the layer: bit for bit
    assert not torch.allclose(logits[minor], ref(x)[minor])  # after layer3's BatchNorm: moved


def test_docs_state_the_dtype_and_batchnorm_caveats():
    from procrustes.method import weaken

    doc = " ".join(weaken.__doc__.split())
    assert "(bf16 under autocast), as in the trainer" not in doc
    assert "ConvNeXt" in doc and "BatchNorm" in doc and "batch_dim" in doc
    assert "exactly as they were at this layer" in " ".join(MajorFeatureWeakening.__doc__.split())
