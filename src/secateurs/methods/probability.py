"""Probability-based channel pruning from BatchNorm statistics, with shift-factor fusion
(Zhao et al., J. Comput. Sci. Technol. 2022, doi:10.1007/s11390-022-2131-8; see
docs/methods.md). No data and, by default, no fine-tuning.

A BN channel ``y = gamma * xhat + beta`` followed by a ReLU-type activation is zero after
it with probability ``P = Phi(-beta / |gamma|)``. A unit (one removable channel) is
flagged when ``P >= tau`` at any of its BN+activation points. Removing it replaces its
post-activation output by the constant ``E[act(y)]`` taken at the *last* flagged point,
which :func:`secateurs.graph.fold_constant_channels` carries through what follows
(a depthwise conv, its BN and activation) into the next mixing layer's bias or BN mean.
In a depthwise separable block ``PW1 -> BN1 -> act -> DW -> BN2 -> act -> PW2`` this gives
the paper's four cases:

* BN1 and BN2 flag c, or only BN2: fold BN2's expected output into PW2;
* only BN1: the DW input is about constant, so the fold carries ``E[act(BN1)]`` through
  DW, BN2 and the activation into PW2;
* neither: keep.

A channel with ``gamma = 0`` is exactly constant whatever ``beta`` is; it is flagged too
(``P`` is read as 1), since the fold then removes it without changing any output.

Units without such a point (linear bottlenecks, residual streams: BN -> add) are left
alone, as are the groups the engine marks non-prunable.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass

import torch

from .._types import check_field_types
from ..graph import Unit, fold_constant_channels, fold_refusals, remove_units
from ..select import CostModel, LayerScores, solve
from ._context import RoundContext, RoundOutcome, ScoreContext
from ._gaussian import expected_activation, prob_nonpositive
from ._points import Point, activation_after_bn, unit_points
from ._registry import register_method

DEFAULT_TAU = 0.99
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbabilityOptions:
    #: Flag a channel when P(y <= 0) >= tau (default 0.99). Not with a reduction target:
    #: then tau is solved, and the record gives it.
    tau: float | None = None
    fuse: bool = True  # fold the expected value into the next layer (False: plain removal, the ablation)
    #: Read gamma = 0 as P = 1 whatever beta is (the channel is exactly constant and the fold
    #: removes it exactly); False keeps the formula's literal P = 0 for gamma = 0, beta > 0.
    constant_channels: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "probability option")
        if self.tau is not None and not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")


def _probabilities(ctx: ScoreContext) -> tuple[dict[str, tuple[str, int]], dict[str, torch.Tensor]]:
    """The BN -> activation points and ``P(y <= 0)`` per channel of each (BNs without affine
    parameters are no candidates: their output is a unit Gaussian, P = 0.5)."""
    modules = dict(ctx.model.named_modules())
    after = {
        bn: v
        for bn, v in activation_after_bn(ctx.model, ctx.graph).items()
        if modules[bn].weight is not None and modules[bn].bias is not None
    }
    probs = {}
    for bn in after:
        gamma, beta = modules[bn].weight.detach().cpu(), modules[bn].bias.detach().cpu()
        p = prob_nonpositive(gamma, beta)
        if ctx.options.constant_channels:
            # gamma = 0: the channel is exactly the constant act(beta) whatever beta is; the
            # fold removes it exactly, so it is flagged like a channel that is always zero.
            p = torch.where(gamma == 0, 1.0, p)
        probs[bn] = p
    return after, probs


def _solved_tau(units: list, points: dict[int, tuple[list[Point], list[float], list[int]]]) -> float:
    """The tau a reduction target amounts to: the lowest P among the units removed (logged)."""
    tau = min((max(points[id(u)][1][i] for i in points[id(u)][2]) for u in units), default=1.0)
    log.info("probability: solved tau = %.6g (%d channel(s) with P >= tau removed)", tau, len(units))
    return tau


def _threshold_message(tau: float, seen: list[float], removed: int) -> str | None:
    """Log how many units reached ``tau``; when none is removed, the reason, as the round's note
    (a silent zero reads like a bug)."""
    reached = sum(p >= tau for p in seen)
    highest = max(seen, default=None)
    log.info(
        "probability: %d of %d foldable channel(s) reached P >= tau = %g (highest P %s), %d removed",
        reached,
        len(seen),
        tau,
        "n/a" if highest is None else f"{highest:.4f}",
        removed,
    )
    if removed:
        return None
    if highest is None:
        return (
            "no channel removed: no channel has a BatchNorm followed by a ReLU-type activation whose "
            "constant output could be folded forward, so probability has nothing to prune in this model"
        )
    if reached:
        return (
            f"no channel removed: {reached} channel(s) reached P >= tau = {tau:g}, but min_keep_fraction "
            "keeps them all; lower --min-keep-fraction"
        )
    return (
        f"no channel removed: none of the {len(seen)} foldable channel(s) reached P >= tau = {tau:g} (the "
        f"highest P is {highest:.4f}); give --tau below that, or a --macs-reduction / --params-reduction "
        "target and tau is solved"
    )


def _case(flags: list[bool]) -> str:
    return "single" if len(flags) == 1 else "/".join("yes" if f else "no" for f in flags)


#: A unit of a group that could be flagged: (group index, unit index, unit, its BN+activation points).
Candidate = tuple[int, int, Unit, list[Point]]
#: Per flagged unit (by ``id``): its points, P at each, and which of them the fold can start from.
Flagged = dict[int, tuple[list[Point], list[float], list[int]]]


def _candidates(ctx: RoundContext, after: dict[str, tuple[str, int]]) -> tuple[list[Candidate], dict]:
    """The units with BN+activation points, and per (group, points) the indices of the points
    a constant can be folded forward from."""
    candidates = [
        (gi, ui, unit, pts)
        for gi, group in enumerate(ctx.graph.groups)
        if group.prunable
        for ui, unit in enumerate(group.units)
        if (pts := unit_points(unit, after))
    ]
    # The constant must reach every place the unit lives from the point it is folded at:
    # from PW1's activation it passes DW, BN2 and the activation into PW2; from a Ghost
    # module's cheap branch it never reaches the primary half, and from a residual stream
    # (BN -> act -> ... -> add) nowhere. The units of a group share their layers, so one
    # unit per group answers for all of it.
    first: dict[tuple[int, tuple[str, ...]], list[Point]] = {}
    for gi, _, _, pts in candidates:
        first.setdefault((gi, tuple(p.act for p in pts)), pts)
    refused = fold_refusals(
        ctx.model, ctx.example, [(p.act, p.index) for pts in first.values() for p in pts], graph=ctx.graph
    )
    foldable = {key: [i for i, p in enumerate(pts) if (p.act, p.index) not in refused] for key, pts in first.items()}
    return candidates, foldable


def _flag(
    ctx: RoundContext, candidates: list[Candidate], foldable: dict, probs: dict[str, torch.Tensor], tau: float
) -> tuple[dict[int, torch.Tensor], Flagged, list[float]]:
    """Unit scores ``1 - P`` of the foldable units (in threshold mode only those with P >= tau),
    what is known of each, and the highest P of every foldable unit (for the messages)."""
    scores: dict[int, torch.Tensor] = {}
    points: Flagged = {}
    seen: list[float] = []
    for gi, ui, unit, pts in candidates:
        usable = foldable[(gi, tuple(p.act for p in pts))]
        if not usable:
            continue
        ps = [float(probs[p.bn][p.index]) for p in pts]
        best = max(ps[i] for i in usable)
        seen.append(best)
        if ctx.goal is None and best < tau:
            continue  # threshold mode: not flagged where it could be folded
        if gi not in scores:
            scores[gi] = torch.full((ctx.graph.groups[gi].size,), math.inf, dtype=torch.float64)
        scores[gi][ui] = 1 - best
        points[id(unit)] = (pts, ps, usable)
    return scores, points, seen


def _select(ctx: RoundContext, scores: dict[int, torch.Tensor], points: Flagged, tau: float, seen: list[float]):
    """The plan: every flagged unit the floors allow (threshold mode), or the units that reach
    the goal, lowest score first (tau solved); with the tau used and the round's note."""
    threshold = ctx.goal is None
    plan = solve(
        ctx.graph,
        scores,
        CostModel.of(ctx.model, ctx.example, ctx.graph.calls),
        1.0 if threshold else ctx.goal,
        ctx.metric,
        "global" if threshold else ctx.scope,
        ctx.floors,
        ctx.reference,
        max_score=1.0,
        round_to=ctx.round_to,
    )
    if threshold:
        return plan, tau, _threshold_message(tau, seen, len(plan.units))
    return plan, _solved_tau(plan.units, points), plan.note


