"""VGG with BatchNorm (Simonyan & Zisserman 2015).

The CIFAR head is the one of the pruning literature (Li et al. 2017, network slimming):
global pool of the 1x1x512 map and a single linear layer, about 14.7 M parameters. The
ImageNet head is the original 7x7 pool and two 4096-wide hidden layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from ._layers import choose, classifier, conv_bn, init_weights
from ._registry import register_model

#: Conv widths, "M" is a 2x2 max-pool. VGG-16 is configuration "D" of the paper.
VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
TEST_CFG: tuple[int | str, ...] = (8, "M", 16, "M", 32, 32, "M")

Head = Callable[[int, int, int], nn.Module]


def _cifar_head(channels: int, num_classes: int, hidden: int) -> nn.Module:
    return classifier(channels, num_classes)


def _imagenet_head(channels: int, num_classes: int, hidden: int) -> nn.Module:
    # The 7x7 adaptive pool keeps the original 512*49 -> 4096 layer for any input size.
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(1),
        nn.Linear(channels * 49, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    )


#: For VGG the stem choice only changes the classifier: the conv stack is the same.
HEADS: dict[str, Head] = {"cifar": _cifar_head, "imagenet": _imagenet_head}


def make_features(cfg: Sequence[int | str], in_channels: int) -> nn.Sequential:
    """Conv3x3-BN-ReLU for each width in ``cfg``, a 2x2 max-pool for each "M"."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += conv_bn(in_channels, int(v), 3)
            in_channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Plain conv stack then a classifier head chosen by ``stem``.

    Args:
        cfg: conv widths and "M" pools.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: "cifar" (single linear) or "imagenet" (7x7 pool + two hidden layers).
        hidden: width of the ImageNet head's hidden layers (4096 in the paper).
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        stem: str = "cifar",
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        head = choose("stem", HEADS, stem)
        self.features = make_features(cfg, in_channels)
        last = [v for v in cfg if v != "M"][-1]
        self.classifier = head(int(last), num_classes, hidden)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """VGG-16-BN; 14.7 M parameters and 313 M MACs on CIFAR-10."""
    return VGG(VGG16_CFG, num_classes, in_channels, stem)


@register_model
def test_vgg(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar") -> nn.Module:
    """Tiny VGG for fast tests: same layer types, pools and both heads."""
    return VGG(TEST_CFG, num_classes, in_channels, stem, hidden=16)
