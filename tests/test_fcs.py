"""Feature-channel similarity (fcs) against hand computations: the statistics it streams,
the K-means bins, the greedy order, and planted duplicate channels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from engine_models import randomise

import secateurs
from secateurs.methods import ScoreContext, get_method
from secateurs.methods.fcs import (
    FCSOptions,
    cosine,
    fcs_group_plan,
    feature_stats,
    greedy_order,
    group_features,
    kmeans_bins,
)
from secateurs.pipeline import prune

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = torch.zeros(1, 2, 8, 8)


def dup_net(seed: int = 0) -> nn.Sequential:
    """conv(2->8) BN ReLU conv(8->3) BN ReLU pool linear; in the first conv, channels 5 and 7
    are exact copies of channels 1 and 2 (filter and BN)."""
    m = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 3, 1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 5),
    )
    randomise(m, seed)
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.bias.abs_()  # most channels active after the ReLU
        for copy_of, original in ((5, 1), (7, 2)):
            m[0].weight[copy_of] = m[0].weight[original]
            for t in (m[1].weight, m[1].bias, m[1].running_mean, m[1].running_var):
                t[copy_of] = t[original]
    return m


def batches(seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 2, 8, 8, generator=g), torch.randn(4, 2, 8, 8, generator=g)]


def context(model: nn.Module, options: dict | None = None, seed: int = 0) -> ScoreContext:
    method = get_method("fcs")
    data = batches()
    return ScoreContext(model, secateurs.trace(model, EXAMPLE), method.make_options(options), lambda: iter(data), seed)


def group_of(ctx: ScoreContext, module: str) -> int:
    return next(gi for gi, g in enumerate(ctx.graph.groups) if (module, "out") in g.layers)


# --- the streamed statistics --------------------------------------------------------------


def test_gram_and_mean_l1_match_the_maps_by_hand():
    m = dup_net()
    ctx = context(m)
    gi = group_of(ctx, "0")
    gram, a = group_features(ctx.graph.groups[gi], feature_stats(ctx))
    m.eval()
    with torch.no_grad():
        maps = torch.cat([F.relu(m[1](m[0](x))) for x in batches()])  # N x C x H x W, after BN and ReLU
    flat = [[float(v) for v in maps[:, c].flatten().tolist()] for c in range(8)]
    for i in range(8):
        assert float(a[i]) == pytest.approx(sum(abs(v) for v in flat[i]) / maps.shape[0], rel=1e-5)
        for j in range(8):
            dot = sum(p * q for p, q in zip(flat[i], flat[j]))
            assert float(gram[i, j]) == pytest.approx(dot, rel=1e-4, abs=1e-4)
    cos = cosine(gram)
    norm = [math.sqrt(sum(v * v for v in f)) for f in flat]
    assert float(cos[0, 3]) == pytest.approx(
        sum(p * q for p, q in zip(flat[0], flat[3])) / (norm[0] * norm[3]), rel=1e-4
    )
    assert float(cos[1, 5]) == pytest.approx(1.0, abs=1e-6)


class ResBlockNet(nn.Module):
    """stem conv-BN-ReLU -> [conv-BN-ReLU -> conv-BN] + identity -> ReLU -> pool -> linear: one
    residual stream (the stem's channels and the block's second BN, tied by the add)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.branch = nn.Sequential(
            nn.Conv2d(6, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1, bias=False),
            nn.BatchNorm2d(6),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.head(F.relu(s + self.branch(s)))


@pytest.mark.parametrize("stream", ["after_add", "before_add"])
def test_residual_stream_maps_are_the_ones_the_next_layers_read(stream):
    """after_add: the stream's maps are the stem's output and the add's output after its ReLU
    (what the head reads); before_add: the block's BN output as it enters the add."""
    m = ResBlockNet()
    randomise(m, 2)
    ctx = context(m, {"stream": stream})
    gi = group_of(ctx, "stem.0")
    gram, a = group_features(ctx.graph.groups[gi], feature_stats(ctx))
    m.eval()
    with torch.no_grad():
        stem = torch.cat([m.stem(x) for x in batches()])
        out = torch.cat([m.branch(m.stem(x)) for x in batches()])
        second = F.relu(stem + out) if stream == "after_add" else out
    maps = torch.cat([stem.transpose(0, 1).flatten(1), second.transpose(0, 1).flatten(1)], 1).double()
    torch.testing.assert_close(gram, maps @ maps.T, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a, maps.abs().sum(1) / stem.shape[0], rtol=1e-5, atol=1e-5)


# --- binning and the greedy order ------------------------------------------------------------


def test_kmeans_bins_are_deterministic_and_one_dimensional():
    values = np.array([0.1, 0.12, 0.11, 5.0, 5.2, 9.9, 10.0, 0.13])
    first = kmeans_bins(values, 3, seed=4)
    assert np.array_equal(first, kmeans_bins(values, 3, seed=4))
    groups = {tuple(np.flatnonzero(first == b)) for b in set(first)}
    assert groups == {(0, 1, 2, 7), (3, 4), (5, 6)}
    assert kmeans_bins(np.array([2.0, 2.0, 2.0]), 2, seed=0).tolist() == [0, 0, 0]  # one distinct value: one bin


def test_greedy_order_on_a_literal_similarity_matrix():
    """Bins {0, 1, 2} and {3, 4}, {5} alone. By hand: 1 and 2 are the most similar pair (0.9);
    the tie goes to the weaker a (channel 2). Then 0-1 (0.5) beats 3-4 (0.4); of 0 and 1 the
    weaker, 1. Then 3-4: 4 is weaker. Left: one per bin; 5 never goes by similarity."""
    s = torch.tensor(
        [
            [1.0, 0.5, 0.2, 0.0, 0.0, 0.9],
            [0.5, 1.0, 0.9, 0.0, 0.0, 0.0],
            [0.2, 0.9, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.4, 1.0, 0.0],
            [0.9, 0.0, 0.0, 0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )
    bins = torch.tensor([0, 0, 0, 1, 1, 2])
    a = torch.tensor([1.0, 0.9, 0.8, 2.0, 1.5, 0.1], dtype=torch.float64)
    order, sims, partners = greedy_order(s, bins, a)
    assert order == [2, 1, 4]
    assert partners == [1, 0, 3]  # 2 went for 1, then 1 for 0, 4 for 3
    assert sims == pytest.approx([0.9, 0.5, 0.4])


def test_single_channel_bins_are_never_emptied_by_similarity():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(7, 30, generator=g).abs()
    gram = (f @ f.T).double()
    a = torch.tensor([0.1, 0.11, 0.12, 3.0, 7.0, 7.1, 20.0], dtype=torch.float64)
    scores = fcs_group_plan(gram, a, FCSOptions(bins=4), seed=0)[0]
    bins = kmeans_bins(a.numpy(), 4, seed=0)
    singles = [i for i in range(7) if (bins == bins[i]).sum() == 1]
    assert singles == [3, 6]
    order, _, _ = greedy_order(cosine(gram), torch.from_numpy(bins), a)
    assert len(order) == 7 - 4 and not set(order) & set(singles)
    # similarity removals first (scores < 3), then one channel per bin by increasing a
    fallback = sorted(range(7), key=lambda i: float(scores[i]))[3:]
    assert all(float(scores[i]) < 3 for i in order) and all(float(scores[i]) >= 3 for i in fallback)
    assert [float(a[i]) for i in fallback] == sorted(float(a[i]) for i in fallback)
    # along the greedy order the scores rise, so any prefix the solver takes follows the order
    assert [float(scores[i]) for i in order] == sorted(float(scores[i]) for i in order)


def test_scores_are_reproducible_for_a_seed():
    m = dup_net(1)
    first = get_method("fcs").score(context(m, seed=5))
    again = get_method("fcs").score(context(m, seed=5))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_a_dead_channel_goes_before_any_similar_one():
    """A channel whose map is zero on every sample is exactly redundant: it scores below
    every similarity removal, even alone in its bin."""
    g = torch.Generator().manual_seed(2)
    f = torch.randn(6, 40, generator=g).abs()
    f[4] = 0
    f[5] = f[0]  # an exact duplicate pair too
    gram = (f @ f.T).double()
    a = torch.tensor([1.0, 1.1, 5.0, 5.1, 0.0, 1.0], dtype=torch.float64)
    scores = fcs_group_plan(gram, a, FCSOptions(bins=3), seed=0)[0]
    order = torch.argsort(scores).tolist()
    assert order[0] == 4 and set(order[1:2]) <= {0, 5}
    assert float(scores[4]) < 0 <= float(scores[order[1]])


def test_non_finite_features_are_refused():
    gram = torch.eye(3, dtype=torch.float64)
    gram[1, 1] = float("nan")
    with pytest.raises(secateurs.ConfigError, match="non-finite"):
        fcs_group_plan(gram, torch.ones(3, dtype=torch.float64), FCSOptions(), seed=0)


# --- planted duplicates ------------------------------------------------------------------------


def test_one_of_each_duplicate_pair_goes_first():
    m = dup_net()
    ctx = context(m)
    scores = get_method("fcs").score(ctx)[group_of(ctx, "0")]
    first_two = set(torch.argsort(scores)[:2].tolist())
    assert len(first_two & {1, 5}) == 1 and len(first_two & {2, 7}) == 1


def prune_dup(merge: bool) -> tuple[nn.Module, nn.Module, object]:
    """``dup_net`` and its fcs-pruned copy: the floors (70%) leave the first conv two channels
    to lose and the second none; no BN recalibration, which would re-estimate the statistics
    the exactness checks compare."""
    m = dup_net().eval()
    data = secateurs.load_dataset("synthetic", "train", num_samples=16, image_size=8, in_channels=2)
    return m, *prune(
        m,
        "fcs",
        params_reduction=0.3,
        finetune="none",
        train_set=data,
        latency=False,
        evaluate_before=False,
        min_keep_fraction=0.7,
        bn_recalibration=0,
        method_options={"merge": merge},
    )


def test_pruning_two_channels_removes_a_copy_and_keeps_the_outputs():
    """With one of each pair removed and its reader's columns added onto the twin's, the
    network computes the same function: the removed channels were exact copies."""
    x = torch.cat(batches())
    m, pruned, _ = prune_dup(merge=False)
    want = m(x)
    assert pruned[0].out_channels == 6 and pruned[3].in_channels == 6
    # each distinct filter is still there exactly once: one of each identical pair went
    where = {i: [k for k in range(6) if torch.equal(pruned[0].weight[k], m[0].weight[i])] for i in (0, 1, 2, 3, 4, 6)}
    assert all(len(ks) == 1 for ks in where.values()), where
    with torch.no_grad():  # the survivor of a pair reads for both: its column is the sum of the pair's
        for i, twin in ((1, 5), (2, 7)):
            pruned[3].weight[:, where[i][0]] = m[3].weight[:, i] + m[3].weight[:, twin]
    assert torch.allclose(pruned.eval()(x), want, atol=1e-5)


# --- whole models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("name", ["test_resnet", "test_mobilenet_v2"])
def test_every_prunable_group_is_scored_and_the_target_is_met(name, merge):
    """With ``merge`` too: in a ResNet every reader is a dense conv, so removals merge; in a
    MobileNetV2 the expansion channels are read by depthwise convs, which nothing can carry,
    so those are counted as not mergeable and removed as they are."""
    torch.manual_seed(0)
    model = secateurs.create_model(name, num_classes=10, in_channels=3)
    data = secateurs.load_dataset("synthetic", "train", num_samples=32)
    graph = secateurs.trace(model, torch.zeros(1, 3, 32, 32))
    method = get_method("fcs")
    ctx = ScoreContext(model, graph, method.make_options(), lambda: iter([data.images[:16].float() / 255]), 0)
    scores = method.score(ctx)
    assert set(scores) == {gi for gi, g in enumerate(graph.groups) if g.prunable}
    assert all(torch.isfinite(s).all() for s in scores.values())
    _, result = prune(
        model,
        "fcs",
        macs_reduction=0.3,
        finetune="none",
        train_set=data,
        latency=False,
        evaluate_before=False,
        calib_samples=32,
        method_options={"merge": merge},
    )
    assert abs(result.achieved - 0.3) <= 0.01
    details = result.rounds[0].details
    if not merge:
        assert details == {}
    elif name == "test_resnet":
        assert details["merged"] > 0 and details["not_mergeable"] == 0
    else:
        assert details["not_mergeable"] > 0


# --- merging a removed channel into its partner ---------------------------------------------------


def test_merge_folds_each_exact_copy_into_its_twin():
    """The hand-made edit of the test above, done by ``merge``: the removed copies' reader
    columns go onto their twins', so the network computes the same function; without
    ``merge`` it does not."""
    x = torch.cat(batches())
    m, merged, result = prune_dup(merge=True)
    _, plain, _ = prune_dup(merge=False)
    assert merged[0].out_channels == plain[0].out_channels == 6
    assert result.rounds[0].details == {"merged": 2, "not_mergeable": 0}
    assert torch.allclose(merged.eval()(x), m(x), atol=1e-5)
    assert not torch.allclose(plain.eval()(x), m(x), atol=1e-3)


def test_merge_scale_is_the_least_squares_fit_of_the_partner():
    """A channel that is exactly twice another (filter, BN shift and ReLU are positively
    homogeneous) goes with scale 2, the least-squares ``<F_c, F_k> / <F_k, F_k>``."""
    f = torch.rand(3, 50, dtype=torch.float64)
    f[2] = 2 * f[0]
    gram, a = f @ f.T, f.abs().mean(1)
    scores, partner, scale = fcs_group_plan(gram, a, FCSOptions(bins=1), seed=0)
    first = int(torch.argmin(scores))
    assert {first, int(partner[first])} == {0, 2}
    want = float(f[first] @ f[int(partner[first])] / (f[int(partner[first])] @ f[int(partner[first])]))
    assert float(scale[first]) == pytest.approx(want)
    assert float(scale[first]) in (pytest.approx(2.0), pytest.approx(0.5))


def test_a_refused_cut_leaves_the_merged_weights_as_they_were():
    from secateurs.methods._merge import MergeEdit, merged_into_partners

    m = dup_net()
    before = m[3].weight.detach().clone()
    with pytest.raises(RuntimeError, match="refused"), merged_into_partners(m, [MergeEdit("3", 5, 1, 1.0)]):
        assert not torch.equal(m[3].weight, before)  # applied inside
        raise RuntimeError("refused")
    assert torch.equal(m[3].weight, before)


def test_a_merge_that_is_not_a_boolean_is_refused_by_name():
    with pytest.raises(secateurs.ConfigError, match="merge"):
        get_method("fcs").make_options({"merge": "yes"})


def test_merge_on_the_branch_outputs_before_the_add_is_refused():
    """The readers merge edits read the stream after the add: pairing channels by the branch
    outputs before it would fold them by maps those readers never see."""
    with pytest.raises(secateurs.ConfigError, match="stream='before_add'.*keep stream=after_add"):
        get_method("fcs").make_options({"merge": True, "stream": "before_add"})
    assert get_method("fcs").make_options({"merge": True}).stream == "after_add"


# --- allocation: how many channels each group loses in global scope ---------------------------------


def test_feature_l1_allocation_keeps_the_removal_order_and_takes_the_feature_l1_values():
    """By hand: a / mean(a) = [1, 2, 0.5, 0, 1.5], sorted [0, 0.5, 1, 1.5, 2]; the removal
    order of the scores is units 3, 1, 4, 0, 2, and each gets the next value in turn."""
    from secateurs.methods.fcs import _STEP, feature_l1_allocation

    scores = torch.tensor([0.5, 0.1, 3.2, -1.0, 0.3], dtype=torch.float64)
    a = torch.tensor([2.0, 4.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    out = feature_l1_allocation(scores, a)
    want = {3: 0.0, 1: 0.5, 4: 1.0, 0: 1.5, 2: 2.0}
    rank = {3: 0, 1: 1, 4: 2, 0: 3, 2: 4}
    for i, v in want.items():
        assert float(out[i]) == pytest.approx(v + rank[i] * _STEP, abs=1e-15)
    assert torch.equal(torch.argsort(out), torch.argsort(scores))


def test_feature_l1_allocation_takes_the_feature_l1_counts_and_the_similarity_channels():
    """Global scope on a ResNet: each group loses as many units as a global ranking of
    ``a / mean(a)`` would take from it (solved independently from the group's feature L1),
    and the units it loses are the first of similarity's removal order."""
    from secateurs.select import CostModel, solve

    torch.manual_seed(0)
    model = secateurs.create_model("test_resnet", num_classes=10, in_channels=3)
    randomise(model, 0)
    data = secateurs.load_dataset("synthetic", "train", num_samples=32)
    example = torch.zeros(1, 3, 32, 32)
    graph = secateurs.trace(model, example)
    method = get_method("fcs")

    def ctx(options: dict) -> ScoreContext:
        return ScoreContext(model, graph, method.make_options(options), lambda: iter([data.images.float() / 255]), 0)

    similarity = method.score(ctx({}))
    allocated = method.score(ctx({"allocation": "feature_l1"}))
    stats = feature_stats(ctx({}))
    reference = {}
    for gi in similarity:
        a = group_features(graph.groups[gi], stats)[1]
        reference[gi] = torch.where(torch.isnan(a), torch.inf, a / a[~torch.isnan(a)].mean())

    where = {id(u): (gi, ui) for gi, g in enumerate(graph.groups) for ui, u in enumerate(g.units)}

    def removed(scores: dict) -> dict[int, set[int]]:
        plan = solve(graph, scores, CostModel.of(model, example, graph.calls), 0.4, "macs", "global")
        out: dict[int, set[int]] = {gi: set() for gi in scores}
        for u in plan.units:
            gi, ui = where[id(u)]
            out[gi].add(ui)
        return out

    got, want = removed(allocated), removed(reference)
    assert {gi: len(s) for gi, s in got.items()} == {gi: len(s) for gi, s in want.items()}
    assert sum(map(len, got.values())) > 0
    for gi, units in got.items():
        first = torch.argsort(similarity[gi], stable=True)[: len(units)].tolist()
        assert units == set(first)
    assert got != removed(similarity)  # the allocation changed something on this model


def test_an_unknown_allocation_is_refused_with_the_choices():
    with pytest.raises(secateurs.ConfigError, match="allocation must be one of similarity, feature_l1"):
        get_method("fcs").make_options({"allocation": "l1"})
