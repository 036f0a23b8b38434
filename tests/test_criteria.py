"""The scoring criteria and the unit scores against hand computations.

Every reference here is written out as literal numbers or computed with plain Python
loops over the weights (``tolist()``), not with the torch expression the criterion uses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from engine_models import randomise

import secateurs
from secateurs import ConfigError
from secateurs.methods import METHODS, ScoreContext, get_method, list_methods
from secateurs.select import unit_scores

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = torch.zeros(1, 2, 8, 8)


# --- helpers ----------------------------------------------------------------------------


def rows(conv: nn.Module) -> list[list[float]]:
    """The filters of ``conv`` as Python lists, one per output channel."""
    return [[float(v) for v in torch.flatten(f).tolist()] for f in conv.weight.detach()]


def set_rows(conv: nn.Module, values: list[list[float]]) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(values, dtype=conv.weight.dtype).reshape(conv.weight.shape))


def quantile(values: list[float], q: float) -> float:
    """NumPy's default (linear) quantile, written out: position (n - 1) * q in the sorted values."""
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def capped_reference(filters: list[list[float]], alpha: float, q: float) -> list[float]:
    """The l1-capped score of docs/methods.md with eps the q-quantile of the layer's |weights|."""
    eps = quantile([abs(v) for f in filters for v in f], q)
    l1 = [sum(abs(v) for v in f) for f in filters]
    cap = [sum(min(abs(v), eps) for v in f) for f in filters]
    mean_l1, mean_cap = sum(l1) / len(l1), sum(cap) / len(cap)
    return [alpha * a / mean_l1 + (1 - alpha) * c / mean_cap for a, c in zip(l1, cap)]


def scores_of(name: str, model: nn.Module, options: dict | None = None, example: torch.Tensor = EXAMPLE, **ctx) -> dict:
    method = get_method(name)
    graph = secateurs.trace(model, example)
    return method.score(ScoreContext(model, graph, method.make_options(options), **ctx))


def small_net(seed: int = 0) -> nn.Sequential:
    """conv(2->4) BN ReLU conv(4->3) BN ReLU pool flatten linear(3->5): two prunable convs
    ("0" and "3"); the head's outputs are the network output and are not scored."""
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 3, 1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 5),
    )
    randomise(m, seed)
    return m


# --- the registry -----------------------------------------------------------------------


def test_every_documented_criterion_is_registered():
    assert {"l1", "l2", "l1-capped", "fpgm", "bn-scale", "feature-l1", "random"} <= set(list_methods())
    assert list_methods() == sorted(METHODS)


def test_unknown_method_names_close_matches():
    with pytest.raises(ConfigError) as e:
        get_method("l1-caped")
    assert "'l1-capped'" in str(e.value)


# --- l1 / l2 ----------------------------------------------------------------------------


def test_l1_and_l2_are_the_filter_norms():
    m = small_net()
    l1, l2 = scores_of("l1", m), scores_of("l2", m)
    assert set(l1) == set(l2) == {("0", "out"), ("3", "out")}  # the head's outputs are the network output
    for layer in ("0", "3"):
        filters = rows(m[int(layer)])
        assert l1[(layer, "out")].tolist() == pytest.approx([sum(abs(v) for v in f) for f in filters], rel=1e-6)
        assert l2[(layer, "out")].tolist() == pytest.approx(
            [math.sqrt(sum(v * v for v in f)) for f in filters], rel=1e-6
        )


