"""fold_constant_channels: removing a constant channel and folding it keeps the outputs.

The reference is the model itself before the fold: a channel that really is constant
(BN gamma = 0, a filter with no weights left) must leave the outputs unchanged, exactly
for 1x1 / unpadded consumers and away from the borders for zero-padded ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from secateurs.errors import PruningError
from secateurs.graph.fold import fold_constant_channels
from secateurs.io import load, save

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that every term of the fold counts."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _dead_bn_channel(bn: nn.BatchNorm2d, c: int, beta: float) -> None:
    """gamma = 0: the BN outputs beta on channel c whatever its input."""
    bn.weight.data[c] = 0.0
    bn.bias.data[c] = beta


def _snapshot(model: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, snap: tuple[str, dict[str, torch.Tensor]]) -> None:
    text, state = snap
    assert repr(model) == text
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), k


class ConvBNReLUNet(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv2 (1x1, or 3x3 with zero padding; optionally grouped / bias-free)."""

    def __init__(self, k2: int = 1, bias2: bool = True, groups2: int = 1, width: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 4, k2, padding=k2 // 2, bias=bias2, groups=groups2)

    def forward(self, x):
        return self.conv2(self.act(self.bn(self.conv1(x))))


class ConvBNConvBNNet(nn.Module):
    """conv-BN-ReLU -> bias-free 1x1 conv -> BN2: the constant goes out of BN2's running mean."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(5)

    def forward(self, x):
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class FlattenLinearNet(nn.Module):
    """conv-BN-ReLU -> flatten(1) -> Linear: channel c is 64 features of the Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.bn(self.conv(x))), 1))


class DepthwiseSeparableNet(nn.Module):
    """PW1 -> BN1 -> ReLU -> DW3x3 (padding 1) -> BN2 -> ReLU -> PW2 (1x1): the block of
    probability pruning (docs/methods.md)."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = nn.ReLU6()
        self.pw2 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        return self.pw2(self.act2(self.bn2(self.dw(self.act1(self.bn1(self.pw1(x)))))))


class DeadFilterNet(nn.Module):
    """conv3x3 with bias -> ReLU -> 1x1 conv: a filter with all kernels zero outputs its bias."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


class GhostCatNet(nn.Module):
    """Ghost-style: a = conv-BN-ReLU; b = 1x1 depthwise (x2 multiplier) of a -> BN -> hardswish;
    cat([a, b]) -> global average pool -> flatten -> Linear. Channel c of a reaches the Linear
    three times: at c, and through the depthwise conv at 4 + 2c and 4 + 2c + 1."""

    def __init__(self):
        super().__init__()
        self.primary, self.bn_p = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.cheap, self.bn_c = nn.Conv2d(4, 8, 1, groups=4, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        a = torch.relu(self.bn_p(self.primary(x)))
        b = nn.functional.hardswish(self.bn_c(self.cheap(a)))
        return self.fc(self.pool(torch.cat([a, b], 1)).flatten(1))


class ResidualNet(nn.Module):
    """stem conv-BN-ReLU = x; block conv-BN-ReLU-conv-BN; relu(block + x) -> 1x1 head: bn2 is tied to x."""

    def __init__(self):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv1, self.bn1 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        x = torch.relu(self.bn0(self.conv0(x)))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.head(torch.relu(y + x))


@pytest.mark.parametrize("beta", [0.7, -0.4], ids=["beta>0", "beta<=0"])
@pytest.mark.parametrize("named", ["bn", "act"])
def test_dead_bn_channel_folds_exactly_into_1x1(beta, named):
    model = _randomize(ConvBNReLUNet())
    _dead_bn_channel(model.bn, 2, beta)
    value = beta if named == "bn" else max(beta, 0.0)  # the BN outputs beta; the ReLU after it relu(beta)
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {named: {2: value}})
        after = model(X)
    assert (model.conv1.out_channels, model.bn.num_features, model.conv2.in_channels) == (5, 5, 5)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.exact and report.num_removed == 1 and report.num_exact == 1
    assert report.consumers == ("conv2",) and report.channels[0].absorbed_by == ("conv2.bias",)


def test_padded_3x3_consumer_is_exact_inside_only():
    model = _randomize(ConvBNReLUNet(k2=3))
    _dead_bn_channel(model.bn, 1, 0.8)
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn": {1: 0.8}})
        after = model(X)
    inner = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(after[inner], before[inner], atol=1e-5, rtol=0)
    assert (after - before).abs().amax() > 1e-3  # the zero-padded border did see a different input
    assert not report.exact and report.approximate_at == ("conv2",)
    assert report.channels[0].approximate_at == ("conv2",)


