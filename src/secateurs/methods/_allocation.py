"""A round that reaches a fixed allocation in steps: how many channels each group loses over
the whole run is solved once, on the unpruned network, and every round takes its share of
each group's count, choosing *which* channels by the current scores.

Why: ranking every round afresh across layers lets the rounds move the cut between layers.
A criterion that scales each layer by the filters it has left (``l1-capped``'s ``mean_l``)
scores a layer lower once its weakest filters are gone, so later rounds take more from the
layers that were cut first (benchmarks/results/l1_capped_widths.md). Solving the allocation
once keeps the one-shot ranking's widths and leaves the iteration to pick, after each round's
fine-tuning, the channels each layer keeps.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..graph import ChannelGroup, Unit, cut, trace
from ..select import CostModel, UnitScores, removal_steps
from ._context import RoundContext, RoundOutcome, ScoreContext
from ._round import agree, solve_round

#: A group's identity across rounds: the layer roles its channels touch (a cut narrows the
#: layers, it never renames them).
GroupKey = frozenset


def group_key(group: ChannelGroup) -> GroupKey:
    return frozenset(group.layers)


@dataclass(frozen=True)
class Allocation:
    """The run's whole cut, per group: its width before the run and the units it loses."""

    size: dict[GroupKey, int]
    removed: dict[GroupKey, int]
    note: str | None  # the solver's, when the whole target cannot be reached


def planned_removals(ctx: RoundContext, unit_scores_of: Callable[[ScoreContext], UnitScores]) -> Allocation:
    """The units the run's whole target (``ctx.final_goal``) removes from each group when solved
    once on ``ctx.unpruned`` with the scores ``unit_scores_of`` gives it: deterministic, so
    every round (and a resumed run) gets the same allocation without storing it."""
    if ctx.unpruned is None or ctx.final_goal is None:
        raise ConfigError(
            "a fixed allocation needs the unpruned network and the run's target: give a MACs or "
            "params target (not a threshold), and let the method's reads_unpruned(options) be true"
        )
    graph = trace(ctx.unpruned, ctx.example)
    sctx = ScoreContext(ctx.unpruned, graph, ctx.options, ctx.calibration, ctx.seed)
    # The budget of the whole target on the unpruned network, as a one-round run would solve it.
    whole = replace(ctx, model=ctx.unpruned, graph=graph, goal=ctx.final_goal, share=1.0, round=1, rounds=1)
    plan = solve_round(whole, agree(unit_scores_of(sctx), ctx.example.device))
    owner = {id(u): group_key(g) for g in graph.groups if g.prunable for u in g.units}
    removed = Counter(owner[id(u)] for u in plan.units)
    # Prunable groups only: a grouped conv's unprunable remainder can share a prunable group's layers.
    return Allocation({group_key(g): g.size for g in graph.groups if g.prunable}, dict(removed), plan.note)


def allocated_round(ctx: RoundContext, unit_scores_of: Callable[[ScoreContext], UnitScores]) -> RoundOutcome:
    """Remove from every group its share of :func:`planned_removals`: ``round(share * n)`` units
    by the end of a round that reaches ``ctx.share`` of the target (all ``n`` by the last), the
    lowest-scoring first by the scores of the model as it is now. The counts are solved in the
    run's ``scope`` (one ranking over all groups in global scope, the same share of each in
    layer scope), as a one-round run would solve them."""
    if ctx.share is None:
        raise ConfigError(
            f"round {ctx.round} of a fixed allocation needs its share of the target (RoundContext.share); "
            "secateurs.prune sets it from the run's plan"
        )
    whole = planned_removals(ctx, unit_scores_of)
    last = ctx.round == ctx.rounds or ctx.share >= 1.0
    scores = agree(unit_scores_of(ctx), ctx.example.device)
    widths = CostModel.of(ctx.model, ctx.example, ctx.graph.calls).widths
    units: list[Unit] = []
    for gi, group in enumerate(ctx.graph.groups):
        key = group_key(group)
        n = whole.removed.get(key, 0)
        if gi not in scores or not n:
            continue
        wanted = n if last else round(ctx.share * n)
        need = wanted - (whole.size[key] - group.size)  # wanted <= n: a share below 1 rounds to at most n
        for _, step_units, _ in removal_steps(ctx.graph, group, scores[gi], widths, ctx.round_to):
            if need <= 0:
                break
            units += step_units
            need -= len(step_units)
    scored_at = time.perf_counter()
    calls = cut(ctx.model, ctx.graph, units, ctx.example) if units else None
    note = whole.note if last else None
    return RoundOutcome(len(units), note, details={"allocation": "unpruned"}, scored_at=scored_at, calls=calls)
