"""Layer-wise feature norm: the mean L1 norm of a channel's feature map over calibration
samples. A channel that is quiet on real data goes first."""

from __future__ import annotations

import torch

from ._features import accumulate, collect_calibration
from ._registry import LayerScores, ScoreContext, register_method


@register_method("feature-l1", "mean L1 norm of each channel's feature map over calibration samples", needs_data=True)
def feature_l1(ctx: ScoreContext) -> LayerScores:
    sums: dict[tuple[str, str], torch.Tensor] = {}

    def reduce(role: tuple[str, str], x: torch.Tensor) -> None:
        x = x.detach().abs().float()
        accumulate(sums, role, x.flatten(2).sum(2).sum(0) if x.dim() > 2 else x.sum(0))

    count = collect_calibration(ctx, reduce, "feature-l1")
    return {role: (s / max(count, 1)).cpu() for role, s in sums.items()}
