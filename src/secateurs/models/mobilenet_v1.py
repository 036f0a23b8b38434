"""MobileNetV1 (Howard et al. 2017): a 3x3 conv then 13 depthwise-separable blocks.

The CIFAR version keeps the ImageNet block strides and only runs the first conv at
stride 1 (the common CIFAR port), so a 32x32 input ends at 2x2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._layers import Stem, choose, classifier, conv_bn, init_weights, make_divisible, make_stem
from ._registry import register_model

STEM_CHANNELS = 32
#: (output channels, stride) of the 13 depthwise-separable blocks (paper, Table 1).
MOBILENET_V1_CFG: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
TEST_STEM_CHANNELS = 8
TEST_CFG: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (32, 1), (64, 2), (64, 1))

STEMS: dict[str, Stem] = {"cifar": Stem(stride=1), "imagenet": Stem(stride=2)}


def dw_separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3-BN-ReLU then pointwise 1x1-BN-ReLU."""
    return nn.Sequential(*conv_bn(in_ch, in_ch, 3, stride, groups=in_ch), *conv_bn(in_ch, out_ch, 1))


class MobileNetV1(nn.Module):
    """Stem conv, depthwise-separable blocks, global pool and linear.

    Args:
        cfg: (output channels, stride) per block.
        stem_channels: width of the first conv.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" (first conv stride 1) or "imagenet" (stride 2).
        width_mult: scales every width (rounded to a multiple of 8).
    """

    def __init__(
        self,
        cfg: Sequence[tuple[int, int]],
        stem_channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        in_ch = make_divisible(stem_channels * width_mult, 8)
        self.stem = make_stem(in_channels, in_ch, choose("stem", STEMS, stem))
        blocks = []
        for out_ch, stride in cfg:
            out_ch = make_divisible(out_ch * width_mult, 8)
            blocks.append(dw_separable(in_ch, out_ch, stride))
            in_ch = out_ch
        self.stages = nn.Sequential(*blocks)
        self.head = classifier(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model
def mobilenet_v1(
    num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0
) -> nn.Module:
    """MobileNetV1; 3.2 M parameters with 10 classes, 4.2 M on ImageNet."""
    return MobileNetV1(MOBILENET_V1_CFG, STEM_CHANNELS, num_classes, in_channels, stem, width_mult)


@register_model
def test_mobilenet_v1(
    num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0
) -> nn.Module:
    """Five depthwise-separable blocks, two of them stride 2."""
    return MobileNetV1(TEST_CFG, TEST_STEM_CHANNELS, num_classes, in_channels, stem, width_mult)
