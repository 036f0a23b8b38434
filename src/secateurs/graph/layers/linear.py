"""``nn.Linear``: a producer whose channels are the features of its last dim."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .. import _ids
from .._flow import describe, module_of
from .._fold_ops import first_input
from .._state import State
from ._registry import LayerCost, LayerType, layer_type
from ._surgery import Journal, narrow_param


def dense_flow(channel_dim: int = 1, what: str = "channels") -> Callable:
    """The trace handler of a layer in which every output channel reads every input channel
    along ``channel_dim`` (a Linear, a 1x1 conv written by hand): its inputs are one role
    (``in``) of the groups upstream, its outputs (as many as ``LayerType.widths`` says) the
    ``out`` role of a new group."""

    def flow(state: State, node, out, args, kwargs):
        m = module_of(node)
        cids = _ids.along(args[0], channel_dim)
        if cids is None:  # mixed upstream: the input is kept, the output is still free
            state.stop(args[0], f"{describe(node)} reads {what} that an earlier op mixed together")
        else:
            state.add_members(cids, node.target, "in")
        out_ids = state.new(layer_type(m).widths(m)[1])
        state.add_members(out_ids, node.target, "out")
        return _ids.broadcast_channels(out_ids, out.shape, channel_dim)

    return flow


def prune(j: Journal, m: nn.Linear, rm: dict[str, list[int]]) -> None:
    if rm.get("in"):
        narrow_param(j, m, "weight", 1, j.keep(m.in_features, rm["in"]))
        j.set(m, "in_features", m.in_features - len(rm["in"]))
    if rm.get("out"):
        keep = j.keep(m.out_features, rm["out"])
        narrow_param(j, m, "weight", 0, keep)
        narrow_param(j, m, "bias", 0, keep)
        j.set(m, "out_features", m.out_features - len(rm["out"]))


def fold(walk, node, src, values):
    first_input(walk, node, src)
    m = walk.module(node)
    if len(walk.ctx.shape(src)) != 2:
        raise walk.refuse(
            node,
            f"{node.target!r} reads a {len(walk.ctx.shape(src))}-D tensor; the fold handles "
            "a Linear over (batch, features)",
        )
    w = m.weight.detach().double()
    delta = torch.zeros(m.out_features, dtype=torch.float64)
    for j, v in values.items():
        walk.touch(node.target, "in", j)
        delta += v * w[:, j]
    walk.consume(node, delta)
    return None


def fold_back(walk, node, c: int) -> int | None:
    walk.touch(node.target, "out", c)
    return None


def macs(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    rows = output.numel() // module.out_features  # all leading dims; the batch is 1 here
    if not sparse:
        return rows * module.out_features * module.in_features
    return rows * int(module.weight.detach().ne(0).sum())


def cost(m: nn.Module, output: torch.Tensor) -> LayerCost:
    return LayerCost(
        "linear", m.in_features, m.out_features, positions=output[0].numel() // m.out_features, bias=m.bias is not None
    )


def spec(m: nn.Module) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


LINEAR = LayerType(
    "linear",
    (nn.Linear,),
    role="out",
    channel_dim=-1,
    flow=dense_flow(-1, "features"),
    fold=fold,
    fold_back=fold_back,
    prune=prune,
    widths=lambda m: (m.in_features, m.out_features),
    macs=macs,
    cost=cost,
    spec=spec,
)