def test_l1_on_literal_filters():
    m = nn.Sequential(nn.Conv2d(1, 3, (1, 2), bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    set_rows(m[0], [[1.0, -2.0], [0.5, 0.25], [-3.0, 0.0]])
    got = scores_of("l1", m, example=torch.zeros(1, 1, 4, 4))
    assert set(got) == {("0", "out")}
    assert got[("0", "out")].tolist() == pytest.approx([3.0, 0.75, 3.0])


# --- l1-capped --------------------------------------------------------------------------

# Filter A: one huge weight, the rest tiny. B: moderate everywhere, lower L1 than A but a
# higher capped L1. C: small everywhere. |weights| sorted:
# .02 .05 .1 .3 .4 .5 .6 1.1 1.2 1.4 1.5 9 -> median eps = (.5 + .6) / 2 = .55
A = [9.0, 0.05, -0.1, 0.02]
B = [1.5, -1.2, 1.1, 1.4]
C = [0.4, 0.3, -0.6, 0.5]


def capped_net() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 3, 2, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    set_rows(m[0], [A, B, C])
    return m


CAPPED_EXAMPLE = torch.zeros(1, 1, 8, 8)


def test_capped_reference_by_hand():
    """The hand reference itself, on the numbers worked out in the comment above."""
    assert quantile([abs(v) for v in A + B + C], 0.5) == pytest.approx(0.55)
    assert quantile([abs(v) for v in A + B + C], 0.5) == pytest.approx(float(np.quantile(np.abs(A + B + C), 0.5)))
    assert quantile([abs(v) for v in A + B + C], 0.3) == pytest.approx(float(np.quantile(np.abs(A + B + C), 0.3)))
    # L1 = 9.17, 5.2, 1.8 (mean 5.39); capL1 = .72, 2.2, 1.75 (mean 4.67 / 3)
    expected = [
        0.5 * 9.17 / 5.39 + 0.5 * 0.72 * 3 / 4.67,
        0.5 * 5.2 / 5.39 + 0.5 * 2.2 * 3 / 4.67,
        0.5 * 1.8 / 5.39 + 0.5 * 1.75 * 3 / 4.67,
    ]
    assert capped_reference([A, B, C], 0.5, 0.5) == pytest.approx(expected)


def test_plain_l1_ranks_the_spiky_filter_first():
    l1 = scores_of("l1", capped_net(), example=CAPPED_EXAMPLE)[("0", "out")].tolist()
    assert l1 == pytest.approx([9.17, 5.2, 1.8], rel=1e-6)
    assert l1[0] > l1[1] > l1[2]  # A > B > C


@pytest.mark.parametrize(
    "alpha, q", [(0.5, 0.5), (0.2, 0.5), (0.8, 0.5), (0.5, 0.3), (0.0, 0.9), (1.0, 0.5), (0.5, 1.0)]
)
def test_l1_capped_is_the_documented_formula(alpha, q):
    m = capped_net()
    got = scores_of("l1-capped", m, {"alpha": alpha, "q": q}, example=CAPPED_EXAMPLE)
    assert set(got) == {("0", "out"), ("3", "out")}
    for layer in ("0", "3"):  # each layer's eps is its own quantile
        expected = capped_reference(rows(m[int(layer)]), alpha, q)
        assert got[(layer, "out")].tolist() == pytest.approx(expected, rel=1e-5)
        order = sorted(range(len(expected)), key=lambda j: -expected[j])
        assert sorted(range(len(expected)), key=lambda j: -float(got[(layer, "out")][j])) == order


@pytest.mark.parametrize("alpha, order", [(0.5, [1, 0, 2]), (0.2, [1, 2, 0]), (0.8, [0, 1, 2]), (1.0, [0, 1, 2])])
def test_the_cap_lifts_the_filter_that_is_moderate_everywhere(alpha, order):
    """With enough weight on the capped term, B outranks A although its L1 is lower (alpha 0.5:
    A 1.082, B 1.189, C .729); at alpha 0.2 even C does (A .710, B 1.323, C .966)."""
    got = scores_of("l1-capped", capped_net(), {"alpha": alpha}, example=CAPPED_EXAMPLE)[("0", "out")]
    assert sorted(range(3), key=lambda j: -float(got[j])) == order


def test_l1_capped_scale_unpruned_scores_against_the_unpruned_layer_by_hand():
    """C removed from layer "0" (as a round would), and layer "3" left reading A and B: with
    scale "unpruned" A and B keep their unpruned scores (eps .55, mean L1 5.39, mean capL1
    4.67 / 3, from A, B and C), with "current" they are rescaled by their own (eps 1.15, the
    median of A's and B's |weights|)."""
    unpruned = capped_net()
    pruned = capped_net()
    pruned[0], pruned[1] = nn.Conv2d(1, 2, 2, bias=False), nn.BatchNorm2d(2)
    set_rows(pruned[0], [A, B])
    pruned[3] = nn.Conv2d(2, 4, 1, bias=False)
    with torch.no_grad():
        pruned[3].weight.copy_(unpruned[3].weight[:, :2])
    graph_kw = dict(example=CAPPED_EXAMPLE)
    by_unpruned = scores_of("l1-capped", pruned, {"scale": "unpruned"}, unpruned=unpruned, **graph_kw)[("0", "out")]
    assert by_unpruned.tolist() == pytest.approx(capped_reference([A, B, C], 0.5, 0.5)[:2], rel=1e-6)
    current = scores_of("l1-capped", pruned, {"scale": "current"}, **graph_kw)[("0", "out")]
    assert current.tolist() == pytest.approx(capped_reference([A, B], 0.5, 0.5), rel=1e-6)
    # without the unpruned network (a direct call) the layer is its own scale
    alone = scores_of("l1-capped", pruned, {"scale": "unpruned"}, **graph_kw)[("0", "out")]
    assert torch.equal(alone, current)
    # layer "3" lost an input: its unpruned per-weight means are scaled to the shorter filters
    w3, w3_0 = rows(pruned[3]), rows(unpruned[3])
    per_weight = sum(abs(v) for f in w3_0 for v in f) / sum(len(f) for f in w3_0)
    eps = quantile([abs(v) for f in w3_0 for v in f], 0.5)
    per_weight_cap = sum(min(abs(v), eps) for f in w3_0 for v in f) / sum(len(f) for f in w3_0)
    expected = [
        0.5 * sum(abs(v) for v in f) / (per_weight * 2) + 0.5 * sum(min(abs(v), eps) for v in f) / (per_weight_cap * 2)
        for f in w3
    ]
    got3 = scores_of("l1-capped", pruned, {"scale": "unpruned"}, unpruned=unpruned, **graph_kw)[("3", "out")]
    assert got3.tolist() == pytest.approx(expected, rel=1e-6)


def test_l1_capped_scale_unpruned_keeps_the_unpruned_network_through_the_run():
    from secateurs.pipeline import PruneConfig

    plan = PruneConfig(method="l1-capped", macs_reduction=0.5, method_options={"scale": "unpruned"}).plan
    assert plan.keeps_unpruned and not PruneConfig(method="l1-capped", macs_reduction=0.5).plan.keeps_unpruned
    with pytest.raises(secateurs.ConfigError, match="scale must be one of current, unpruned, got 'first'"):
        get_method("l1-capped").make_options({"scale": "first"})


def test_l1_capped_defaults_are_alpha_and_q_one_half():
    m = capped_net()
    default = scores_of("l1-capped", m, example=CAPPED_EXAMPLE)[("0", "out")].tolist()
    assert default == pytest.approx(capped_reference([A, B, C], 0.5, 0.5), rel=1e-6)
    assert get_method("l1-capped").rounds == 3


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"q": 0}, "q"),
        ({"q": 1.5}, "q"),
        ({"alpha": "high"}, "l1-capped"),
    ],
)
def test_bad_l1_capped_options_are_refused(options, needle):
    with pytest.raises(ConfigError) as e:
        get_method("l1-capped").make_options(options)
    assert needle in str(e.value)


