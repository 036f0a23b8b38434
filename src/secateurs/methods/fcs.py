"""Feature-channel similarity (Yang & Xiao, Applied Intelligence 2022,
doi:10.1007/s10489-022-03403-9; see docs/methods.md): a channel whose feature map another
channel of similar strength already carries is redundant, whatever its own magnitude.

Per prunable channel group, on ``calib_samples`` seeded training samples:

1. the group's feature maps F, after the producer's BN and activation (for a residual
   stream: every producer's map as it goes into the add, concatenated);
2. ``a_c``: the mean over samples of ``||F[:, c]||_1``, binned by 1-D K-means into
   ``K = max(2, round(C / channels_per_bin))`` bins (seeded, so the bins are reproducible);
3. within a bin, the cosine similarity of channels' flattened maps over all samples;
4. greedy removal: the channel most similar to another kept channel of its bin goes first
   (ties: the weaker ``a_c``), similarities recomputed over the channels still kept.

The maps are never stored: one pass accumulates each producer's Gram matrix ``F F^T`` and
its L1 sums batch by batch, so memory is ``C x C`` per layer whatever the sample count.

The removal order becomes unit scores the budget solver ranks across groups: the k-th
removal of a group scores ``1 - min(sim_1..sim_k)`` (monotone along the greedy order, and
comparable across groups because cosine similarity is scale-free). A bin's last channel
has no one to be similar to, so similarity never empties a bin; when a target needs more
channels than similarity offers, the rest follow in increasing ``a_c`` and score above every
similarity removal (``3 + a_c / mean(a)``). A channel whose map is zero on every sample is
exactly redundant and goes before all of them.

How many channels each group loses is the budget solver's ranking of those scores across
groups (``allocation=similarity``). Post-activation maps are non-negative, so their cosines
are never negative, and on resnet20 the last residual stream scores as the most alike: in
global scope it kept 33 of 64 channels where ``l1`` kept 52
(``benchmarks/results/cut_only_resnet20.md``). ``allocation=feature_l1`` takes each group's
count from a global ranking of ``a_c / mean(a)`` instead -- the feature-map L1 that FCS bins
by, normalised per group as ``feature-l1`` is per layer -- while similarity still decides which
channels of the group go: the k-th channel of a group's greedy order gets the group's k-th
smallest ``a_c / mean(a)`` as its score, so the solver sees each group's feature-L1 values.

Where a group is a residual stream, its maps are the stream as the next layers read it:
each add's output after the activation that follows it (option ``stream=after_add``). A
branch's output before the add is never read by anyone but the add, so judging the stream's
channels by it scores what the network does not use; ``stream=before_add`` keeps that
reading for comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .._types import check_field_types
from ..errors import ConfigError
from ..graph import ChannelGroup, cut
from ._context import RoundContext, RoundOutcome
from ._features import accumulate, collect_calibration
from ._merge import merge_edits, merged_into_partners
from ._registry import ScoreContext, UnitScores, get_method, register_method
from ._round import agree, score_and_cut, solve_round
from ._similarity import cosine, greedy_order, kmeans_bins

#: Added per greedy step so that ties keep the greedy order through the solver's sort.
_STEP = 1e-9
#: Above every similarity score (1 - cosine <= 2): channels taken only when the bins are down to one each.
_FALLBACK = 3.0
#: Below every similarity score (1 - cosine >= 0): channels whose maps are all zero.
_DEAD = -1.0
STREAMS = ("after_add", "before_add")
ALLOCATIONS = ("similarity", "feature_l1")


@dataclass(frozen=True)
class FCSOptions:
    """``bins``: K-means bins per group (None: ``max(2, round(C / channels_per_bin))``)."""

    bins: int | None = None
    channels_per_bin: int = 8
    kmeans_restarts: int = 4
    #: Where a residual stream's maps are taken: "after_add", the stream the next layers read
    #: (after each add and its activation), or "before_add", each branch's output as it enters
    #: the add (the first version's reading, kept for comparison).
    stream: str = "after_add"
    #: Fold each removed channel into the partner it went for, in the layers that read it
    #: (:mod:`._merge`): off by default, the paper's plain removal (see docs/methods.md).
    merge: bool = False
    #: What sets each group's count in global scope: "similarity" (the removal scores
    #: themselves) or "feature_l1" (a global ranking of the feature L1 ``a_c / mean(a)``;
    #: similarity still picks the channels). Layer scope gives every group the same fraction
    #: either way.
    allocation: str = "similarity"

    def __post_init__(self) -> None:
        check_field_types(self, "fcs option")
        if self.bins is not None and self.bins < 1:
            raise ConfigError(f"fcs option bins must be a positive integer or null, got {self.bins!r}")
        if self.channels_per_bin < 1:
            raise ConfigError(f"fcs option channels_per_bin must be a positive integer, got {self.channels_per_bin!r}")
        if self.stream not in STREAMS:
            raise ConfigError(f"fcs option stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if self.merge and self.stream != "after_add":
            raise ConfigError(
                f"fcs option merge folds a removed channel into its partner's readers, which read the "
                f"stream after the add; stream={self.stream!r} would pair channels by maps those readers "
                "never see: keep stream=after_add (the default) with merge=true"
            )
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"fcs option allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.kmeans_restarts < 1:
            raise ConfigError(f"fcs option kmeans_restarts must be a positive integer, got {self.kmeans_restarts!r}")

    def bin_count(self, channels: int) -> int:
        return self.bins if self.bins is not None else max(2, round(channels / self.channels_per_bin))


@dataclass
class FeatureStats:
    """Per producer role: the Gram matrix of its channels' flattened maps, their L1 sums, the sample count."""

    gram: dict[tuple[str, str], torch.Tensor]
    l1: dict[tuple[str, str], torch.Tensor]
    samples: int


