"""How each op moves channels: one handler per op, in tables keyed by op.

A handler gets the analysis state, the node, its real output and its arguments with every
tensor replaced by its id tensor, and returns the id tensor(s) of the output. Ops not in
the tables stop every channel they touch: an op the engine does not know is never
assumed to be element-wise.
"""
from __future__ import annotations

import builtins
import operator
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from . import _ids
from ._state import GroupedConv, State

Handler = Callable[[State, torch.fx.Node, Any, tuple, dict], Any]


def _tensors(args: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    torch.fx.node.map_aggregate(args, lambda a: out.append(a) if isinstance(a, torch.Tensor) else None)
    return out


def _name(node: torch.fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def stop_all(reason: str) -> Handler:
    """Stop the channels of every input and give the output fresh, stopped ids."""
    def handler(state: State, node, out, args, kwargs):
        for t in _tensors((args, kwargs)):
            state.stop(t, reason.format(op=_name(node), node=node.name))
        return fresh_stopped(state, out, reason.format(op=_name(node), node=node.name))
    return handler


def fresh_stopped(state: State, out: Any, reason: str) -> Any:
    def make(t):
        if not isinstance(t, torch.Tensor):
            return None
        ids = _ids.fresh(state.new(t.shape[1] if t.dim() >= 2 else 1), t.shape, 1 if t.dim() >= 2 else 0)
        state.stop(ids, reason)
        return ids
    return torch.fx.node.map_aggregate(out, make)


def unknown(state: State, node, out, args, kwargs):
    return stop_all("{op} ({node}) is an op the engine does not know; register a handler for it in "
                    "secateurs.graph.HANDLERS, or make the module a leaf")(state, node, out, args, kwargs)


def no_ids(state, node, out, args, kwargs):
    """Ops whose results are not channel-carrying tensors (sizes, shapes, dims)."""
    if isinstance(out, torch.Tensor):
        return unknown(state, node, out, args, kwargs)
    return None


def channelwise(state: State, node, out, args, kwargs):
    """Output channel c comes from input channel c alone (activations, pooling, dropout)."""
    x = args[0] if args else next(iter(kwargs.values()))
    if x is None or not isinstance(out, torch.Tensor):
        return None
    if x.shape == out.shape:
        return x
    cids = _ids.along(x, 1)
    if cids is None or out.dim() < 2 or out.shape[1] != cids.numel():
        return unknown(state, node, out, args, kwargs)
    return _ids.broadcast_channels(cids, out.shape)


def elementwise(state: State, node, out, args, kwargs):
    """add/sub/mul/div with broadcasting: the channels met at one position are tied."""
    tensors = [t for t in _tensors((args, kwargs))]
    if not isinstance(out, torch.Tensor):
        return None
    if not tensors:
        return None
    result = torch.broadcast_to(tensors[0], out.shape) if tensors[0].shape != out.shape else tensors[0]
    for t in tensors[1:]:
        state.union_tensors(result, t)
    if tensors[0].shape != out.shape:
        # The first operand was the broadcast one (e.g. gate * x): take ids from the full one.
        full = next((t for t in tensors if t.shape == out.shape), None)
        result = full if full is not None else result.contiguous()
    return result


def _replay(node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Run the node's own op on the id tensors."""
    if node.op == "call_method":
        self_, *rest = args
        return getattr(self_, node.target)(*rest, **kwargs)
    return node.target(*args, **kwargs)


def cat(state: State, node, out, args, kwargs):
    tensors = args[0] if args else kwargs["tensors"]
    if any(t is None for t in tensors):
        return unknown(state, node, out, args, kwargs)
    return _replay(node, args, kwargs)


def reshape_like(state: State, node, out, args, kwargs):
    """view/reshape/flatten/squeeze/unsqueeze: fine unless the channel dim is split or moved."""
    x = args[0]
    ids = _replay(node, args, kwargs)
    if _ids.keeps_channel_dim(x.shape, ids.shape) or _ids.is_flatten_of_channels(x.shape, ids.shape):
        return ids
    reason = (f"{_name(node)} ({node.name}) reshapes the channel dimension {tuple(x.shape)} -> "
              f"{tuple(ids.shape)} (e.g. a channel shuffle): removing a channel would change which "
              "channels meet downstream")
    state.stop(x, reason)
    return fresh_stopped(state, out, reason)


def transpose_like(state: State, node, out, args, kwargs):
    """transpose/permute: fine while the channel order along dim 1 is untouched."""
    x = args[0]
    ids = _replay(node, args, kwargs)
    before, after = _ids.along(x, 1), _ids.along(ids, 1)
    if before is not None and after is not None and torch.equal(before, after):
        return ids
    reason = f"{_name(node)} ({node.name}) moves the channel dimension; its channels cannot be removed"
    state.stop(x, reason)
    return fresh_stopped(state, out, reason)


def _dim_arg(node: torch.fx.Node, args: tuple, kwargs: dict, position: int, default: int) -> int:
    dim = kwargs.get("dim", args[position] if len(args) > position else default)
    return dim


def split_like(state: State, node, out, args, kwargs):
    """chunk/split along channels cut at fixed positions: removing a channel moves the cut."""
    x = args[0]
    dim = _dim_arg(node, args, kwargs, 2, 0)
    if isinstance(dim, int) and x.dim() >= 2 and dim % x.dim() == 1:
        reason = (f"{_name(node)} ({node.name}) splits the channel dimension at fixed positions: "
                  "removing a channel would move channels from one part to the other")
        state.stop(x, reason)
        return fresh_stopped(state, out, reason)
    return _replay(node, args, kwargs)


def getitem(state: State, node, out, args, kwargs):
    base, idx = args
    if not isinstance(base, torch.Tensor):
        return None if base is None else base[idx]
    index = idx if isinstance(idx, tuple) else (idx,)
    full = slice(None)
    if all(i == full for i in index[:2]) and Ellipsis not in index[:2] and None not in index[:2]:
        return base[idx]
    reason = f"indexing ({node.name}) selects channels at fixed positions; its channels cannot be removed"
    state.stop(base, reason)
    return fresh_stopped(state, out, reason)


def reduction(state: State, node, out, args, kwargs):
    """mean/sum/amax over some dims: fine when the channel dim is kept and was uniform."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    if dim is None or not isinstance(out, torch.Tensor):
        return unknown(state, node, out, args, kwargs)
    dims = [d % x.dim() for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
    if 1 in dims or 0 in dims:
        return unknown(state, node, out, args, kwargs)
    hi, lo = x.amax(dim=dims, keepdim=keepdim), x.amin(dim=dims, keepdim=keepdim)
    if not torch.equal(hi, lo):
        return unknown(state, node, out, args, kwargs)
    return hi


def placeholder(state: State, node, out, args, kwargs):
    return fresh_stopped(state, out, "network input")


# --- modules --------------------------------------------------------------------------

def conv(state: State, node, out, args, kwargs):
    m: nn.Module = node.graph.owning_module.get_submodule(node.target)
    x = args[0]
    cids = _ids.along(x, 1)
    if cids is None:
        return unknown(state, node, out, args, kwargs)
    name = node.target
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    state.add_members(cids, name, "in")
    new = state.new(cout)
    out_ids = torch.as_tensor(list(new), dtype=torch.long)
    state.add_members(out_ids, name, "out")
    if g > 1 and g == cin:  # depthwise, with a channel multiplier when cout > cin
        mult = cout // cin
        for c in range(cin):
            for t in range(mult):
                state.uf.union(int(cids[c]), int(out_ids[c * mult + t]))
    elif g > 1:
        state.grouped[name] = GroupedConv(name, g, cin, cout)
    return _ids.broadcast_channels(out_ids, out.shape)


def linear(state: State, node, out, args, kwargs):
    m: nn.Linear = node.graph.owning_module.get_submodule(node.target)
    cids = _ids.along(args[0], -1)
    if cids is None:
        return unknown(state, node, out, args, kwargs)
    state.add_members(cids, node.target, "in")
    out_ids = torch.as_tensor(list(state.new(m.out_features)), dtype=torch.long)
    state.add_members(out_ids, node.target, "out")
    return _ids.broadcast_channels(out_ids, out.shape, -1)


def batchnorm(state: State, node, out, args, kwargs):
    cids = _ids.along(args[0], 1)
    if cids is None:
        return unknown(state, node, out, args, kwargs)
    state.add_members(cids, node.target, "bn")
    return args[0]


def flatten_module(state: State, node, out, args, kwargs):
    m: nn.Flatten = node.graph.owning_module.get_submodule(node.target)
    x = args[0]
    ids = torch.flatten(x, m.start_dim, m.end_dim)
    if _ids.keeps_channel_dim(x.shape, ids.shape) or _ids.is_flatten_of_channels(x.shape, ids.shape):
        return ids
    reason = f"{node.target} flattens the channel dimension into the batch; its channels are kept"
    state.stop(x, reason)
    return fresh_stopped(state, out, reason)


CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)

#: Modules whose output has their input's shape and dtype (used to skip work on meta tensors).
SHAPE_PRESERVING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)

MODULE_HANDLERS: dict[type, Handler] = {
    **{cls: channelwise for cls in CHANNELWISE_MODULES},
    nn.Conv1d: conv, nn.Conv2d: conv, nn.Conv3d: conv,
    nn.Linear: linear,
    nn.BatchNorm1d: batchnorm, nn.BatchNorm2d: batchnorm, nn.BatchNorm3d: batchnorm,
    nn.Flatten: flatten_module,
}

_CHANNELWISE_FUNCTIONS = [
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, F.dropout, F.dropout2d, F.max_pool1d,
    F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, torch.clone, torch.clamp, F.softplus,
]
_ELEMENTWISE_FUNCTIONS = [operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
                          torch.mul, torch.div, operator.iadd, operator.imul]

FUNCTION_HANDLERS: dict[Any, Handler] = {
    **{f: channelwise for f in _CHANNELWISE_FUNCTIONS},
    **{f: elementwise for f in _ELEMENTWISE_FUNCTIONS},
    torch.cat: cat, torch.concat: cat,
    torch.flatten: reshape_like, torch.reshape: reshape_like, torch.squeeze: reshape_like,
    torch.unsqueeze: reshape_like,
    torch.transpose: transpose_like, torch.permute: transpose_like,
    torch.chunk: split_like, torch.split: split_like, torch.tensor_split: split_like,
    operator.getitem: getitem,
    torch.mean: reduction, torch.sum: reduction, torch.amax: reduction,
    builtins.getattr: no_ids,
}

METHOD_HANDLERS: dict[str, Handler] = {
    **{m: channelwise for m in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "contiguous",
                               "clone", "float", "to", "type_as", "detach")},
    **{m: elementwise for m in ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")},
    **{m: reshape_like for m in ("view", "reshape", "flatten", "squeeze", "unsqueeze")},
    **{m: transpose_like for m in ("transpose", "permute")},
    **{m: split_like for m in ("chunk", "split", "tensor_split")},
    **{m: reduction for m in ("mean", "sum", "amax")},
    **{m: no_ids for m in ("size", "dim")},
}
