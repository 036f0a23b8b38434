"""ShuffleNetV2 (Ma et al. 2018): channel split, one conv branch, concat, shuffle.

A stride-1 unit passes half of its input through untouched (``x.chunk(2, dim=1)``); a
stride-2 unit feeds the whole input to two branches. Both end with a 2-group shuffle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._layers import ChannelShuffle, Stem, choose, classifier, conv_bn, init_weights, make_stem
from ._registry import register_model

STEM_CHANNELS = 24
STAGE_REPEATS = (4, 8, 4)
#: Output channels of the three stages and of the final 1x1 conv per width (paper, Table 5).
STAGE_CHANNELS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
TEST_STEM_CHANNELS, TEST_REPEATS, TEST_CHANNELS = 8, (2, 2, 1), (16, 32, 64, 96)

STEMS: dict[str, Stem] = {"cifar": Stem(stride=1), "imagenet": Stem(stride=2, maxpool=True)}


class ShuffleV2Unit(nn.Module):
    """One ShuffleNetV2 unit; each branch makes half of ``out_ch``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: 1 (split; one half is kept as is) or 2 (both branches downsample).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        half = out_ch // 2
        self.split = stride == 1
        if self.split:
            # Unused: the kept half bypasses every layer. An empty Sequential has no nodes.
            self.branch1 = nn.Sequential()
        else:
            self.branch1 = nn.Sequential(
                *conv_bn(in_ch, in_ch, 3, stride, groups=in_ch, act=None), *conv_bn(in_ch, half, 1)
            )
        branch2_in = in_ch // 2 if self.split else in_ch
        self.branch2 = nn.Sequential(
            *conv_bn(branch2_in, half, 1),
            *conv_bn(half, half, 3, stride, groups=half, act=None),
            *conv_bn(half, half, 1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    """Stem, three stages whose first unit has stride 2, final 1x1 conv, pool and linear.

    Args:
        channels: output channels of the three stages, then of the final 1x1 conv.
        stage_repeats: units per stage.
        stem_channels: width of the first conv.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" (conv3x3) or "imagenet" (conv3x3/2 + maxpool3x3/2).
    """

    def __init__(
        self,
        channels: Sequence[int],
        stage_repeats: Sequence[int],
        stem_channels: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        self.stem = make_stem(in_channels, stem_channels, choose("stem", STEMS, stem))
        units, in_ch = [], stem_channels
        for out_ch, repeats in zip(channels[:-1], stage_repeats):
            for i in range(repeats):
                units.append(ShuffleV2Unit(in_ch, out_ch, 2 if i == 0 else 1))
                in_ch = out_ch
        self.stages = nn.Sequential(*units)
        self.final_conv = conv_bn(in_ch, channels[-1], 1)
        self.head = classifier(channels[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_conv(self.stages(self.stem(x))))


@register_model
def shufflenet_v2(
    num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", width_mult: float = 1.0
) -> nn.Module:
    """ShuffleNetV2; ``width_mult`` is one of the paper's 0.5, 1.0, 1.5, 2.0."""
    channels = choose("width_mult", STAGE_CHANNELS, width_mult)
    return ShuffleNetV2(channels, STAGE_REPEATS, STEM_CHANNELS, num_classes, in_channels, stem)


@register_model
def test_shufflenet_v2(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """Stride-2 (two-branch) and stride-1 (split) units in a tiny network."""
    return ShuffleNetV2(TEST_CHANNELS, TEST_REPEATS, TEST_STEM_CHANNELS, num_classes, in_channels, stem)
