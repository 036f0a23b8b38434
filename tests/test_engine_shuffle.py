"""Channel shuffles and equal chunks: traced, and pruned exactly across them.

The reference is the one of ``test_engine``: removing a set of channels gives the outputs
(float64) of the original model with those channels zeroed at their producers. The toys
below write the shuffle the ways real code does (torchvision's ``view`` / ``transpose`` /
``contiguous`` / ``view``, a ``permute``, a reshape with ``-1``) and a ShuffleNetV2 unit
with its channel split; each prunable group of each is checked.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch
import torch.nn as nn
from engine_models import ChunkNet, Head, conv_bn
from test_engine import _randomise, _seed, check_removal_equals_zeroing

from secateurs.errors import PruningError
from secateurs.graph import ChannelGraph, prune_channels, trace
from secateurs.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 3, 8, 8)


def shuffle_view(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ``channel_shuffle``, verbatim in substance."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, c, h, w)


def shuffle_permute(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.reshape(b, groups, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)


def shuffle_hard_coded(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Both split sizes written in the code: removing a channel breaks the view."""
    b, c, h, w = x.shape
    return x.view(b, 3, 4, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleBetween(nn.Module):
    """conv(12) -> shuffle(3) -> conv(6) -> head: the shuffle moves channel a*4+r to r*3+a."""

    def __init__(self, shuffle=shuffle_view) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.conv1, self.conv2 = conv_bn(3, 12), conv_bn(12, 6)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.shuffle(self.conv1(x), 3)))


class SplitUnit(nn.Module):
    """A ShuffleNetV2 stride-1 unit as torchvision writes it: chunk, branch, cat, shuffle, twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.branches = nn.ModuleList(
            nn.Sequential(conv_bn(4, 4, 1), conv_bn(4, 4, 3, groups=4), conv_bn(4, 4, 1)) for _ in range(2)
        )
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for branch in self.branches:
            x1, x2 = x.chunk(2, dim=1)
            x = shuffle_view(torch.cat((x1, branch(x2)), dim=1), 2)
        return self.head(x)


class UnevenChunk(nn.Module):
    """``chunk(3)`` of 8 channels: parts of 3, 3, 2, which no removal keeps in step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 8)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.conv(x).chunk(3, dim=1)
        return self.head(torch.cat([c, b, a], dim=1))


TOYS = {
    "view": lambda: ShuffleBetween(shuffle_view),
    "permute": lambda: ShuffleBetween(shuffle_permute),
    "hard_coded": lambda: ShuffleBetween(shuffle_hard_coded),
    "split_unit": SplitUnit,
    "chunk": ChunkNet,
    "uneven_chunk": UnevenChunk,
}


@functools.cache
def toy(name: str) -> tuple[nn.Module, ChannelGraph]:
    torch.manual_seed(_seed(name))
    model = _randomise(TOYS[name]().double(), torch.randn(8, *SHAPE[1:], dtype=torch.float64), _seed(name, "bn"))
    return model, trace(model, torch.zeros(SHAPE, dtype=torch.float64))


def _cases(names) -> list:
    return [
        pytest.param(name, gi, id=f"{name}-{gi}-{g.name}")
        for name in names
        for gi, g in enumerate(toy(name)[1].groups)
        if g.prunable
    ]


@pytest.mark.parametrize("name, gi", _cases(["view", "permute", "split_unit", "chunk"]))
def test_removal_across_a_shuffle_equals_zeroing(name: str, gi: int) -> None:
    model, graph = toy(name)
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(gi))
    check_removal_equals_zeroing(model, graph, gi, x, _seed(name, gi))


@pytest.mark.parametrize("name", ["view", "permute"])
def test_one_unit_per_shuffle_position(name: str) -> None:
    """Unit r holds position r of every block (channels r, r+4, r+8 of conv1), which the
    shuffle puts side by side (inputs 3r, 3r+1, 3r+2 of conv2)."""
    group = toy(name)[1].locate("conv1.0", "out", 0)[0]
    assert group.prunable and group.size == 4
    for r, unit in enumerate(group.units):
        assert [m.index for m in unit.members if m.module == "conv1.0" and m.kind == "out"] == [r, r + 4, r + 8]
        assert [m.index for m in unit.members if m.module == "conv2.0"] == [3 * r, 3 * r + 1, 3 * r + 2]


def test_equal_chunks_tie_position_r_of_each_part() -> None:
    group = toy("chunk")[1].locate("conv.0", "out", 0)[0]
    assert group.prunable
    assert [[m.index for m in u.members if m.module == "conv.0" and m.kind == "out"] for u in group.units] == [
        [c, c + 4] for c in range(4)
    ]


def test_every_group_of_the_split_unit_is_prunable() -> None:
    """The stream crosses two chunks and two shuffles; all of it maps exactly."""
    graph = toy("split_unit")[1]
    assert [g.reason for g in graph.groups if not g.prunable] == ["network input", "network output"]


@pytest.mark.parametrize(
    "name, module, reason",
    [
        ("hard_coded", "conv1.0", r"view .* reshapes the channel dimension .* channel shuffle"),
        ("uneven_chunk", "conv.0", r"chunk .* splits the channel dimension"),
    ],
)
def test_a_split_that_cannot_stay_exact_is_refused_naming_it(name: str, module: str, reason: str) -> None:
    model, graph = toy(name)
    assert re.search(reason, graph.locate(module, "out", 0)[0].reason)
    with pytest.raises(PruningError, match=reason):
        prune_channels(model, torch.zeros(SHAPE, dtype=torch.float64), {module: [0]}, graph=graph)


def test_zoo_shufflenet_v1_prunes_its_bottlenecks_exactly() -> None:
    """Full-size ShuffleNetV1 (g=3): each bottleneck's shuffle positions that sit inside one
    group of the grouped 1x1 conv after it are prunable, the two that straddle a boundary not."""
    torch.manual_seed(0)
    model = create_model("shufflenet_v1", num_classes=10, in_channels=3)
    x = torch.randn(2, 3, 32, 32)
    _randomise(model, x, 0)
    model.double()
    graph = trace(model, x.double())
    assert len(graph.prunable_groups) == 16  # one per unit
    gi = next(i for i, g in enumerate(graph.groups) if g.prunable and g.name == "stages.5.branch.0")
    assert graph.groups[gi].size == 38  # 40 positions; 13 and 26 straddle the 40-channel conv groups
    check_removal_equals_zeroing(model, graph, gi, x.double(), 5)
