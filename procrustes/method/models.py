"""ResNet-32 (the LDAM-DRW CIFAR model), ResNet-18 (Tiny-ImageNet) and LDAM's cosine classifier.

Every model runs as a list of named stages; its mixing points (input, stem, stage1.., feature) are places that
standard forward hooks reach: the model's input, the output of `stages.<name>`, the input of `fc`
(`procrustes.method.weaken.staged_point_mixers`). The forward pass itself is plain: feature mixing and gradient
diagnostics live in hooks, one implementation for these models and any other torch model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .choices import MIXING_POINTS as POINTS  # noqa: F401  (re-exported: where these models can mix)
from .choices import mixing_points  # noqa: F401


class NormedLinear(nn.Module):
    """Cosine classifier (LDAM): normalise(feature) . normalise(weight column), no bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = 0
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":  # parameter-free: subsample, zero-pad channels (the reference ResNet-32)
                self.pad = (cout - cin) // 2
                self.shortcut = nn.Identity()
                self.stride = stride
            else:  # "B": 1x1 conv + BN (ResNet-18)
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            s = x[:, :, :: self.stride, :: self.stride]
            s = F.pad(s, (0, 0, 0, 0, self.pad, self.pad))
        else:
            s = self.shortcut(x)
        return F.relu(out + s)


def _stage(cin: int, cout: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    layers = [BasicBlock(cin, cout, stride, shortcut)] + [BasicBlock(cout, cout, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class StagedNet(nn.Module):
    """A network as named stages; the points are the names, in order, with 'input' first and 'feature' last."""

    def __init__(self, stages: dict[str, nn.Module], feature_dim: int, num_classes: int, normed: bool):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.points = ("input",) + tuple(stages) + ("feature",)
        self.feature_dim = feature_dim
        self.fc = NormedLinear(feature_dim, num_classes) if normed else nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for stage in self.stages.values():
            h = stage(h)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def _kaiming(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


def resnet32(num_classes: int = 10, normed: bool = False) -> StagedNet:
    """3 stages x 5 basic blocks, widths 16/32/64, option-A shortcuts, Kaiming-normal init (~0.46M params)."""
    stages = {
        "stem": nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),
        "stage1": _stage(16, 16, 5, 1, "A"),
        "stage2": _stage(16, 32, 5, 2, "A"),
        "stage3": _stage(32, 64, 5, 2, "A"),
    }
    net = StagedNet(stages, 64, num_classes, normed)
    net.apply(_kaiming)
    if normed:  # keep the NormedLinear init of the reference
        net.fc.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)
    return net


def resnet18(num_classes: int = 200, normed: bool = False, stem: str = "imagenet") -> StagedNet:
    """ResNet-18 (2-2-2-2 basic blocks, widths 64..512). stem="imagenet": 7x7/2 conv + max-pool as in
    torchvision (what we take the LDAM-DRW Tiny-ImageNet code to use); stem="cifar": one 3x3/1 conv."""
    if stem == "imagenet":
        s = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    else:
        s = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
    stages = {
        "stem": s,
        "stage1": _stage(64, 64, 2, 1, "B"),
        "stage2": _stage(64, 128, 2, 2, "B"),
        "stage3": _stage(128, 256, 2, 2, "B"),
        "stage4": _stage(256, 512, 2, 2, "B"),
    }
    net = StagedNet(stages, 512, num_classes, normed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def build_model(name: str, num_classes: int, normed: bool = False) -> StagedNet:
    if name == "resnet32":
        return resnet32(num_classes, normed)
    if name == "resnet18":
        return resnet18(num_classes, normed)
    raise ValueError(f"unknown model {name!r}")
