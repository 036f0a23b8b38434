"""Toy networks for the engine and kernel-mask tests: each docstring names the topology it covers.

Every toy ends in a Linear (the network output, never prunable) or a conv, takes the
input shape in :data:`TOYS`, and keeps channel counts out of ``forward`` so that a
narrowed copy still runs.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


def randomise(model: nn.Module, seed: int) -> torch.Generator:
    """Seeded normal parameters, and BN running statistics away from (0, 1), in place; the
    generator is returned for the caller's further draws."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return g


def conv_bn(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def feature_stack(last_kernel: int, in_channels: int = 3) -> nn.Sequential:
    """conv3x3 a (no bias) -> BN -> ReLU -> conv3x3 b (with bias) -> BN -> ReLU -> conv c
    (``last_kernel`` square, same padding), ending at c's feature map so that its borders and
    interior can be compared apart; every channel of b has one reader. With ``in_channels=1``, a
    has a single input: no kernels of its own to prune."""
    return nn.Sequential(
        OrderedDict(
            [
                ("a", nn.Conv2d(in_channels, 6, 3, padding=1, bias=False)),
                ("a_bn", nn.BatchNorm2d(6)),
                ("a_act", nn.ReLU()),
                ("b", nn.Conv2d(6, 8, 3, padding=1)),
                ("b_bn", nn.BatchNorm2d(8)),
                ("b_act", nn.ReLU()),
                ("c", nn.Conv2d(8, 5, last_kernel, padding=last_kernel // 2)),
            ]
        )
    )


class Head(nn.Module):
    """Global average pool, flatten, Linear: the usual classifier."""

    def __init__(self, cin: int, classes: int = 5) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


class Conv1dNet(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU twice, global pool, Linear: a 1-D signal network."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(3, 8, 3, padding=1),
            nn.BatchNorm1d(8),
            nn.ReLU(),
            nn.Conv1d(8, 6, 3, padding=1),
            nn.BatchNorm1d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class DepthwiseMultiplier(nn.Module):
    """Depthwise conv with channel multiplier 2 (8 -> 16, groups 8): each input channel
    owns two output channels, so removing it removes both."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = conv_bn(3, 8, 1)
        self.dw = conv_bn(8, 16, 3, groups=8)
        self.project = conv_bn(16, 8, 1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.project(self.dw(self.pw(x))))


class FlattenLinear(nn.Module):
    """Conv -> flatten(1) -> Linear(C*H*W): each channel owns H*W features of the Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 6)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(self.conv(x), 1))))


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: ``x * gate`` where the gate (N, C, 1, 1) is broadcast over H, W;
    the gate's expand conv output channels are tied to x's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 8)
        self.reduce = nn.Conv2d(8, 4, 1)
        self.expand = nn.Conv2d(4, 8, 1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(x * gate)


class ConcatBranches(nn.Module):
    """torch.cat of two conv branches on channels: the consumer's input columns of the
    second branch sit at an offset that shifts when the first branch loses channels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 6)
        self.b = conv_bn(3, 4, 1)
        self.fuse = conv_bn(10, 8, 1)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fuse(torch.cat([self.a(x), self.b(x)], dim=1)))


class SubMul(nn.Module):
    """``a - b`` and ``(a - b) * c`` of three conv branches: channel i of a, b and c are tied."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = conv_bn(3, 6), conv_bn(3, 6, 1), conv_bn(3, 6)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.a(x) - self.b(x)) * self.c(x))


class Upsample(nn.Module):
    """F.interpolate(scale_factor=2) between convs: channel-wise, only H and W change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 6), conv_bn(6, 5)
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(F.interpolate(self.conv1(x), scale_factor=2.0, mode="nearest")))


class GlobalMean(nn.Module):
    """Global pooling written as ``x.mean((2, 3))`` feeding a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 7)
        self.fc = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


class PermuteKeepsChannels(nn.Module):
    """``x.permute(0, 1, 3, 2)`` (H and W swapped, dim 1 kept) between convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 6), conv_bn(6, 5)
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x).permute(0, 1, 3, 2)))


class CumsumOverChannels(nn.Module):
    """``torch.cumsum(x, dim=1)``: an op with no handler mixes channels; its channels are
    kept (not prunable), the other convs' are not affected."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 6), conv_bn(6, 5)
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(torch.cumsum(self.conv1(x), dim=1)))


@torch.fx.wrap
def mystery(x: torch.Tensor) -> torch.Tensor:
    """A function torch.fx does not trace into (``torch.fx.wrap``): an opaque op."""
    return x.flip(1)


