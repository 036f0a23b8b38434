"""L1-norm plus capped L1-norm filter scores (Kumar et al., Appl. Intell. 2021; see docs/methods.md).

    L1(j)    = sum |W[j]|
    capL1(j) = sum min(|W[j]|, eps_l),   eps_l = quantile q of |W_l|
    score(j) = alpha * L1(j) / mean_l(L1) + (1 - alpha) * capL1(j) / mean_l(capL1)

The cap stops a few large weights from hiding a filter that is small everywhere else;
the plain L1 keeps the magnitude signal. The per-layer means make layers comparable,
so the scores rank globally as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._types import check_field_types
from ._layers import filters
from ._registry import LayerScores, ScoreContext, register_method


@dataclass(frozen=True)
class L1CappedOptions:
    alpha: float = 0.5  # weight of the plain L1 term
    q: float = 0.5  # the cap eps_l is this quantile of the layer's |weights|

    def __post_init__(self) -> None:
        check_field_types(self, "l1-capped option")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not 0.0 < self.q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {self.q!r}")


def l1_capped_scores(weight: torch.Tensor, alpha: float = 0.5, q: float = 0.5) -> torch.Tensor:
    """Scores of the filters of one layer, ``weight`` shaped ``[out, ...]``."""
    a = weight.detach().reshape(weight.shape[0], -1).abs().double()
    # NumPy's quantile has no size limit (torch.quantile stops at 2**24 elements).
    eps = float(np.quantile(a.cpu().numpy(), q))
    l1 = a.sum(1)
    cap = a.clamp(max=eps).sum(1)
    tiny = torch.finfo(torch.float64).tiny
    return (alpha * l1 / l1.mean().clamp_min(tiny) + (1 - alpha) * cap / cap.mean().clamp_min(tiny)).float()


@register_method(
    "l1-capped",
    "L1 + capped-L1 filter norm, pruned over 3 rounds with fine-tuning (Kumar et al., Appl. Intell. 2021)",
    options=L1CappedOptions,
    rounds=3,
)
def l1_capped(ctx: ScoreContext) -> LayerScores:
    o: L1CappedOptions = ctx.options
    return {(name, "out"): l1_capped_scores(w, o.alpha, o.q) for name, w in filters(ctx.model, ctx.graph)}
