"""CIFAR ResNets of He et al. 2016, Section 4.2: depth 6n+2, stages of 16/32/64 channels.

Where the shape changes the shortcut is a 1x1 stride-2 conv + BN ("option B"): it has
parameters the pruning engine can narrow, unlike the zero-padding of option A.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._layers import Stem, choose, classifier, conv_bn, init_weights, make_stem
from ._registry import register_model

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
TEST_WIDTHS = (8, 16, 32)

STEMS: dict[str, Stem] = {
    "cifar": Stem(kernel=3, stride=1),
    "imagenet": Stem(kernel=7, stride=2, maxpool=True),
}


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride)
        self.conv2 = conv_bn(out_ch, out_ch, 3, act=None)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = conv_bn(in_ch, out_ch, 1, stride, act=None)
        else:
            # An empty Sequential traces to nothing, so FX sees ``out + x`` directly.
            self.shortcut = nn.Sequential()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem, three stages of ``blocks`` basic blocks, global pool and linear.

    Args:
        blocks: basic blocks per stage (n); depth is 6n+2.
        widths: channels of the three stages.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" (conv3x3) or "imagenet" (conv7x7/2 + maxpool3x3/2).
    """

    def __init__(
        self,
        blocks: int,
        widths: Sequence[int] = STAGE_WIDTHS,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ConfigError(f"a ResNet stage needs at least 1 block, got blocks={blocks}")
        self.stem = make_stem(in_channels, widths[0], choose("stem", STEMS, stem))
        stages, in_ch = [], widths[0]
        for width, stride in zip(widths, STAGE_STRIDES):
            strides = [stride] + [1] * (blocks - 1)
            stage = [BasicBlock(in_ch if i == 0 else width, width, s) for i, s in enumerate(strides)]
            stages.append(nn.Sequential(*stage))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.head = classifier(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """ResNet-20 (n=3), 0.27 M parameters."""
    return CifarResNet(3, STAGE_WIDTHS, num_classes, in_channels, stem)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """ResNet-32 (n=5), 0.46 M parameters."""
    return CifarResNet(5, STAGE_WIDTHS, num_classes, in_channels, stem)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """ResNet-56 (n=9), 0.85 M parameters and 125 M MACs on CIFAR-10."""
    return CifarResNet(9, STAGE_WIDTHS, num_classes, in_channels, stem)


@register_model
def resnet110(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """ResNet-110 (n=18), 1.7 M parameters."""
    return CifarResNet(18, STAGE_WIDTHS, num_classes, in_channels, stem)


@register_model
def test_resnet(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """One block per stage: identity and projection shortcuts, strides 1 and 2."""
    return CifarResNet(1, TEST_WIDTHS, num_classes, in_channels, stem)
