"""Convolutions (``Conv1d/2d/3d``): plain, grouped and depthwise (with a channel multiplier),
and transposed convolutions, which are only counted."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from .. import _ids
from .._flow import describe, module_of
from .._fold_ops import first_input
from .._state import GroupedConv, State
from ._kernels import working_kernels
from ._registry import LayerCost, LayerType
from ._surgery import Journal, keep_indices, narrow, narrow_param
from .kinds import CONV_TRANSPOSES, CONVS


def _depthwise(m: nn.Module) -> bool:
    """Each output channel reads one input channel (with a multiplier when out > in)."""
    return 1 < m.groups == m.in_channels


def flow(state: State, node, out, args, kwargs):
    m = module_of(node)
    name = node.target
    cids = _ids.along(args[0], 1)
    if cids is None:  # channels mixed upstream: the input is kept, the output is still free
        state.stop(args[0], f"{describe(node)} reads channels that an earlier op mixed together")
    else:
        state.add_members(cids, name, "in")
    out_ids = state.new(m.out_channels)
    state.add_members(out_ids, name, "out")
    if _depthwise(m) and cids is not None:
        # Depthwise, with a channel multiplier when out > in: each output channel belongs
        # to its input channel, so both go together.
        state.tie(cids.repeat_interleave(m.out_channels // m.in_channels), out_ids)
    elif m.groups > 1:
        state.grouped[name] = GroupedConv(name, m.groups, m.in_channels, m.out_channels)
    return _ids.broadcast_channels(out_ids, out.shape)


#: From this many weights, a conv losing rows and columns is narrowed in one pass (below).
_ONE_PASS = 1 << 19


def _rows_and_columns(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``w[rows][:, cols]`` in one copy: the kept kernels' flat indices, one ``index_select``
    over ``[out * in, kh * kw]``. Two passes read the whole weight and write half of it, then
    read that half again; on vgg16's 512x512 3x3 convs this is twice as fast (memory-bound),
    below ~2**19 weights building the index costs more than it saves."""
    cin = w.shape[1]
    rows, cols = rows.to(w.device), cols.to(w.device)
    flat = (rows.unsqueeze(1) * cin + cols).flatten()
    return w.detach().reshape(w.shape[0] * cin, -1).index_select(0, flat).view(len(rows), len(cols), *w.shape[2:])


def prune(j: Journal, m: nn.Module, rm: dict[str, list[int]]) -> None:
    out_rm, in_rm = rm.get("out", []), rm.get("in", [])
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    w = m.weight
    one_pass = bool(out_rm and in_rm) and g == 1 and w.numel() >= _ONE_PASS
    if out_rm:  # rows first: the column pass below then copies the smaller tensor
        keep = j.keep(cout, out_rm)
        w = _rows_and_columns(w, keep, j.keep(cin, in_rm)) if one_pass else narrow(w, 0, keep)
        narrow_param(j, m, "bias", 0, keep)
    if in_rm and g == 1 and not one_pass:
        w = narrow(w, 1, j.keep(cin, in_rm))
    elif in_rm and 1 < g < cin:  # grouped: each group loses the same number of inputs (checked)
        per_in, per_out = cin // g, (cout - len(out_rm)) // g
        blocks = []
        for k in range(g):
            cols = keep_indices(per_in, [i - k * per_in for i in in_rm if k * per_in <= i < (k + 1) * per_in])
            blocks.append(narrow(w[k * per_out : (k + 1) * per_out], 1, cols))
        w = torch.cat(blocks)
    # depthwise (g == cin): the weight has one input column; dropping outputs drops the groups
    if w is not m.weight:
        j.set(m, "weight", w)
    new_in = cin - len(in_rm)
    if g > 1 and g == cin:
        j.set(m, "groups", new_in)
    j.set(m, "in_channels", new_in)
    j.set(m, "out_channels", cout - len(out_rm))


def _zero_padded(m: nn.Module) -> bool:
    """Zero padding turns a constant into a different value near the borders."""
    if m.padding_mode != "zeros":
        return False  # reflect / replicate / circular pad a constant with the same constant
    if isinstance(m.padding, str):
        return m.padding == "same" and any(k > 1 for k in m.kernel_size)
    return any(p > 0 for p in m.padding)


def fold(walk, node, src, values):
    """A depthwise conv turns the constant into another one; any other conv absorbs it."""
    first_input(walk, node, src)
    m = walk.module(node)
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    w = m.weight.detach().double().flatten(2).sum(2)  # [O, I/g]: each kernel applied to a constant
    padded = _zero_padded(m)
    if g > 1 and g == cin:
        mult = cout // cin
        b = m.bias.detach().double() if m.bias is not None else torch.zeros(cout, dtype=torch.float64)
        out = {}
        for i, v in values.items():
            walk.touch(node.target, "in", i)
            for o in range(i * mult, (i + 1) * mult):
                walk.touch(node.target, "out", o)
                out[o] = float(v * w[o, 0] + b[o])
        if padded:
            walk.approximate.setdefault(node.target, "depthwise conv with zero padding")
        return out
    per_in, per_out = cin // g, cout // g
    delta = torch.zeros(cout, dtype=torch.float64)
    for i, v in values.items():
        walk.touch(node.target, "in", i)
        k = i // per_in  # the group that reads input i
        delta[k * per_out : (k + 1) * per_out] += v * w[k * per_out : (k + 1) * per_out, i - k * per_in]
    if padded:
        walk.approximate.setdefault(node.target, "conv with zero padding")
    walk.consume(node, delta)
    return None


def fold_back(walk, node, c: int) -> int | None:
    walk.touch(node.target, "out", c)
    m = walk.ctx.modules[node.target]
    if not _depthwise(m):
        return None
    c //= m.out_channels // m.in_channels  # depthwise: input channel c feeds this output
    walk.touch(node.target, "in", c)
    return c


def macs(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    kernel = math.prod(module.kernel_size)
    if not sparse:
        return output.numel() * (module.in_channels // module.groups) * kernel
    out_spatial = output.numel() // module.out_channels
    return out_spatial * working_kernels(module) * kernel


def cost(m: nn.Module, output: torch.Tensor) -> LayerCost:
    return LayerCost(
        "conv",
        m.in_channels,
        m.out_channels,
        m.groups,
        _depthwise(m),
        math.prod(m.kernel_size),
        output[0, 0].numel(),
        m.bias is not None,
    )


def spec(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


CONV = LayerType(
    "conv",
    CONVS,
    role="out",
    flow=flow,
    fold=fold,
    fold_back=fold_back,
    prune=prune,
    widths=lambda m: (m.in_channels, m.out_channels),
    macs=macs,
    kernels=True,
    cost=cost,
    spec=spec,
)


def transpose_macs(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    # Every input element is scattered through (C_out / groups) kernels; weight is [C_in, C_out/g, *k].
    kernel = math.prod(module.kernel_size)
    x = inputs[0]
    if not sparse:
        return x.numel() * (module.out_channels // module.groups) * kernel
    in_spatial = x.numel() // module.in_channels
    return in_spatial * working_kernels(module) * kernel


#: Counted only: the engine does not trace or narrow transposed convolutions (their
#: channels are kept), and checkpoints do not rebuild them.
CONV_TRANSPOSE = LayerType("conv_transpose", CONV_TRANSPOSES, macs=transpose_macs)