def _constants(ctx: RoundContext, units: list[Unit], points: Flagged, tau: float):
    """Per activation, the constant each removed channel is replaced by (taken at its last
    flagged point the fold can start from), and how many units fell in each case."""
    modules = dict(ctx.model.named_modules())
    constants: dict[str, dict[int, float]] = {}
    cases: Counter = Counter()
    for unit in units:
        pts, ps, usable = points[id(unit)]
        flags = [p >= tau for p in ps]
        pt = pts[max(i for i in usable if flags[i])]
        bn = modules[pt.bn]
        value = expected_activation(
            modules[pt.act],
            bn.weight.detach()[pt.index : pt.index + 1].cpu(),
            bn.bias.detach()[pt.index : pt.index + 1].cpu(),
        )
        constants.setdefault(pt.act, {})[pt.index] = float(value[0])
        cases[_case(flags)] += 1
    return constants, cases


def probability_round(ctx: RoundContext) -> RoundOutcome:
    o: ProbabilityOptions = ctx.options
    after, probs = _probabilities(ctx)
    candidates, foldable = _candidates(ctx, after)
    tau = o.tau if o.tau is not None else DEFAULT_TAU
    scores, points, seen = _flag(ctx, candidates, foldable, probs, tau)
    plan, tau, note = _select(ctx, scores, points, tau, seen)
    scored_at = time.perf_counter()
    constants, cases = _constants(ctx, plan.units, points, tau)
    details: dict = {
        "tau": tau,
        "cases": dict(cases),
        "fused": o.fuse,
        "candidates": len(candidates),
        "not_foldable": sum(1 for gi, _, _, pts in candidates if not foldable[(gi, tuple(p.act for p in pts))]),
    }
    if plan.units:
        if o.fuse:
            report = fold_constant_channels(ctx.model, ctx.example, constants, graph=ctx.graph)
            details["approximate_at"] = list(report.approximate_at)
        else:
            remove_units(ctx.model, ctx.graph, plan.units, ctx.example)
    return RoundOutcome(len(plan.units), note, details, scored_at=scored_at)


@register_method(
    "probability",
    "P(BN output <= 0) from BN statistics, expected value folded forward; "
    "no fine-tuning (Zhao et al., J. Comput. Sci. Technol. 2022)",
    options=ProbabilityOptions,
    normalise=False,
    default_finetune="none",
    threshold_option="tau",
    prune_round=probability_round,
    recalibrate_by_default=False,
)
def probability_scores(ctx: ScoreContext) -> LayerScores:
    """``1 - P`` per BN role with a ReLU-type activation after it (low = prune first)."""
    _, probs = _probabilities(ctx)
    return {(bn, "bn"): 1 - p.float() for bn, p in probs.items()}
