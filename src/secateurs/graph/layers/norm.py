"""Normalisation layers: BatchNorm (prunable, per-channel parameters and statistics), and
GroupNorm and LayerNorm, which the engine does not look into but checkpoints rebuild."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .. import _ids
from .._flow import unknown
from .._fold_ops import first_input
from .._state import State
from ._registry import LayerCost, LayerType
from ._surgery import Journal, narrow_param
from .kinds import BATCHNORMS


def flow(state: State, node, out, args, kwargs):
    cids = _ids.along(args[0], 1)
    if cids is None:
        return unknown(state, node, out, args, kwargs)
    state.add_members(cids, node.target, "bn")
    return args[0]


def prune(j: Journal, m: nn.Module, rm: dict[str, list[int]]) -> None:
    keep = j.keep(m.num_features, rm.get("bn", []))
    for name in ("weight", "bias", "running_mean", "running_var"):
        narrow_param(j, m, name, 0, keep)
    j.set(m, "num_features", len(keep))


def fold(walk, node, src, values):
    first_input(walk, node, src)
    bn = walk.module(node)
    if bn.running_mean is None:
        raise walk.refuse(node, f"{node.target!r} keeps no running statistics, so its output depends on the batch")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    w = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    b = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    out = {}
    for c, v in values.items():
        walk.touch(node.target, "bn", c)
        out[c] = float((v - mean[c]) / torch.sqrt(var[c] + bn.eps) * w[c] + b[c])
    return out


def fold_back(walk, node, c: int) -> int | None:
    walk.touch(node.target, "bn", c)
    return c


def cost(m: nn.Module, output: torch.Tensor) -> LayerCost | None:
    return LayerCost("bn", out_ch=m.num_features) if m.affine else None


def spec(m: nn.Module) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


BATCHNORM = LayerType(
    "batchnorm",
    BATCHNORMS,
    role="bn",
    flow=flow,
    shape_preserving=True,
    fold=fold,
    fold_back=fold_back,
    input_shift="running_mean",
    prune=prune,
    widths=lambda m: (0, m.num_features),
    cost=cost,
    spec=spec,
)

GROUPNORM = LayerType(
    "groupnorm",
    (nn.GroupNorm,),
    spec=lambda m: {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps, "affine": m.affine},
)

LAYERNORM = LayerType(
    "layernorm",
    (nn.LayerNorm,),
    spec=lambda m: {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": getattr(m, "bias", None) is not None,
    },
)
