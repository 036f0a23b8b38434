"""Building blocks shared by the model zoo.

Every block keeps the promises the pruning engine relies on: only ``Conv2d``,
``BatchNorm2d`` and ``Linear`` hold parameters; every activation is its own module
instance, so a graph pass sees "BN followed by ReLU"; and ``forward`` reads channel
counts from tensor shapes, so a model whose convs were physically narrowed still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn as nn

from ..errors import unknown_choice

#: Builds a fresh activation module; a factory (not an instance) so none is ever shared.
ActFactory = Callable[[], nn.Module]
T = TypeVar("T")


@dataclass(frozen=True)
class Stem:
    """How a family adapts its first layers to the input resolution.

    Attributes:
        kernel: kernel size of the first convolution.
        stride: stride of the first convolution.
        maxpool: whether a 3x3/2 max-pool follows the first convolution.
        skip_downsample: how many of the first stride-2 blocks run at stride 1; CIFAR
            ports do this so a 32x32 input keeps a few pixels before global pooling.
    """

    kernel: int = 3
    stride: int = 1
    maxpool: bool = False
    skip_downsample: int = 0


def choose(kind: str, table: Mapping[object, T], key: object) -> T:
    """Look ``key`` up in a registry table, or raise a ConfigError naming the valid keys."""
    if key not in table:
        raise unknown_choice(kind, str(key), [str(k) for k in table])
    return table[key]


def make_divisible(value: float, divisor: int) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% below ``value``.

    This is the rule of the MobileNet/GhostNet reference code; keeping it makes
    ``width_mult`` variants match the published channel counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def relax_strides(strides: Sequence[int], skip: int) -> list[int]:
    """Turn the first ``skip`` strides greater than 1 into 1 (see :attr:`Stem.skip_downsample`)."""
    out = []
    for s in strides:
        if s > 1 and skip > 0:
            s, skip = 1, skip - 1
        out.append(s)
    return out


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: ActFactory | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias: the BN shift replaces it) -> BN -> optional activation, "same" padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def make_stem(in_ch: int, out_ch: int, stem: Stem, act: ActFactory = nn.ReLU) -> nn.Sequential:
    """First conv-BN-act of a network, plus the max-pool that ImageNet stems use."""
    layers = list(conv_bn(in_ch, out_ch, stem.kernel, stem.stride, act=act))
    if stem.maxpool:
        layers.append(nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers)


def classifier(in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """Global average pool -> flatten -> (dropout) -> linear.

    The adaptive pool is what lets every model take any input size of 32 or more.
    """
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """Interleave channels across ``groups`` (ShuffleNet), so grouped convs can mix groups.

    Only the number of groups is stored: the channel count is read from the input, so the
    block keeps working after its producers are narrowed (by a multiple of ``groups``).
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.groups
        return x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * hardsigmoid(conv(relu(conv(avgpool(x)))))`` (Hu et al. 2018).

    Written as a plain multiply by a gate so a graph pass can see that the gate's output
    channels are tied to ``x``'s channels.
    """

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


def init_weights(model: nn.Module) -> None:
    """Standard from-scratch init: Kaiming-normal convs, unit BN, small-normal linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
