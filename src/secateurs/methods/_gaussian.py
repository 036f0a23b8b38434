"""Gaussian statistics of a BatchNorm channel ``y = gamma * xhat + beta``, ``xhat ~ N(0, 1)``.

``P(y <= 0)`` and ``E[act(y)]`` in closed form for ReLU and ReLU6, and numerically for any
other activation: the trapezoid rule on a fine grid of ``xhat`` over [-10, 10], which,
unlike Gauss-Hermite nodes, stays accurate (about 1e-6) for activations with kinks such as
Hardswish.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn as nn

_SQRT_2PI = math.sqrt(2 * math.pi)


def prob_nonpositive(gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``P(y <= 0) = Phi(-beta / |gamma|)``; for ``gamma = 0``, 1 if ``beta <= 0`` else 0."""
    g, b = gamma.double().abs(), beta.double()
    safe = torch.where(g > 0, g, torch.ones_like(g))
    p = torch.special.ndtr(-b / safe)
    return torch.where(g > 0, p, (b <= 0).double())


def expected_relu(gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``E[max(y, 0)] = beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``."""
    g, b = gamma.double().abs(), beta.double()
    safe = torch.where(g > 0, g, torch.ones_like(g))
    z = b / safe
    m = b * torch.special.ndtr(z) + g * torch.exp(-0.5 * z * z) / _SQRT_2PI
    return torch.where(g > 0, m, b.clamp_min(0))


def expected_relu6(gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``E[min(max(y, 0), 6)] = E[max(y, 0)] - E[max(y - 6, 0)]``."""
    return expected_relu(gamma, beta) - expected_relu(gamma, beta.double() - 6)


@lru_cache(maxsize=4)
def _grid(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.linspace(-10.0, 10.0, points, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z) / _SQRT_2PI * (z[1] - z[0])
    w[0] *= 0.5
    w[-1] *= 0.5
    return z, w


def expected_numerical(
    fn: Callable[[torch.Tensor], torch.Tensor],
    gamma: torch.Tensor,
    beta: torch.Tensor,
    points: int = 20001,
    chunk: int = 32,
) -> torch.Tensor:
    """``E[fn(gamma * xhat + beta)]`` per channel, by the trapezoid rule over ``xhat``."""
    z, w = _grid(points)
    g, b = gamma.double().abs().flatten(), beta.double().flatten()
    out = torch.empty_like(b)
    with torch.no_grad():
        for i in range(0, len(b), chunk):
            y = b[i : i + chunk, None] + g[i : i + chunk, None] * z[None, :]
            out[i : i + chunk] = (fn(y) * w).sum(1)
    return out


#: Activations whose output is 0 exactly where ``y <= 0``: the ones probability pruning
#: reads a BN's ``P(y <= 0)`` through.
RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

_CLOSED_FORMS: dict[type[nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: expected_relu,
    nn.ReLU6: expected_relu6,
}


def expected_activation(act: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``E[act(y)]`` per channel: closed form where there is one, else quadrature through the module."""
    closed = _CLOSED_FORMS.get(type(act))
    if closed is not None:
        return closed(gamma, beta)
    return expected_numerical(act, gamma, beta)
