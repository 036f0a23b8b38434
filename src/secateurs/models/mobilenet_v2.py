"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

The CIFAR version is the common port: first conv at stride 1 and the second stage
(24 channels) at stride 1 instead of 2, so a 32x32 input ends at 4x4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._layers import Stem, choose, classifier, conv_bn, init_weights, make_divisible, make_stem, relax_strides
from ._registry import register_model

#: (expansion t, output channels c, repeats n, first stride s) per stage (paper, Table 2).
MOBILENET_V2_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
TEST_CFG: tuple[tuple[int, int, int, int], ...] = ((1, 8, 1, 1), (4, 16, 2, 2), (4, 24, 2, 2))
TEST_STEM_CHANNELS, TEST_LAST_CHANNELS = 8, 64

STEMS: dict[str, Stem] = {
    "cifar": Stem(stride=1, skip_downsample=1),
    "imagenet": Stem(stride=2),
}


class InvertedResidual(nn.Module):
    """expand 1x1-BN-ReLU6 (skipped when t=1), DW3x3-BN-ReLU6, project 1x1-BN.

    The projection has no activation (linear bottleneck); the input is added back when
    the block keeps both resolution and width.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expansion))
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += conv_bn(in_ch, hidden, 1, act=nn.ReLU6)
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        layers += conv_bn(hidden, out_ch, 1, act=None)
        self.conv = nn.Sequential(*layers)
        # Fixed at build time (not data-dependent), so FX traces one branch.
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + x if self.use_residual else out


class MobileNetV2(nn.Module):
    """Stem conv, inverted-residual stages, final 1x1 conv, global pool and linear.

    Args:
        cfg: (t, c, n, s) per stage.
        stem_channels: width of the first conv.
        last_channels: width of the final 1x1 conv.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" or "imagenet", see the module docstring.
        width_mult: scales every width (rounded to a multiple of 8); the last conv only grows.
    """

    def __init__(
        self,
        cfg: Sequence[tuple[int, int, int, int]],
        stem_channels: int,
        last_channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        spec = choose("stem", STEMS, stem)
        in_ch = make_divisible(stem_channels * width_mult, 8)
        self.stem = make_stem(in_channels, in_ch, spec, act=nn.ReLU6)
        strides = relax_strides([s for _, _, _, s in cfg], spec.skip_downsample)
        blocks = []
        for (t, c, n, _), stride in zip(cfg, strides):
            out_ch = make_divisible(c * width_mult, 8)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, t))
                in_ch = out_ch
        self.stages = nn.Sequential(*blocks)
        last = make_divisible(last_channels * max(1.0, width_mult), 8)
        self.final_conv = conv_bn(in_ch, last, 1, act=nn.ReLU6)
        self.head = classifier(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_conv(self.stages(self.stem(x))))


@register_model
def mobilenet_v2(
    num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0
) -> nn.Module:
    """MobileNetV2 1.0x; 2.2 M parameters with 10 classes, 3.5 M on ImageNet."""
    return MobileNetV2(MOBILENET_V2_CFG, STEM_CHANNELS, LAST_CHANNELS, num_classes, in_channels, stem, width_mult)


@register_model
def test_mobilenet_v2(
    num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0
) -> nn.Module:
    """t=1 block, stride-2 blocks without residual and stride-1 blocks with residual."""
    return MobileNetV2(TEST_CFG, TEST_STEM_CHANNELS, TEST_LAST_CHANNELS, num_classes, in_channels, stem, width_mult)
