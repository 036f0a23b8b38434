"""Probability-based channel pruning from BatchNorm statistics, with shift-factor fusion
(paper 3; METHODS.md, method 3). No data and, by default, no fine-tuning.

A BN channel ``y = gamma * xhat + beta`` followed by a ReLU-type activation is zero after
it with probability ``P = Phi(-beta / |gamma|)``. A unit (one removable channel) is
flagged when ``P >= tau`` at any of its BN+activation points. Removing it replaces its
post-activation output by the constant ``E[act(y)]`` taken at the *last* flagged point,
which :func:`secateurs.graph.fold_constant_channels` carries through what follows
(a depthwise conv, its BN and activation) into the next mixing layer's bias or BN mean.
In a depthwise separable block ``PW1 -> BN1 -> act -> DW -> BN2 -> act -> PW2`` this gives
METHODS.md's four cases:

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

import math
from collections import Counter
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ._gaussian import expected_activation, prob_nonpositive
from ._points import Point, activation_after_bn, unit_points
from ._registry import LayerScores, RoundContext, RoundOutcome, ScoreContext, register_method


@dataclass(frozen=True)
class ProbabilityOptions:
    tau: float = 0.99  # flag a channel when P(y <= 0) >= tau; ignored when a reduction target is given
    fuse: bool = True  # fold the expected value into the next layer (False: plain removal, the ablation)

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")


def _probabilities(ctx: ScoreContext) -> tuple[dict[str, tuple[str, int]], dict[str, torch.Tensor]]:
    modules = dict(ctx.model.named_modules())
    after = activation_after_bn(ctx.model, ctx.graph)
    probs = {}
    for bn in after:
        m = modules[bn]
        if m.weight is None or m.bias is None:
            raise ConfigError(f"probability pruning reads gamma and beta, but {bn!r} has affine=False")
        gamma, beta = m.weight.detach().cpu(), m.bias.detach().cpu()
        # gamma = 0: the channel is exactly the constant act(beta) whatever beta is; the
        # fold removes it exactly, so it is flagged like a channel that is always zero.
        probs[bn] = torch.where(gamma == 0, 1.0, prob_nonpositive(gamma, beta))
    return after, probs


def _case(flags: list[bool]) -> str:
    return "single" if len(flags) == 1 else "/".join("yes" if f else "no" for f in flags)


def probability_round(ctx: RoundContext) -> RoundOutcome:
    from ..graph import fold_constant_channels, fold_refusals, remove_units
    from ..pipeline.budget import CostModel, solve

    o: ProbabilityOptions = ctx.options
    after, probs = _probabilities(ctx)
    modules = dict(ctx.model.named_modules())
    scores: dict[int, torch.Tensor] = {}
    points: dict[int, tuple[list[Point], list[float]]] = {}
    candidates = [(gi, ui, unit, pts) for gi, group in enumerate(ctx.graph.groups) if group.prunable
                  for ui, unit in enumerate(group.units) if (pts := unit_points(unit, after))]
    # A unit whose constant cannot reach every place it lives (a residual stream: BN ->
    # act -> ... -> add) is not a channel the expected value can stand in for. The units
    # of a group share their layers, so one unit per group and point answers for all.
    first: dict[tuple[int, tuple[str, ...]], list[Point]] = {}
    for gi, _, _, pts in candidates:
        first.setdefault((gi, tuple(p.act for p in pts)), pts)
    refused = fold_refusals(ctx.model, ctx.example, [(p.act, p.index) for pts in first.values() for p in pts],
                            graph=ctx.graph)
    bad = {key for key, pts in first.items() if any((p.act, p.index) in refused for p in pts)}
    for gi, ui, unit, pts in candidates:
        if (gi, tuple(p.act for p in pts)) in bad:
            continue
        ps = [float(probs[p.bn][p.index]) for p in pts]
        if gi not in scores:
            scores[gi] = torch.full((ctx.graph.groups[gi].size,), math.inf, dtype=torch.float64)
        scores[gi][ui] = 1 - max(ps)
        points[id(unit)] = (pts, ps)
    cost = CostModel.of(ctx.model, ctx.example)
    if ctx.goal is None:  # threshold mode: every flagged unit the floors allow
        tau = o.tau
        plan = solve(ctx.graph, scores, cost, 1.0, ctx.metric, "global", ctx.floors, ctx.reference,
                     max_score=1 - tau + 1e-12)
        note = None
    else:
        plan = solve(ctx.graph, scores, cost, ctx.goal, ctx.metric, ctx.scope, ctx.floors, ctx.reference,
                     max_score=1.0)
        tau = min((max(points[id(u)][1]) for u in plan.units), default=1.0)
        note = plan.note
    constants: dict[str, dict[int, float]] = {}
    cases: Counter = Counter()
    for unit in plan.units:
        pts, ps = points[id(unit)]
        flags = [p >= tau for p in ps]
        last = max(i for i, f in enumerate(flags) if f)
        pt = pts[last]
        bn = modules[pt.bn]
        value = expected_activation(modules[pt.act], bn.weight.detach()[pt.index:pt.index + 1].cpu(),
                                    bn.bias.detach()[pt.index:pt.index + 1].cpu())
        constants.setdefault(pt.act, {})[pt.index] = float(value[0])
        cases[_case(flags)] += 1
    details = {"tau": tau, "cases": dict(cases), "fused": o.fuse, "candidates": len(points),
               "not_foldable": len(candidates) - len(points)}
    if plan.units:
        if o.fuse:
            report = fold_constant_channels(ctx.model, ctx.example, constants, graph=ctx.graph)
            details["approximate_at"] = list(report.approximate_at)
        else:
            remove_units(ctx.model, ctx.graph, plan.units, ctx.example)
    return RoundOutcome(len(plan.units), note, details)


@register_method("probability", "P(BN output <= 0) from BN statistics, expected value folded forward; "
                 "no fine-tuning (paper 3)", options=ProbabilityOptions, normalise=False,
                 default_finetune="none", target_optional=True, prune_round=probability_round)
def probability_scores(ctx: ScoreContext) -> LayerScores:
    """``1 - P`` per BN role with a ReLU-type activation after it (low = prune first)."""
    _, probs = _probabilities(ctx)
    return {(bn, "bn"): 1 - p.float() for bn, p in probs.items()}
