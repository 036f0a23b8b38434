"""Network slimming (Liu, Li, Shen, Huang, Yan & Zhang, ICCV 2017,
doi:10.1109/ICCV.2017.298): a channel whose BatchNorm scale |gamma| is small
contributes little after normalisation, so it goes first."""

from __future__ import annotations

from ._layers import batchnorms
from ._registry import LayerScores, ScoreContext, register_method


# Network slimming ranks the raw |gamma| of every layer together (its L1 penalty puts them on
# one scale), so no per-layer normalisation.
@register_method("bn-scale", "BatchNorm scale |gamma| (network slimming, Liu et al. 2017)", normalise=False)
def bn_scale(ctx: ScoreContext) -> LayerScores:
    return {
        (name, "bn"): bn.weight.detach().abs().float()
        for name, bn in batchnorms(ctx.model, ctx.graph)
        if bn.weight is not None
    }
