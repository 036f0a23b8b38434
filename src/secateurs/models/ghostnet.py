"""GhostNet (Han et al. 2020): ghost modules make half their maps with a cheap depthwise conv.

Ghost modules use ratio 2 and even widths (every width is a multiple of 4, as the
reference ``_make_divisible`` does), so the primary and cheap halves concatenate to
exactly the output width and no ``[:, :out]`` slice is needed. The CIFAR version runs
the stem and the first stride-2 bottleneck at stride 1, so a 32x32 input ends at 4x4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ._layers import (
    SqueezeExcite,
    Stem,
    choose,
    conv_bn,
    init_weights,
    make_divisible,
    make_stem,
    relax_strides,
)
from ._registry import register_model

Bneck = tuple[int, int, int, float, int]
#: (kernel, expansion channels, output channels, SE ratio, stride) of the 16 bottlenecks (paper, Table 1).
GHOSTNET_CFG: tuple[Bneck, ...] = (
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2),
    (3, 72, 24, 0, 1),
    (5, 72, 40, 0.25, 2),
    (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0, 2),
    (3, 200, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 480, 112, 0.25, 1),
    (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 0.25, 1),
)
STEM_CHANNELS, FINAL_CHANNELS, HEAD_CHANNELS = 16, 960, 1280
TEST_CFG: tuple[Bneck, ...] = ((3, 16, 8, 0, 1), (3, 24, 16, 0, 2), (3, 32, 16, 0.25, 1), (5, 48, 24, 0.25, 2))
TEST_STEM_CHANNELS, TEST_FINAL_CHANNELS, TEST_HEAD_CHANNELS = 8, 48, 64

STEMS: dict[str, Stem] = {
    "cifar": Stem(stride=1, skip_downsample=1),
    "imagenet": Stem(stride=2),
}


class GhostModule(nn.Module):
    """1x1 conv to half the output, then a DW3x3 of that half; both halves concatenated."""

    def __init__(self, in_ch: int, out_ch: int, relu: bool) -> None:
        super().__init__()
        if out_ch % 2:
            raise ConfigError(f"a ratio-2 ghost module needs an even width, got out_ch={out_ch}")
        act = nn.ReLU if relu else None
        half = out_ch // 2
        self.primary = conv_bn(in_ch, half, 1, act=act)
        self.cheap = conv_bn(half, half, 3, groups=half, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """Ghost module (ReLU), DW conv if strided, optional SE, ghost module (linear), + shortcut.

    The shortcut is the identity when shape is kept, else DW kxk (stride) + BN, 1x1 + BN.
    """

    def __init__(self, in_ch: int, mid: int, out_ch: int, kernel: int, stride: int, se_ratio: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [GhostModule(in_ch, mid, relu=True)]
        if stride > 1:
            layers += conv_bn(mid, mid, kernel, stride, groups=mid, act=None)
        if se_ratio > 0:
            layers.append(SqueezeExcite(mid, make_divisible(mid * se_ratio, 4)))
        layers.append(GhostModule(mid, out_ch, relu=False))
        self.branch = nn.Sequential(*layers)
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Sequential()  # traces to nothing: FX sees ``out + x``
        else:
            self.shortcut = nn.Sequential(
                *conv_bn(in_ch, in_ch, kernel, stride, groups=in_ch, act=None), *conv_bn(in_ch, out_ch, 1, act=None)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


class GhostNet(nn.Module):
    """Stem, ghost bottlenecks, 1x1 conv, global pool, 1x1 conv head (with bias), linear.

    Args:
        cfg: (kernel, expansion, output, SE ratio, stride) per bottleneck.
        stem_channels: width of the first conv.
        final_channels: width of the 1x1 conv before pooling.
        head_channels: width of the conv applied to the pooled vector.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" or "imagenet", see the module docstring.
        width_mult: scales every width but the head's (rounded to a multiple of 4).
        dropout: dropout before the linear layer (0.2 in the reference code).
    """

    def __init__(
        self,
        cfg: Sequence[Bneck],
        stem_channels: int,
        final_channels: int,
        head_channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        spec = choose("stem", STEMS, stem)
        in_ch = make_divisible(stem_channels * width_mult, 4)
        self.stem = make_stem(in_channels, in_ch, spec)
        strides = relax_strides([b[4] for b in cfg], spec.skip_downsample)
        blocks = []
        for (k, exp, out, se, _), stride in zip(cfg, strides):
            out_ch = make_divisible(out * width_mult, 4)
            blocks.append(GhostBottleneck(in_ch, make_divisible(exp * width_mult, 4), out_ch, k, stride, se))
            in_ch = out_ch
        self.stages = nn.Sequential(*blocks)
        final = make_divisible(final_channels * width_mult, 4)
        self.final_conv = conv_bn(in_ch, final, 1)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(final, head_channels, 1),
            nn.ReLU(),
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(head_channels, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_conv(self.stages(self.stem(x))))


@register_model
def ghostnet(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0) -> nn.Module:
    """GhostNet 1.0x; 5.2 M parameters and 141 M MACs on ImageNet."""
    widths = (STEM_CHANNELS, FINAL_CHANNELS, HEAD_CHANNELS)
    return GhostNet(GHOSTNET_CFG, *widths, num_classes, in_channels, stem, width_mult)


@register_model
def test_ghostnet(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """Identity and conv shortcuts, strided DW, SE with and without stride."""
    widths = (TEST_STEM_CHANNELS, TEST_FINAL_CHANNELS, TEST_HEAD_CHANNELS)
    return GhostNet(TEST_CFG, *widths, num_classes, in_channels, stem)
