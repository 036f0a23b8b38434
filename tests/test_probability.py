"""Probability pruning (Zhao et al., J. Comput. Sci. Technol. 2022): the statistics against
SciPy, and planted channels in each of the four depthwise-separable cases removed without changing the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import integrate, stats

import secateurs
from secateurs.methods._gaussian import expected_activation, expected_relu, expected_relu6, prob_nonpositive

GAMMAS = [0.0, 0.05, 0.5, 1.0, 3.0, -0.7]
BETAS = [-4.0, -1.0, -0.1, 0.0, 0.2, 1.5, 5.0, 7.5]
GRID = [(g, b) for g in GAMMAS for b in BETAS]


def _scipy_expectation(f, gamma: float, beta: float) -> float:
    if gamma == 0:
        return f(beta)
    s = abs(gamma)
    # Split at the kinks so quad integrates smooth pieces.
    cuts = sorted({(k - beta) / s for k in (0.0, 3.0, -3.0, 6.0)})
    edges = [-np.inf, *cuts, np.inf]
    return sum(
        integrate.quad(lambda z: f(beta + s * z) * stats.norm.pdf(z), a, b, epsabs=1e-12)[0]
        for a, b in zip(edges, edges[1:])
    )


@pytest.mark.parametrize("gamma, beta", GRID)
def test_probability_matches_scipy(gamma: float, beta: float) -> None:
    p = float(
        prob_nonpositive(torch.tensor([gamma], dtype=torch.float64), torch.tensor([beta], dtype=torch.float64))[0]
    )
    want = (1.0 if beta <= 0 else 0.0) if gamma == 0 else stats.norm.cdf(-beta / abs(gamma))
    assert p == pytest.approx(want, abs=1e-12)


RELU = lambda y: max(y, 0.0)  # noqa: E731
RELU6 = lambda y: min(max(y, 0.0), 6.0)  # noqa: E731
HARDSWISH = lambda y: y * min(max(y + 3.0, 0.0), 6.0) / 6.0  # noqa: E731


@pytest.mark.parametrize("gamma, beta", GRID)
def test_expected_activation_matches_scipy(gamma: float, beta: float) -> None:
    g, b = torch.tensor([gamma], dtype=torch.float64), torch.tensor([beta], dtype=torch.float64)
    assert float(expected_relu(g, b)[0]) == pytest.approx(_scipy_expectation(RELU, gamma, beta), abs=1e-9)
    assert float(expected_relu6(g, b)[0]) == pytest.approx(_scipy_expectation(RELU6, gamma, beta), abs=1e-9)
    # Through the module: closed forms for ReLU/ReLU6, numerical for the rest.
    assert float(expected_activation(nn.ReLU6(), g, b)[0]) == pytest.approx(
        _scipy_expectation(RELU6, gamma, beta), abs=1e-9
    )
    assert float(expected_activation(nn.Hardswish(), g, b)[0]) == pytest.approx(
        _scipy_expectation(HARDSWISH, gamma, beta), abs=1e-6
    )


# --- the four cases of a depthwise separable block ---------------------------------------


class SeparableNet(nn.Module):
    """PW1 -> BN1 -> ReLU -> DW3x3 -> BN2 -> ReLU -> PW2 -> BN3 -> ReLU -> pool -> fc."""

    def __init__(self, width: int = 8, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.pw1, self.bn1, self.act1 = nn.Conv2d(3, width, 1, bias=False), nn.BatchNorm2d(width), act()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(width), act()
        self.pw2, self.bn3, self.act3 = nn.Conv2d(width, 6, 1, bias=False), nn.BatchNorm2d(6), act()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.pw1(x)))
        x = self.act2(self.bn2(self.dw(x)))
        x = self.act3(self.bn3(self.pw2(x)))
        return self.fc(self.pool(x).flatten(1))


def _net(act: type[nn.Module] = nn.ReLU) -> SeparableNet:
    torch.manual_seed(0)
    net = SeparableNet(act=act)
    for bn in (net.bn1, net.bn2, net.bn3):  # live channels: P(y <= 0) = Phi(-1) ~ 0.16
        bn.weight.data.fill_(1.0)
        bn.bias.data.fill_(1.0)
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _dead(bn: nn.BatchNorm2d, c: int, beta: float = -0.5) -> None:
    bn.weight.data[c] = 0.0
    bn.bias.data[c] = beta


def _prune(net: nn.Module, **options):
    return secateurs.prune(net, "probability", input_shape=(3, 16, 16), latency=False, **options)


CASES = {  # channel -> how it is planted; expected case label
    0: ("bn1 and bn2 dead", "yes/yes"),
    2: ("only bn2 dead", "no/yes"),
    5: ("only bn1 dead", "yes/no"),
}


def _planted(act: type[nn.Module] = nn.ReLU) -> SeparableNet:
    net = _net(act)
    _dead(net.bn1, 0), _dead(net.bn2, 0)
    _dead(net.bn2, 2)
    _dead(net.bn1, 5)
    return net


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
def test_planted_dead_channels_in_each_case_are_removed_exactly(act: type[nn.Module]) -> None:
    net = _planted(act)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pruned, report = _prune(net)
    assert report.config["finetune"] is None and report.rounds[0].finetune_epochs == 0  # no fine-tuning by default
    assert pruned.pw1.out_channels == pruned.dw.out_channels == pruned.pw2.in_channels == 8 - len(CASES)
    kept = [c for c in range(8) if c not in CASES]
    assert torch.equal(pruned.pw1.weight, net.pw1.weight[kept])  # exactly the planted ones went
    assert report.rounds[0].details["cases"] == {label: 1 for _, label in CASES.values()}
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), rtol=0, atol=1e-5)


def test_live_channels_stay() -> None:
    net = _net()
    pruned, report = _prune(net)
    assert report.rounds[0].channels_removed == 0 and pruned.pw1.out_channels == 8


@pytest.mark.parametrize("where", ["bn2", "bn3"])
def test_constant_nonzero_channel_is_folded_exactly(where: str) -> None:
    """gamma = 0, beta > 0: the channel is the constant act(beta); removing it with the fold
    leaves the outputs unchanged (the consumer of bn2 is a 1x1 conv; of bn3, the pooled Linear)."""
    net = _net()
    _dead(getattr(net, where), 3, beta=0.7)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    pruned, report = _prune(net)
    assert report.rounds[0].channels_removed == 1
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), rtol=0, atol=1e-5)
        # And the fold is what keeps it so: plain removal (the ablation) moves the outputs.
        unfused, _ = _prune(net, method_options={"fuse": False})
        assert (unfused(x) - net(x)).abs().max() > 1e-3


def test_linear_bottleneck_is_left_alone() -> None:
    """A BN with no ReLU after it (MobileNetV2's projection) is no candidate, however dead."""
    net = secateurs.create_model("test_mobilenet_v2", num_classes=4, in_channels=3).eval()
    proj = net.stages[1].conv[7]  # BN after the projection conv: no activation follows
    assert isinstance(proj, nn.BatchNorm2d)
    proj.weight.data.zero_()
    proj.bias.data.fill_(-1.0)
    _, report = _prune(net, method_options={"tau": 0.999999})
    widths = dict(report.channels_after)
    assert widths["stages.1.conv.6"] == report.channels_before["stages.1.conv.6"]


def _random_bn(net: nn.Module, seed: int) -> None:
    """gamma in [0, 1), beta ~ N(-1, 1): a spread of P(y <= 0) over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g)
            m.bias.data = torch.randn(m.num_features, generator=g) - 1.0


def test_target_mode_solves_tau() -> None:
    net = secateurs.create_model("test_mobilenet_v2", num_classes=4, in_channels=3).eval()
    _random_bn(net, seed=0)
    pruned, report = _prune(net, params_reduction=0.3)
    assert abs(report.achieved - 0.3) <= 0.01
    tau = report.rounds[0].details["tau"]
    assert 0 < tau <= 1
    # Threshold mode at the solved tau removes at least as much (the target stops early on ties).
    _, by_tau = _prune(net, method_options={"tau": tau})
    assert by_tau.achieved >= report.achieved - 1e-9


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "shufflenet_v2", "ghostnet", "vgg16", "resnet20"])
def test_zoo_models_prune_and_run(name: str) -> None:
    """Random BN statistics with some dead channels: every family prunes, runs and stays close
    where only exactly-dead channels were removed."""
    net = secateurs.create_model(name, num_classes=10, in_channels=1).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            dead = torch.rand(m.num_features, generator=g) < 0.2
            m.weight.data = torch.where(dead, 0.0, 0.5 + torch.rand(m.num_features, generator=g))
            m.bias.data = torch.where(dead, -1.0, torch.rand(m.num_features, generator=g))
    x = torch.randn(2, 1, 32, 32, generator=g)
    pruned, report = secateurs.prune(
        net, "probability", input_shape=(1, 32, 32), latency=False, method_options={"tau": 1.0}
    )
    assert report.rounds[0].channels_removed > 0
    assert report.after["params"] < report.before["params"]
    with torch.no_grad():
        want, got = net(x), pruned(x)
    # Exactly dead channels: removal is exact wherever no zero-padded conv reads a folded
    # non-zero constant; allow that border effect but not more.
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() <= 1e-3 * want.abs().max() + 1e-4 or report.rounds[0].details["approximate_at"]


def test_threshold_mode_on_a_grouped_conv_model_never_takes_an_unflagged_unit() -> None:
    """ShuffleNetV1-style grouped convs make the solver take one unit per conv group at a
    time; a step must not smuggle in a unit below tau."""
    net = secateurs.create_model("test_shufflenet_v1", num_classes=4, in_channels=3).eval()
    _random_bn(net, seed=3)
    _, report = _prune(net, method_options={"tau": 0.95})
    assert report.rounds[0].details["tau"] == 0.95


def test_ghost_module_channels_fold_from_the_primary_branch() -> None:
    """In a Ghost module a channel lives in the primary half and (through the cheap DW op)
    in the cheap half of the concat: only a fold from the primary activation reaches both,
    and a channel dead there is removed."""
    net = secateurs.create_model("test_ghostnet", num_classes=4, in_channels=3).eval()
    module = net.stages[0].branch[0]
    primary_bn = module.primary[1]
    primary_bn.weight.data[0] = 0.0
    primary_bn.bias.data[0] = -1.0
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    pruned, report = _prune(net, method_options={"tau": 0.999999})
    assert report.rounds[0].channels_removed >= 1
    assert pruned.stages[0].branch[0].primary[0].out_channels == module.primary[0].out_channels - 1
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), net(x), rtol=0, atol=1e-5)


def test_tau_and_a_target_together_are_refused() -> None:
    with pytest.raises(secateurs.ConfigError, match="tau or a reduction target"):
        _prune(_net(), params_reduction=0.2, method_options={"tau": 0.9})
