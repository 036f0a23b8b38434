"""FPGM (He, Liu, Wang, Hu & Yang, CVPR 2019, doi:10.1109/CVPR.2019.00447): filters near
the layer's geometric median are the most replaceable by the others, so they go first -- a
filter's score is its summed distance to every other filter of the layer."""

from __future__ import annotations

import torch

from ._layers import filters
from ._registry import LayerScores, ScoreContext, register_method


def fpgm_scores(weight: torch.Tensor) -> torch.Tensor:
    w = weight.detach().reshape(weight.shape[0], -1).double()
    return torch.cdist(w, w).sum(1).float()


@register_method("fpgm", "filter pruning via geometric median (He et al. 2019): the most replaceable go first")
def fpgm(ctx: ScoreContext) -> LayerScores:
    return {(name, "out"): fpgm_scores(w) for name, w in filters(ctx.model, ctx.graph)}
