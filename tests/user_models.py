"""A user's own model and data, as someone arriving with them would write them.

``TinyResNet`` copies the structure of torchvision's ``resnet18`` (``BasicBlock`` with a
``Sequential`` downsample of conv + BN, ``conv1/bn1/relu/maxpool``, ``layer1..layer4``,
``avgpool``, ``fc``) at a small width, so the tests run in seconds; nothing in it comes
from secateurs. ``PatternDataset`` is a map-style ``Dataset`` returning
``(float image tensor, int label)``, already normalised, with no ``.info``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Dataset


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """torchvision's ResNet layout with widths ``width * (1, 2, 4, 8)`` and one block per stage."""

    def __init__(self, num_classes: int = 4, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(width * 2, 2)
        self.layer3 = self._make_layer(width * 4, 2)
        self.layer4 = self._make_layer(width * 8, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        block = BasicBlock(self.inplanes, planes, stride, downsample)
        self.inplanes = planes
        return nn.Sequential(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet(num_classes: int = 4, in_channels: int = 3, width: int = 8) -> TinyResNet:
    """The factory a user hands to ``secateurs.load(path, arch=...)`` / ``--arch``."""
    torch.manual_seed(0)  # the same unpruned weights every call, as pretrained weights would be
    return TinyResNet(num_classes, in_channels, width)


class PatternDataset(Dataset):
    """``num_samples`` images ``[3, size, size]``: class ``k`` is a fixed pattern plus seeded noise.

    A deterministic function of ``(seed, index)``, so any number of worker processes
    yields the same samples.
    """

    def __init__(self, num_samples: int = 96, size: int = 16, num_classes: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(1234)
        self.patterns = torch.randn(num_classes, 3, size, size, generator=g)
        self.num_samples, self.num_classes, self.seed = num_samples, num_classes, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.num_samples:
            raise IndexError(i)
        label = i % self.num_classes
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return self.patterns[label] + 0.5 * torch.randn(self.patterns[label].shape, generator=g), label