class OpaqueFunction(nn.Module):
    """A custom function kept opaque by ``torch.fx.wrap``: an unknown op, its channels kept."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 6), conv_bn(6, 5)
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(mystery(self.conv1(x))))


class ConstantScale(nn.Module):
    """``x * self.scale`` with a (1, C, 1, 1) parameter read by a get_attr node: the engine
    cannot narrow that tensor, so the channels it meets are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 6), conv_bn(6, 5)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6).view(1, 6, 1, 1))
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(x) * self.scale))


class Opaque(nn.Module):
    """A block meant to be passed in ``leaf_modules``: a conv the engine must not look into."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.inner = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class LeafBlock(nn.Module):
    """A custom block traced as one leaf call (``leaf_modules=(Opaque,)``): its input and
    output channels are kept, the convs around it stay prunable where not coupled to it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.block, self.conv2 = conv_bn(3, 6), Opaque(6), conv_bn(6, 5)
        self.head = Head(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.block(self.conv1(x))))


class ChunkNet(nn.Module):
    """``x.chunk(2, dim=1)`` of a conv output: equal halves, so channel ``c`` of the conv is
    removed with channel ``c + 4`` (the halves stay equal and in step)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 8)
        self.left, self.right = conv_bn(4, 4), conv_bn(4, 4)
        self.head = Head(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return self.head(torch.cat([self.left(a), self.right(b)], dim=1))


class HardCodedWidth(nn.Module):
    """``x.view(x.size(0), 6, -1)``: a reshape that writes the channel count into the code,
    so removing a channel would break it; those channels are kept."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(3, 5), conv_bn(5, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)).view(x.size(0), 6, -1).mean(2))


class SharedConv(nn.Module):
    """One conv applied twice (shared weights): both calls have one set of channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 6)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(F.relu(self.shared(F.relu(self.shared(x)))) + x)


class SpatialGate(nn.Module):
    """``x * sigmoid(conv_1ch(x))``: a one-channel gate broadcast over all channels ties
    nothing, so x's channels stay prunable; the gate's one channel is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_bn(3, 6)
        self.gate = nn.Conv2d(6, 1, 3, padding=1)
        self.head = Head(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.head(x * torch.sigmoid(self.gate(x)))


class Mlp(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear: producers on the feature dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(10, 16), nn.BatchNorm1d(16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class UnbatchedSum(nn.Module):
    """Two Linears on one unbatched vector, summed: ids tied position by position (no
    channel dimension to read them along)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(10, 8), nn.Linear(10, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.a(x) + self.b(x)))


class Branch(nn.Module):
    """Data-dependent Python control flow, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return x


class DataDependent(nn.Module):
    """A network whose ``Branch`` block branches on ``x.sum() > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.branch = Branch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(self.conv(x))


#: name -> (class, input shape, leaf module types)
TOYS: dict[str, tuple[type[nn.Module], tuple[int, ...], tuple[type[nn.Module], ...]]] = {
    "conv1d": (Conv1dNet, (2, 3, 16), ()),
    "depthwise_multiplier": (DepthwiseMultiplier, (2, 3, 8, 8), ()),
    "flatten_linear": (FlattenLinear, (2, 3, 4, 4), ()),
    "squeeze_excite": (SqueezeExcite, (2, 3, 8, 8), ()),
    "concat": (ConcatBranches, (2, 3, 8, 8), ()),
    "sub_mul": (SubMul, (2, 3, 8, 8), ()),
    "upsample": (Upsample, (2, 3, 6, 6), ()),
    "global_mean": (GlobalMean, (2, 3, 8, 8), ()),
    "permute": (PermuteKeepsChannels, (2, 3, 6, 8), ()),
    "cumsum": (CumsumOverChannels, (2, 3, 8, 8), ()),
    "opaque_function": (OpaqueFunction, (2, 3, 8, 8), ()),
    "constant_scale": (ConstantScale, (2, 3, 8, 8), ()),
    "leaf_block": (LeafBlock, (2, 3, 8, 8), (Opaque,)),
    "chunk": (ChunkNet, (2, 3, 8, 8), ()),
    "hard_coded_width": (HardCodedWidth, (2, 3, 8, 8), ()),
    "shared_conv": (SharedConv, (2, 3, 8, 8), ()),
    "spatial_gate": (SpatialGate, (2, 3, 8, 8), ()),
    "mlp": (Mlp, (4, 10), ()),
    "unbatched_sum": (UnbatchedSum, (10,), ()),
}
