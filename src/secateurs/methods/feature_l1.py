"""Layer-wise feature norm: the mean L1 norm of a channel's feature map over calibration
samples. A channel that is quiet on real data goes first."""
from __future__ import annotations

import torch

from ._features import collect
from ._registry import LayerScores, ScoreContext, register_method
from ..errors import ConfigError


@register_method("feature-l1", "mean L1 norm of each channel's feature map over calibration samples",
                 needs_data=True)
def feature_l1(ctx: ScoreContext) -> LayerScores:
    if ctx.calibration is None:
        raise ConfigError("method 'feature-l1' needs calibration data: give a dataset (--dataset)")
    sums: dict[tuple[str, str], torch.Tensor] = {}
    count = [0]

    def reduce(role: tuple[str, str], x: torch.Tensor) -> None:
        per = x.detach().abs().float().flatten(2).sum(2).sum(0) if x.dim() > 2 else x.detach().abs().float().sum(0)
        sums[role] = sums[role] + per if role in sums else per

    def batches():
        for x in ctx.calibration():
            count[0] += x.shape[0]
            yield x

    collect(ctx.model, ctx.graph, batches(), reduce)
    return {role: (s / max(count[0], 1)).cpu() for role, s in sums.items()}