def test_unknown_option_names_are_refused_by_name():
    with pytest.raises(ConfigError) as e:
        get_method("l1-capped").make_options({"alpha": 0.5, "beta": 1})
    assert "beta" in str(e.value) and "alpha" in str(e.value)  # names the bad one and the valid ones
    with pytest.raises(ConfigError) as e:
        get_method("l1").make_options({"alpha": 0.5})
    assert "alpha" in str(e.value)


def test_option_edges_are_accepted():
    o = get_method("l1-capped").make_options({"alpha": 0, "q": 1})
    assert (o.alpha, o.q) == (0, 1)
    o = get_method("l1-capped").make_options({"alpha": 1.0, "q": 1e-6})
    assert (o.alpha, o.q) == (1.0, 1e-6)


# --- fpgm -------------------------------------------------------------------------------


def test_fpgm_is_the_summed_distance_to_the_other_filters():
    m = small_net(1)
    got = scores_of("fpgm", m)
    assert set(got) == {("0", "out"), ("3", "out")}
    for layer in ("0", "3"):
        f = rows(m[int(layer)])
        expected = [
            sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(f[i], f[j]))) for j in range(len(f))) for i in range(len(f))
        ]
        assert got[(layer, "out")].tolist() == pytest.approx(expected, rel=1e-5)