def feature_stats(ctx: ScoreContext) -> FeatureStats:
    """One pass over the calibration batches; nothing larger than one batch is kept."""
    gram: dict[tuple[str, str], torch.Tensor] = {}
    l1: dict[tuple[str, str], torch.Tensor] = {}

    def reduce(role: tuple[str, str], x: torch.Tensor) -> None:
        f = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)  # C x (N * positions)
        accumulate(gram, role, (f @ f.T).double().cpu())
        accumulate(l1, role, f.abs().sum(1).double().cpu())

    through_adds = ctx.options.stream == "after_add"
    return FeatureStats(gram, l1, collect_calibration(ctx, reduce, "fcs", through_adds))


def group_features(group: ChannelGroup, stats: FeatureStats) -> tuple[torch.Tensor, torch.Tensor]:
    """The group's units' Gram matrix and ``a`` (mean L1 per sample), over every collected role.

    A unit's map is the concatenation of its maps in every collected role; a unit with no
    collected map has ``a = nan``.
    """
    n = group.size
    gram = torch.zeros(n, n, dtype=torch.float64)
    a = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.bool)
    by_role: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for ui, unit in enumerate(group.units):
        for m in unit.members:
            role = (m.module, m.kind)
            if role in stats.gram:
                units, channels = by_role.setdefault(role, ([], []))
                units.append(ui)
                channels.append(m.index)
    for role, (units, channels) in by_role.items():
        u, c = torch.tensor(units), torch.tensor(channels)
        gram[u[:, None], u[None, :]] += stats.gram[role][c[:, None], c[None, :]]
        a[u] += stats.l1[role][c] / max(stats.samples, 1)
        seen[u] = True
    a[~seen] = float("nan")
    return gram, a


