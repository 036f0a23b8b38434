"""ShuffleNetV1 (Zhang et al. 2018): grouped 1x1 convs with a channel shuffle between them.

Units follow the paper's Figure 2: GConv1x1-BN-ReLU, shuffle, DW3x3-BN, GConv1x1-BN,
then ``relu(out + x)``, or for stride 2 a concat with a 3x3/2 average-pooled shortcut.
The bottleneck is a quarter of the stage width, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ._layers import ChannelShuffle, Stem, choose, classifier, conv_bn, init_weights, make_stem
from ._registry import register_model

STEM_CHANNELS = 24
STAGE_REPEATS = (4, 8, 4)
#: Stage output channels of the 1x network for each group count (paper, Table 1).
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
TEST_STEM_CHANNELS, TEST_REPEATS, TEST_CHANNELS = 12, (2, 2, 1), (24, 48, 96)

STEMS: dict[str, Stem] = {"cifar": Stem(stride=1), "imagenet": Stem(stride=2, maxpool=True)}


class ShuffleV1Unit(nn.Module):
    """One ShuffleNetV1 unit.

    Args:
        in_ch: input channels.
        out_ch: unit output channels; at stride 2 the branch makes ``out_ch - in_ch`` and
            the pooled input fills the rest through the concat.
        stride: 1 (residual add) or 2 (concat with the pooled input).
        groups: groups of the 1x1 convs.
        first_groups: groups of the first 1x1 conv; 1 for the first unit, whose input
            (the stem) is too narrow to split (paper, Section 3.3).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_ch // 4
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        self.branch = nn.Sequential(
            *conv_bn(in_ch, mid, 1, groups=first_groups),
            ChannelShuffle(groups),
            *conv_bn(mid, mid, 3, stride, groups=mid, act=None),
            *conv_bn(mid, branch_out, 1, groups=groups, act=None),
        )
        self.concat = stride == 2
        self.shortcut = nn.AvgPool2d(3, 2, 1) if self.concat else nn.Sequential()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.concat:
            # The pooled input is already non-negative, so only the branch needs the ReLU.
            return torch.cat([self.shortcut(x), self.relu(out)], dim=1)
        return self.relu(out + x)


class ShuffleNetV1(nn.Module):
    """Stem, three stages whose first unit has stride 2, global pool and linear.

    Args:
        stage_channels: output channels of the three stages.
        stage_repeats: units per stage.
        stem_channels: width of the first conv.
        groups: groups of the 1x1 convs.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" (conv3x3) or "imagenet" (conv3x3/2 + maxpool3x3/2).
    """

    def __init__(
        self,
        stage_channels: Sequence[int],
        stage_repeats: Sequence[int],
        stem_channels: int,
        groups: int,
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        self.stem = make_stem(in_channels, stem_channels, choose("stem", STEMS, stem))
        units, in_ch = [], stem_channels
        for out_ch, repeats in zip(stage_channels, stage_repeats):
            for i in range(repeats):
                first_groups = groups if units else 1
                units.append(ShuffleV1Unit(in_ch, out_ch, 2 if i == 0 else 1, groups, first_groups))
                in_ch = out_ch
        self.stages = nn.Sequential(*units)
        self.head = classifier(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model
def shufflenet_v1(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", groups: int = 3) -> nn.Module:
    """ShuffleNetV1 1x; ``groups`` picks the stage widths of the paper's Table 1."""
    channels = choose("groups", STAGE_CHANNELS, groups)
    return ShuffleNetV1(channels, STAGE_REPEATS, STEM_CHANNELS, groups, num_classes, in_channels, stem)


@register_model
def test_shufflenet_v1(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """Ungrouped first unit, grouped stride-1 and stride-2 units, 3 groups."""
    return ShuffleNetV1(TEST_CHANNELS, TEST_REPEATS, TEST_STEM_CHANNELS, 3, num_classes, in_channels, stem)