def test_fpgm_three_filters_on_a_line():
    """p, p + d, p + 2d with |d| = 1: summed distances 3, 2, 3 -- the middle one is the most
    replaceable and scores lowest."""
    m = nn.Sequential(nn.Conv2d(1, 3, (1, 2), bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    set_rows(m[0], [[0.3, -0.2], [0.9, 0.6], [1.5, 1.4]])
    got = scores_of("fpgm", m, example=torch.zeros(1, 1, 4, 4))[("0", "out")].tolist()
    assert got == pytest.approx([3.0, 2.0, 3.0], rel=1e-6)
    assert min(range(3), key=lambda j: got[j]) == 1


# --- bn-scale ---------------------------------------------------------------------------


def test_bn_scale_is_the_absolute_gamma():
    m = small_net()
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([0.5, -2.0, 0.1, -0.3]))
        m[4].weight.copy_(torch.tensor([-1.0, 0.25, 0.0]))
    got = scores_of("bn-scale", m)
    assert set(got) == {("1", "bn"), ("4", "bn")}
    assert got[("1", "bn")].tolist() == pytest.approx([0.5, 2.0, 0.1, 0.3])
    assert got[("4", "bn")].tolist() == pytest.approx([1.0, 0.25, 0.0])


# --- random -----------------------------------------------------------------------------


def test_random_is_seeded():
    m = small_net()
    a, b, c = (scores_of("random", m, seed=s) for s in (3, 3, 4))
    assert set(a) == {("0", "out"), ("3", "out")}
    assert [len(a[k]) for k in sorted(a)] == [4, 3]
    for k in a:
        assert torch.equal(a[k], b[k])
        assert all(0 <= v < 1 for v in a[k].tolist())
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert not get_method("random").normalise  # compared across layers as they are


def test_random_ignores_the_weights():
    a = scores_of("random", small_net(0), seed=5)
    b = scores_of("random", small_net(1), seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- feature-l1 -------------------------------------------------------------------------


def _channel_l1(maps: torch.Tensor) -> list[list[float]]:
    """Per sample, per channel: the L1 norm of the map, by loops."""
    return [[sum(abs(v) for row in ch for v in row) for ch in sample] for sample in maps.tolist()]


def _mean_over_samples(per_sample: list[list[float]]) -> list[float]:
    return [sum(s[c] for s in per_sample) / len(per_sample) for c in range(len(per_sample[0]))]


def test_feature_l1_is_the_mean_map_norm_after_bn_and_relu():
    m = small_net(2).train()
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(3, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)]
    stats = {k: v.clone() for k, v in m.state_dict().items()}
    got = scores_of("feature-l1", m, calibration=lambda: iter(batches))
    assert set(got) == {("1", "bn"), ("4", "bn")}  # the BN role wins the conv's point
    # the reference: the modules run by hand, BN in eval mode
    per1, per2 = [], []
    m.eval()
    with torch.no_grad():
        for x in batches:
            h1 = F.relu(m[1](m[0](x)))
            h2 = F.relu(m[4](m[3](h1)))
            per1 += _channel_l1(h1)
            per2 += _channel_l1(h2)
    assert got[("1", "bn")].tolist() == pytest.approx(_mean_over_samples(per1), rel=1e-5)
    assert got[("4", "bn")].tolist() == pytest.approx(_mean_over_samples(per2), rel=1e-5)
    # calibration ran in eval mode and left the model as it was
    assert all(torch.equal(v, stats[k]) for k, v in m.state_dict().items())


def test_feature_l1_restores_training_mode():
    m = small_net(2).train()
    scores_of("feature-l1", m, calibration=lambda: iter([torch.randn(2, 2, 8, 8)]))
    assert all(mod.training for mod in m.modules())


def test_feature_l1_without_bn_takes_the_map_after_the_activation():
    g = torch.Generator().manual_seed(3)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 3, 1),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 5),
    )
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)
    x = torch.randn(4, 2, 8, 8, generator=g)
    got = scores_of("feature-l1", m, calibration=lambda: iter([x]))
    assert set(got) == {("0", "out"), ("2", "out")}
    with torch.no_grad():
        h1 = F.relu(m[0](x))
        h2 = F.relu6(m[2](h1))
    assert got[("0", "out")].tolist() == pytest.approx(_mean_over_samples(_channel_l1(h1)), rel=1e-5)
    assert got[("2", "out")].tolist() == pytest.approx(_mean_over_samples(_channel_l1(h2)), rel=1e-5)


