"""Networks for 32x32 images: a small CNN for CPU parameter sets, ResNet18/50 for the paper's scale.

`build_model(name, n_classes=, width=)` is the only entry point. The ResNets follow
torchvision's blocks, adapted to CIFAR the usual way (3x3 stride-1 stem, no max-pool),
so a 32x32 input reaches the last stage at 4x4.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, *, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU stages, widths w, 2w, 4w, 4w; 32 -> 16 -> 8 -> 4 by max-pool; ~0.3 MFLOP x w^2.

    Sized for CPU throughput: the first (full-resolution) conv is narrow and pooling
    comes right after it, so most compute runs at 16x16 and below.
    """

    def __init__(self, *, n_classes: int, width: int):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(3, w), nn.MaxPool2d(2),           # (w, 16, 16)
            conv_bn(w, 2 * w), nn.MaxPool2d(2),       # (2w, 8, 8)
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),   # (4w, 4, 4)
            conv_bn(4 * w, 4 * w),                    # (4w, 4, 4)
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_mid: int, stride: int):
        super().__init__()
        c_out = c_mid * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c_mid: int, stride: int):
        super().__init__()
        c_out = c_mid * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid), nn.ReLU(inplace=True),
            nn.Conv2d(c_mid, c_mid, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = _shortcut(c_in, c_out, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem at stride 1, no max-pool, four stages of widths w, 2w, 4w, 8w."""

    def __init__(self, block, n_blocks: list[int], *, n_classes: int, width: int):
        super().__init__()
        self.stem = conv_bn(3, width)
        stages, c_in = [], width
        for i, n in enumerate(n_blocks):
            c_mid = width * 2 ** i
            for j in range(n):
                stages.append(block(c_in, c_mid, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_mid * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.pool(self.stages(self.stem(x))))


def build_model(name: str, *, n_classes: int, width: int) -> nn.Module:
    """A fresh, randomly initialised model (seed the global torch RNG before calling to fix it)."""
    if name == "tiny_cnn":
        return TinyCNN(n_classes=n_classes, width=width)
    if name == "resnet18":
        return ResNet(BasicBlock, [2, 2, 2, 2], n_classes=n_classes, width=width)
    if name == "resnet50":
        return ResNet(Bottleneck, [3, 4, 6, 3], n_classes=n_classes, width=width)
    raise ValueError(f"unknown model '{name}' (known: tiny_cnn, resnet18, resnet50)")