def test_bias_free_conv_folds_into_next_bn_running_mean():
    model = _randomize(ConvBNConvBNNet())
    _dead_bn_channel(model.bn1, 4, 0.6)
    delta = 0.6 * model.conv2.weight.detach()[:, 4].sum((1, 2))  # relu(0.6) through the 1x1 kernels
    mean_before = model.bn2.running_mean.clone()
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn1": {4: 0.6}})
        after = model(X)
    assert model.conv2.bias is None and model.conv2.in_channels == 5
    torch.testing.assert_close(model.bn2.running_mean, mean_before - delta, atol=1e-6, rtol=0)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.channels[0].absorbed_by == ("bn2.running_mean",) and report.new_biases == ()


def test_folds_into_linear_after_flatten():
    model = _randomize(FlattenLinearNet())
    _dead_bn_channel(model.bn, 3, 0.5)
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn": {3: 0.5}})
        after = model(X)
    assert model.fc.in_features == 5 * 64
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.exact and report.consumers == ("fc",)


def test_constant_folds_through_depthwise_and_bn2_into_pw2():
    model = _randomize(DepthwiseSeparableNet())
    _dead_bn_channel(model.bn1, 5, 0.9)  # probability's case "BN1 yes, BN2 no"
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn1": {5: 0.9}})
        after = model(X)
    assert (model.pw1.out_channels, model.dw.out_channels, model.dw.groups, model.pw2.in_channels) == (7, 7, 7, 7)
    inner = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(after[inner], before[inner], atol=1e-5, rtol=0)
    assert report.consumers == ("pw2",) and report.approximate_at == ("dw",)


def test_constant_follows_a_concat_and_an_unpadded_depthwise_exactly():
    model = _randomize(GhostCatNet())
    _dead_bn_channel(model.bn_p, 1, 0.4)
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn_p": {1: 0.4}})
        after = model(X)
    assert (model.primary.out_channels, model.cheap.out_channels, model.fc.in_features) == (3, 6, 9)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.exact and report.consumers == ("fc",)


def test_dead_filter_folds_its_bias():
    model = DeadFilterNet().eval()
    model.conv1.weight.data[3] = 0.0
    bias = float(model.conv1.bias.detach()[3])
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"conv1": {3: bias}})
        after = model(X)
    assert model.conv1.out_channels == 5 and model.conv2.in_channels == 5
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.exact


def test_new_bias_survives_save_and_load(tmp_path):
    model = _randomize(ConvBNReLUNet(bias2=False))
    _dead_bn_channel(model.bn, 0, 0.4)
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn": {0: 0.4}})
    assert report.new_biases == ("conv2",) and isinstance(model.conv2.bias, nn.Parameter)
    save(model, tmp_path / "folded.safetensors")
    loaded = load(tmp_path / "folded.safetensors", model=ConvBNReLUNet(bias2=False)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), before, atol=1e-5, rtol=0)


def test_two_channels_fold_into_a_grouped_conv():
    model = _randomize(ConvBNReLUNet(groups2=2))
    _dead_bn_channel(model.bn, 1, 0.3)  # group 0
    _dead_bn_channel(model.bn, 4, 0.7)  # group 1: a grouped conv must lose as many inputs in each group
    with torch.no_grad():
        before = model(X)
        report = fold_constant_channels(model, X, {"bn": {1: 0.3, 4: 0.7}})
        after = model(X)
    assert model.conv2.in_channels == 4 and model.conv2.weight.shape == (4, 2, 1, 1)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert report.num_removed == 2 and report.num_exact == 2


def _residual():
    model = _randomize(ResidualNet())
    _dead_bn_channel(model.bn2, 2, 0.5)
    return model


def _plain():
    model = _randomize(ConvBNReLUNet())
    _dead_bn_channel(model.bn, 1, 0.5)
    return model


@pytest.mark.parametrize(
    "make, constants, match",
    [
        (_residual, {"bn2": {2: 0.5}}, "add"),
        (_plain, {"bnn": {1: 0.5}}, "did you mean 'bn'"),
        (_plain, {"conv2": {0: 0.0}}, "network output"),
        (_plain, {"bn": {6: 0.5}}, "out of range"),
        (_plain, {"bn": {1: 0.5}, "act": {1: 0.5}}, "same channel"),
        (lambda: _randomize(ConvBNReLUNet(groups2=2)), {"bn": {1: 0.5}}, "grouped conv"),  # refused by the surgery
    ],
    ids=["residual-add", "unknown-module", "network-output", "out-of-range", "same-unit-twice", "uneven-groups"],
)
def test_refusal_leaves_model_unchanged(make, constants, match):
    model = make()
    snap = _snapshot(model)
    with pytest.raises(PruningError, match=match):
        fold_constant_channels(model, X, constants)
    _assert_unchanged(model, snap)
