"""Filter-norm baselines (Li, Kadav, Durdanovic, Samet & Graf, "Pruning Filters for
Efficient ConvNets", ICLR 2017, doi:10.48550/arXiv.1608.08710) and the random control."""

from __future__ import annotations

import torch

from ._layers import filters
from ._registry import LayerScores, ScoreContext, register_method


@register_method("l1", "filter L1 norm (Li et al. 2017): small filters go first")
def l1(ctx: ScoreContext) -> LayerScores:
    return {(name, "out"): w.abs().sum(1) for name, w in filters(ctx.model, ctx.graph)}


@register_method("l2", "filter L2 norm: small filters go first")
def l2(ctx: ScoreContext) -> LayerScores:
    return {(name, "out"): w.norm(dim=1) for name, w in filters(ctx.model, ctx.graph)}


@register_method("random", "uniformly random scores (seeded): the control every criterion must beat", normalise=False)
def random(ctx: ScoreContext) -> LayerScores:
    gen = torch.Generator().manual_seed(ctx.seed)
    return {(name, "out"): torch.rand(w.shape[0], generator=gen) for name, w in filters(ctx.model, ctx.graph)}
