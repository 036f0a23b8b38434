"""What a score-based method's round is when it brings no round of its own: score the
channels, turn the scores into unit scores, solve the budget, remove the units. Also the
even round schedule and the off-target note every method gets unless it has its own."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..graph import cut
from ..select import CostModel, Plan, solve, unit_scores
from ._context import RoundContext, RoundOutcome

if TYPE_CHECKING:
    from ._registry import Method


def agree(per_unit: dict[int, torch.Tensor], device: torch.device) -> dict[int, torch.Tensor]:
    """Under DDP every rank takes rank 0's unit scores. A data-driven criterion computed on
    each rank's device can differ in the last bits, and a tie or a K-means boundary that
    falls differently must not cut different channels on different ranks."""
    if not (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    ):
        return per_unit
    out = {}
    for gi in sorted(per_unit):  # the same keys everywhere: every rank traced the same model
        t = per_unit[gi].to(device=device, dtype=torch.float64).contiguous()
        torch.distributed.broadcast(t, 0)
        out[gi] = t.cpu()
    return out


def score_and_cut(method: Method, ctx: RoundContext) -> RoundOutcome:
    """The default round: score, rank units, solve the budget, remove."""
    scores = method.score(ctx)
    per_unit = agree(
        scores if method.unit_scores else unit_scores(ctx.graph, scores, method.normalise), ctx.example.device
    )
    plan = solve_round(ctx, per_unit)
    scored_at = time.perf_counter()
    calls = cut(ctx.model, ctx.graph, plan.units, ctx.example)
    return RoundOutcome(len(plan.units), plan.note, scored_at=scored_at, calls=calls)


def solve_round(ctx: RoundContext, per_unit: dict[int, torch.Tensor]) -> Plan:
    """The units this round removes: the budget solved over ``per_unit`` scores."""
    return solve(
        ctx.graph,
        per_unit,
        CostModel.of(ctx.model, ctx.example, ctx.graph.calls),
        ctx.goal,
        ctx.metric,
        ctx.scope,
        ctx.floors,
        reference=ctx.reference,
        round_to=ctx.round_to,
    )


def even_schedule(rounds: int, epochs: int) -> list[tuple[float, int]]:
    """Equal steps towards the target, the fine-tuning epochs split evenly (later rounds get
    the remainder): ``[(share of the target reached by the end of the round, its epochs)]``."""
    base, extra = divmod(epochs, rounds)
    return [((i + 1) / rounds, base + (1 if i >= rounds - extra else 0)) for i in range(rounds)]


def solver_note(achieved: float, target: float, last_round: float) -> str:
    """Why a run of whole-channel removals ends more than a point off its target."""
    return (
        f"achieved {100 * achieved:.2f}% against a target of {100 * target:.1f}%: the solver "
        "stops at the first step that reaches the target, and on this model one step (one channel "
        "in global scope, one more channel of every group in layer scope) is worth more than a point"
    )