def test_feature_l1_needs_calibration_data():
    assert get_method("feature-l1").needs_data
    with pytest.raises(ConfigError, match="calibration"):
        scores_of("feature-l1", small_net())


# --- unit scores ------------------------------------------------------------------------


class TwoIntoOne(nn.Module):
    """A residual block: ``stem`` and ``conv2`` add into one stream, ``conv1`` stands alone."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5)
        self.conv2, self.bn2 = nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = F.relu(self.bn0(self.stem(x)))
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(s)))))
        return self.head(F.relu(s + y).mean((2, 3)))


@pytest.fixture
def residual():
    g = torch.Generator().manual_seed(11)
    m = TwoIntoOne()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m, secateurs.trace(m, EXAMPLE)


def _position(graph, module, kind, index):
    group, ui = graph.locate(module, kind, index)
    return graph.groups.index(group), ui


def _check_unit_scores(graph, got, layer_values, stream_layers, alone_layer, normalise):
    """``layer_values``: {module: Python list of raw scores}."""

    def norm(v):
        if not normalise:
            return list(v)
        mean = sum(abs(a) for a in v) / len(v)
        return [a / mean for a in v]

    n = {k: norm(v) for k, v in layer_values.items()}
    (kind_a, kind_b) = stream_layers[1]
    stream_gi, _ = _position(graph, stream_layers[0][0], kind_a, 0)
    alone_gi, _ = _position(graph, alone_layer[0], alone_layer[1], 0)
    assert stream_gi != alone_gi
    assert set(got) == {stream_gi, alone_gi}  # no score for the input and output groups
    a, b = stream_layers[0]
    for j in range(4):
        gi, ui = _position(graph, a, kind_a, j)
        assert (gi, ui) == _position(graph, b, kind_b, j)  # the add ties channel j of both
        assert float(got[gi][ui]) == pytest.approx((n[a][j] + n[b][j]) / 2, rel=1e-5)
    for j in range(5):
        gi, ui = _position(graph, *alone_layer, j)
        assert float(got[gi][ui]) == pytest.approx(n[alone_layer[0]][j], rel=1e-5)


def test_unit_score_is_the_mean_of_the_normalised_layer_scores(residual):
    m, graph = residual
    method = get_method("l1")
    got = unit_scores(graph, method.score(ScoreContext(m, graph, method.make_options())))
    l1 = {name: [sum(abs(v) for v in f) for f in rows(getattr(m, name))] for name in ("stem", "conv1", "conv2")}
    _check_unit_scores(graph, got, l1, (("stem", "conv2"), ("out", "out")), ("conv1", "out"), normalise=True)


def test_unit_scores_of_batchnorm_roles(residual):
    m, graph = residual
    method = get_method("bn-scale")
    got = unit_scores(graph, method.score(ScoreContext(m, graph, method.make_options())))
    gammas = {name: [abs(v) for v in getattr(m, name).weight.tolist()] for name in ("bn0", "bn1", "bn2")}
    _check_unit_scores(graph, got, gammas, (("bn0", "bn2"), ("bn", "bn")), ("bn1", "bn"), normalise=True)


def test_unit_scores_without_normalisation(residual):
    m, graph = residual
    method = get_method("random")
    layer = method.score(ScoreContext(m, graph, method.make_options(), seed=9))
    got = unit_scores(graph, layer, normalise_layers=False)
    raw = {name: layer[(name, "out")].tolist() for name in ("stem", "conv1", "conv2")}
    _check_unit_scores(graph, got, raw, (("stem", "conv2"), ("out", "out")), ("conv1", "out"), normalise=False)


def test_normalisation_makes_layer_scale_irrelevant(residual):
    """Scaling one layer's weights scales its L1 scores; the unit scores do not move."""
    m, graph = residual
    method = get_method("l1")
    before = unit_scores(graph, method.score(ScoreContext(m, graph, method.make_options())))
    with torch.no_grad():
        m.conv2.weight.mul_(100)
        m.conv1.weight.mul_(0.01)
    after = unit_scores(graph, method.score(ScoreContext(m, graph, method.make_options())))
    assert set(before) == set(after)
    for gi in before:
        assert after[gi].tolist() == pytest.approx(before[gi].tolist(), rel=1e-5)