def fcs_group_plan(
    gram: torch.Tensor, a: torch.Tensor, options: FCSOptions, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unit of a group: its score (lowest first to go), the partner it goes for (the
    kept bin-mate most similar to it when it went; -1 for a channel that goes for another
    reason), and the least-squares scale of the partner's map onto its own,
    ``<F_c, F_k> / <F_k, F_k>`` (what :mod:`._merge` folds into the partner's readers)."""
    n = gram.shape[0]
    scores = torch.full((n,), float("inf"), dtype=torch.float64)
    partner_of = torch.full((n,), -1, dtype=torch.long)
    scale = torch.zeros(n, dtype=torch.float64)
    if not (torch.isfinite(gram).all() and torch.isfinite(a[~torch.isnan(a)]).all()):
        raise ConfigError(
            "fcs: the calibration feature maps hold non-finite values (nan or inf); check the model "
            "and the data's normalisation"
        )
    seen = (~torch.isnan(a)).nonzero().flatten()
    # A channel whose map is zero on every sample is exactly redundant: it goes first, below
    # every similarity score (its cosine with anything would read 0, i.e. "unlike all").
    dead = seen[gram.diagonal()[seen] <= 0]
    for k, i in enumerate(dead.tolist()):
        scores[i] = _DEAD + k * _STEP
    known = seen[gram.diagonal()[seen] > 0]
    if len(known) == 0:
        return scores, partner_of, scale
    g, av = gram[known[:, None], known[None, :]], a[known]
    bins = torch.from_numpy(kmeans_bins(av.numpy(), options.bin_count(len(known)), seed, options.kmeans_restarts))
    order, sims, partners = greedy_order(cosine(g), bins, av)
    running = np.minimum.accumulate(np.asarray(sims)) if sims else np.zeros(0)
    for k, (i, m, j) in enumerate(zip(order, running, partners)):
        scores[known[i]] = 1.0 - m + k * _STEP
        partner_of[known[i]] = known[j]
        scale[known[i]] = g[i, j] / g[j, j]
    rest = sorted(set(range(len(known))) - set(order), key=lambda i: (float(av[i]), i))
    mean = float(av.mean()) or 1.0
    for k, i in enumerate(rest):
        scores[known[i]] = _FALLBACK + float(av[i]) / mean + k * _STEP
    if options.allocation == "feature_l1":
        scores[seen] = feature_l1_allocation(scores[seen], a[seen])
    return scores, partner_of, scale


def feature_l1_allocation(scores: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``scores``' order with ``a / mean(a)``'s values: the k-th unit to go gets the k-th
    smallest value, so a group loses as many units as a global feature-L1 ranking would take
    from it, in the order ``scores`` give (``k * _STEP`` keeps that order through ties)."""
    mean = float(a.mean())
    values = torch.sort(a / (mean if mean > 0 else 1.0)).values
    out = torch.empty_like(scores)
    out[torch.sort(scores, stable=True).indices] = values + _STEP * torch.arange(len(values), dtype=values.dtype)
    return out


def group_plans(ctx: ScoreContext) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`fcs_group_plan` of every prunable group, from one pass over the calibration data."""
    stats = feature_stats(ctx)
    return {
        gi: fcs_group_plan(*group_features(group, stats), ctx.options, ctx.seed + gi)
        for gi, group in enumerate(ctx.graph.groups)
        if group.prunable
    }


def fcs_round(ctx: RoundContext) -> RoundOutcome:
    """The default round (score, solve, cut) with, under ``merge``, each removed channel
    folded into its partner's readers just before the cut."""
    if not ctx.options.merge:
        return score_and_cut(get_method("fcs"), ctx)
    plans = group_plans(ctx)
    device = ctx.example.device
    scores = agree({gi: p[0] for gi, p in plans.items()}, device)
    partners = agree({gi: torch.stack([p[1].double(), p[2]]) for gi, p in plans.items()}, device)
    plan = solve_round(ctx, scores)
    modules = dict(ctx.model.named_modules())
    edits, merged, unmergeable = merge_edits(ctx.graph, plan.units, scores, partners, modules)
    scored_at = time.perf_counter()
    with merged_into_partners(ctx.model, edits):
        calls = cut(ctx.model, ctx.graph, plan.units, ctx.example)
    details = {"merged": merged, "not_mergeable": unmergeable}
    return RoundOutcome(len(plan.units), plan.note, details=details, scored_at=scored_at, calls=calls)


@register_method(
    "fcs",
    "feature-channel similarity: cosine-similar channels within K-means bins of feature L1 go "
    "first (Yang & Xiao, Appl. Intell. 2022)",
    options=FCSOptions,
    needs_data=True,
    unit_scores=True,
    prune_round=fcs_round,
)
def fcs(ctx: ScoreContext) -> UnitScores:
    return {gi: plan[0] for gi, plan in group_plans(ctx).items()}
