"""models.py: ResNet-32 (size, shapes, option-A shortcuts), named mixing points and where forward hooks
reach them, the cosine classifier, ResNet-18 on 64x64 inputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from procrustes.method.models import NormedLinear, build_model, mixing_points, resnet18, resnet32

R32_SHAPES = {"input": (2, 3, 32, 32), "stem": (2, 16, 32, 32), "stage1": (2, 16, 32, 32),
              "stage2": (2, 32, 16, 16), "stage3": (2, 64, 8, 8), "feature": (2, 64)}


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet32_size():
    n = _params(resnet32(10))
    assert 450_000 <= n <= 480_000, n
    # option-A shortcuts are parameter-free: every convolution is a 3x3 one
    convs = [m for m in resnet32(10).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31 and all(c.kernel_size == (3, 3) for c in convs)


def test_resnet32_output_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    assert resnet32(10).eval()(x).shape == (2, 10)
    assert resnet32(100).eval()(x).shape == (2, 100)
    normed = resnet32(10, normed=True)
    assert isinstance(normed.fc, NormedLinear)
    assert normed.eval()(x).shape == (2, 10)


def test_points():
    assert mixing_points("resnet32") == ("input", "stem", "stage1", "stage2", "stage3", "feature")
    assert resnet32().points == mixing_points("resnet32")
    assert mixing_points("resnet18") == ("input", "stem", "stage1", "stage2", "stage3", "stage4", "feature")
    assert resnet18(10).points == mixing_points("resnet18")


def _seen_points(net: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple]]:
    """(point, shape) in the order a forward pass reaches them: the model's input, the output of each
    stages.<name>, the input of fc (where procrustes.method.weaken.staged_point_mixers mixes)."""
    seen = [("input", tuple(x.shape))]
    handles = [st.register_forward_hook(lambda m, a, out, n=n: seen.append((n, tuple(out.shape))))
               for n, st in net.stages.items()]
    handles.append(net.fc.register_forward_pre_hook(lambda m, a: seen.append(("feature", tuple(a[0].shape)))))
    with torch.no_grad():
        out = net(x)
    for h in handles:
        h.remove()
    return seen, out


def test_forward_hooks_reach_every_point_in_order_with_shapes():
    seen, _ = _seen_points(resnet32(10).eval(), torch.randn(2, 3, 32, 32))
    assert seen == list(R32_SHAPES.items())


def test_forward_is_stages_pool_fc():
    """The plain forward pass: what a hook at a point returns is what the rest of the network receives."""
    torch.manual_seed(0)
    net = resnet32(10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        h = x
        for st in net.stages.values():
            h = st(h)
        assert torch.equal(net(x), net.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)))
        handle = net.fc.register_forward_pre_hook(lambda m, a: (torch.zeros_like(a[0]),))
        torch.testing.assert_close(net(x), net.fc.bias.expand(3, -1))  # a zero feature leaves the bias
        handle.remove()


def test_normed_linear_is_a_cosine():
    torch.manual_seed(0)
    lin = NormedLinear(16, 5)
    assert not any(n == "bias" for n, _ in lin.named_parameters())
    x = 100 * torch.randn(50, 16)
    y = lin(x)
    assert y.shape == (50, 5)
    assert y.min() >= -1 - 1e-6 and y.max() <= 1 + 1e-6
    expected = torch.nn.functional.cosine_similarity(x[:, :, None], lin.weight[None], dim=1)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    # scaling the input does not move a cosine
    torch.testing.assert_close(lin(3 * x), y, atol=1e-6, rtol=1e-5)


def test_resnet18_on_64x64():
    torch.manual_seed(0)
    net = resnet18(200).eval()
    seen, out = _seen_points(net, torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 200)
    assert seen == [("input", (2, 3, 64, 64)), ("stem", (2, 64, 16, 16)), ("stage1", (2, 64, 16, 16)),
                    ("stage2", (2, 128, 8, 8)), ("stage3", (2, 256, 4, 4)), ("stage4", (2, 512, 2, 2)),
                    ("feature", (2, 512))]
    assert 11_000_000 < _params(net) < 11_400_000  # torchvision's resnet18 with a 200-way head: 11.28M


def test_build_model():
    assert isinstance(build_model("resnet32", 7).fc, nn.Linear)
    assert build_model("resnet32", 7).fc.out_features == 7
    assert isinstance(build_model("resnet18", 7, normed=True).fc, NormedLinear)
    with pytest.raises(ValueError):
        build_model("vgg16", 10)
