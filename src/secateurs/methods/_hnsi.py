"""The arithmetic of HNSI kernel pruning (docs/methods.md, hnsi), apart from any model.

For a non-negative vector ``v`` of ``n`` kernel saliencies:

    HNSI(v)    = ||v||_1^2 / (n * ||v||_2^2)          in [1/n, 1]
    keep(v; c) = clamp(ceil(c * n * HNSI(v)), lo, n)

``n * HNSI(v) = ||v||_1^2 / ||v||_2^2`` is the "effective count" of the set: n when every
kernel matters equally, 1 when one kernel carries everything. An all-zero ``v`` has HNSI 1:
its kernels are all equally (un)important, as in the uniform case. ``lo`` is 1 under the
at-least-one-kernel rule and 0 without it (then only ``c = 0`` keeps nothing, since the
ceiling of a positive number is at least 1).

The strength ``c`` is one number per stage; :func:`solve_strength` bisects it so that a
cost (kernel-sparse MACs) that never decreases with ``c`` falls to a target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def effective_count(sums: torch.Tensor, squares: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``||v||_1^2 / ||v||_2^2`` per set from its sum, sum of squares and size (n for all-zero sets)."""
    sums, squares = sums.double(), squares.double()
    return torch.where(squares > 0, sums * sums / squares.clamp_min(torch.finfo(torch.float64).tiny), n.double())


def hnsi(v: torch.Tensor) -> float:
    """The Hybrid Norm Sparse Index of the saliencies ``v`` (1-D, non-negative, not empty)."""
    v = v.detach().double().flatten()
    if v.numel() == 0:
        raise ValueError("HNSI of an empty vector is undefined")
    n = torch.tensor(float(v.numel()), dtype=torch.float64)
    return float(effective_count(v.sum(), v.square().sum(), n) / n)


def keep_counts(effective: torch.Tensor, n: torch.Tensor, c: float, lo: int = 1) -> torch.Tensor:
    """``clamp(ceil(c * effective), lo, n)`` per set (an empty set keeps 0)."""
    # The effective count of a uniform set is n up to rounding; the clamp puts n + 1e-12 back.
    k = torch.ceil(c * effective).to(torch.int64)
    return torch.minimum(k.clamp_min(lo), n.to(torch.int64))


def keep(v: torch.Tensor, c: float, lo: int = 1) -> int:
    """How many of the kernels with saliencies ``v`` to keep at strength ``c``."""
    v = v.detach().double().flatten()
    n = torch.tensor(v.numel())
    return int(keep_counts(effective_count(v.sum(), v.square().sum(), n), n, c, lo))


def top_k_mask(scores: torch.Tensor, alive: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, the ``k[row]`` highest-scoring entries among ``alive`` ones (ties: lower index first)."""
    ranked = scores.double().masked_fill(~alive, -math.inf)
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    chosen = torch.arange(scores.shape[1]).unsqueeze(0) < k.unsqueeze(1)
    return torch.zeros_like(alive).scatter(1, order, chosen) & alive


def solve_strength(
    cost: Callable[[float], float], allowed: float, c_max: float, iters: int = 60
) -> tuple[float, float, bool]:
    """The largest ``c`` in ``(0, c_max]`` with ``cost(c) <= allowed``, by bisection.

    ``cost`` must never decrease with ``c``. Returns ``(c, cost(c), reached)``; when even
    the smallest strength costs more than ``allowed``, ``reached`` is False and that
    smallest strength (every set at its lower bound) is returned.
    """
    hi_cost = cost(c_max)
    if hi_cost <= allowed:
        return c_max, hi_cost, True
    lo = c_max * 1e-12  # c -> 0: every set keeps its lower bound (1 with the rule, ceil > 0)
    lo_cost = cost(lo)
    if lo_cost > allowed:
        return lo, lo_cost, False
    hi = c_max
    for _ in range(iters):
        mid = (lo + hi) / 2
        mid_cost = cost(mid)
        if mid_cost <= allowed:
            lo, lo_cost = mid, mid_cost
        else:
            hi = mid
    return lo, lo_cost, True
