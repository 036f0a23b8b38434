"""How channels move through each op: the trace handlers that are not one layer type's.

A handler gets the analysis state, the node, its real (meta) output and its arguments with
every tensor replaced by its id tensor, and returns the id tensor(s) of the output. Layer
types (``graph/layers/``) have their own handler (``LayerType.flow``); the tables of
functions and tensor methods are in ``_handlers.py``. Ops without a handler stop every
channel they touch: an op the engine does not know is never assumed to be element-wise.
Every stop records a reason that names the op and where it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from . import _ids, _shuffle
from ._state import State

Handler = Callable[[State, torch.fx.Node, Any, tuple, dict], Any]


def tensors_in(args: Any) -> list[torch.Tensor]:
    """Every tensor inside a nested structure of arguments or results."""
    out: list[torch.Tensor] = []
    torch.fx.node.map_aggregate(args, lambda a: out.append(a) if isinstance(a, torch.Tensor) else None)
    return out


def describe(node: torch.fx.Node) -> str:
    """``view (view_2 in stages.0.shuffle, a ChannelShuffle)``: the op and where it runs."""
    if node.op == "call_module":
        return f"{node.target} ({type(module_of(node)).__name__})"
    t = node.target
    op = t if isinstance(t, str) else getattr(t, "__name__", str(t))
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, cls = list(stack.values())[-1]
        return f"{op} ({node.name} in {path}, a {getattr(cls, '__name__', cls)})"
    return f"{op} ({node.name} in the top-level forward)"


def module_of(node: torch.fx.Node) -> nn.Module:
    """The module a call_module node runs: its dotted name walked down ``_modules``, where
    the tracer found it (``get_submodule`` does the same walk through ``getattr``, 10x slower)."""
    module = node.graph.owning_module
    for part in node.target.split("."):
        module = module._modules[part]
    return module


def fresh_stopped(state: State, out: Any, reason: str) -> Any:
    """New ids for every tensor in ``out`` (one per channel), all stopped."""

    def make(t):
        if not isinstance(t, torch.Tensor):
            return None
        dim = 1 if t.dim() >= 2 else 0
        ids = _ids.fresh(state.new(t.shape[dim] if t.dim() else 1), t.shape, dim)
        state.stop(ids, reason)
        return ids

    return torch.fx.node.map_aggregate(out, make)


def stop_all(state: State, out: Any, args: Any, reason: str) -> Any:
    """Stop the channels of every input tensor and give the output fresh, stopped ids."""
    for t in tensors_in(args):
        state.stop(t, reason)
    return fresh_stopped(state, out, reason)


def unknown(state: State, node, out, args, kwargs):
    if node.op == "call_module":
        reason = (
            f"{describe(node)} is a module the engine does not look into (a leaf module, or a type without "
            "a flow handler: see secateurs.register_layer); its input and output channels are kept"
        )
    else:
        table = "METHOD_HANDLERS" if node.op == "call_method" else "FUNCTION_HANDLERS"
        reason = (
            f"{describe(node)} is an op without a channel handler, so the channels it touches are kept "
            f"(unknown ops are never assumed element-wise); register one in secateurs.graph.{table}"
        )
    return stop_all(state, out, (args, kwargs), reason)


def get_attr(state: State, node, out, args, kwargs):
    return fresh_stopped(
        state,
        out,
        f"tensor attribute {node.target!r} is used directly in forward and the "
        "engine cannot narrow it, so the channels it meets are kept",
    )


def placeholder(state: State, node, out, args, kwargs):
    return fresh_stopped(state, out, "network input")


def channelwise(state: State, node, out, args, kwargs):
    """Output channel c comes from input channel c alone (activations, pooling, dropout)."""
    x = args[0] if args else next(iter(kwargs.values()))
    if not isinstance(out, torch.Tensor):
        return unknown(state, node, out, args, kwargs)
    if x.shape == out.shape:
        if _shuffle.is_marked(state, node.args[0] if node.args else None):
            state.split_nodes.add(node.name)  # e.g. the .contiguous() inside a shuffle
        return x
    cids = _ids.along(x, 1)
    if cids is None or out.dim() < 2 or out.shape[1] != cids.numel():
        return unknown(state, node, out, args, kwargs)
    return _ids.broadcast_channels(cids, out.shape)


def elementwise(state: State, node, out, args, kwargs):
    """add/sub/mul/div with broadcasting: the channels met at one position are tied.

    An operand of one channel broadcast over all channels (a spatial gate) ties nothing:
    removing any channel of the other operand leaves the rest of the product as it was.
    Its own channel is stopped, since removing it would empty every channel.
    """
    tensors = tensors_in((args, kwargs))
    if not isinstance(out, torch.Tensor) or not tensors:
        return None
    if out.dim() < 2:
        return _tie_everywhere(state, tensors, out)
    spans = []
    for t in tensors:
        d = t.dim() - out.dim() + 1  # the operand's dim that lines up with the channel dim
        if d >= 0 and t.shape[d] == out.shape[1]:
            spans.append((t, d))
        else:
            state.stop(
                t,
                f"{describe(node)} broadcasts this one-channel operand over every channel of the "
                "other, so removing it would empty them all",
            )
    cids = [_ids.along(t, d) for t, d in spans]
    if any(c is None for c in cids):  # mixed ids inside a channel: tie position by position
        return _tie_everywhere(state, [t for t, _ in spans], out)
    for c in cids[1:]:
        state.tie(cids[0], c)
    return _ids.broadcast_channels(cids[0], out.shape)


def _tie_everywhere(state: State, tensors: list[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Tie the ids met at every position (no channel dim, or ids mixed inside channels)."""
    first = torch.broadcast_to(tensors[0], out.shape)
    for t in tensors[1:]:
        a, b = torch.broadcast_tensors(first, t)
        pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)]), dim=1)
        state.tie(pairs[0], pairs[1])
    return first


def _replay(node: torch.fx.Node, args: tuple, kwargs: dict) -> Any:
    """Run the node's own op on the id tensors (``view`` as ``reshape``: id tensors are often
    broadcast views, which ``view`` cannot always reshape)."""
    if node.op == "call_method":
        self_, *rest = args
        return getattr(self_, "reshape" if node.target == "view" else node.target)(*rest, **kwargs)
    return node.target(*args, **kwargs)


def _dim_arg(args: tuple, kwargs: dict, position: int, default: int) -> Any:
    return kwargs.get("dim", args[position] if len(args) > position else default)


def cat(state: State, node, out, args, kwargs):
    """Concatenation along channels stacks the id vectors; along another dim it ties them."""
    tensors = list(args[0] if args else kwargs["tensors"])
    dim = _dim_arg(args, kwargs, 1, 0)
    cids = [_ids.along(t, 1) if t.dim() >= 2 else None for t in tensors]
    if any(c is None for c in cids) or not isinstance(dim, int):
        return _replay(node, args, kwargs)
    if dim % out.dim() == 1:  # keep the result an expanded view
        return _ids.broadcast_channels(torch.cat(cids), out.shape)
    for c in cids[1:]:
        state.tie(cids[0], c)
    return _ids.broadcast_channels(cids[0], out.shape)


def _literal_width(node: torch.fx.Node) -> int | None:
    """The size a view/reshape gives dim 1 as a constant in the code (e.g. ``view(n, 512)``)."""
    if node.target not in ("view", "reshape", torch.reshape):
        return None
    shape = node.args[1:] if node.op == "call_method" else node.args[1:2]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    width = shape[1] if len(shape) > 1 else None
    return width if isinstance(width, int) and width != -1 else None


def reshape_like(state: State, node, out, args, kwargs):
    """view/reshape/flatten/squeeze/unsqueeze: fine unless the channel dim is split or moved,
    or its size is written into the code (it would be wrong once channels are removed). A
    split into a written and a computed size, and its merge back, are a shuffle's halves:
    ``_shuffle`` maps them exactly."""
    x = args[0]
    if _shuffle.is_marked(state, node.args[0]) and _literal_width(node) is None:
        merged = _shuffle.merge(state, node, x, out)
        if merged is not None:
            return merged
    ids = _replay(node, args, kwargs)
    if _shuffle.split(state, node, x, ids):
        return ids
    if not (_ids.keeps_channel_dim(x.shape, ids.shape) or _ids.is_flatten_of_channels(x.shape, ids.shape)):
        reason = (
            f"{describe(node)} reshapes the channel dimension {tuple(x.shape)} -> {tuple(ids.shape)} "
            "(e.g. a channel shuffle): removing a channel would change which channels meet downstream"
        )
        return stop_all(state, out, x, reason)
    width = _literal_width(node)
    if width is not None:
        reason = (
            f"{describe(node)} hard-codes {width} as the size of dim 1; removing a channel would break it "
            "(read the size from the tensor, x.size(1), or use -1)"
        )
        return stop_all(state, out, x, reason)
    return ids


def transpose_like(state: State, node, out, args, kwargs):
    """transpose/permute: fine while the channel order along dim 1 is untouched."""
    x = args[0]
    ids = _replay(node, args, kwargs)
    before, after = _ids.along(x, 1), _ids.along(ids, 1)
    if (before is not None and after is not None and torch.equal(before, after)) or _shuffle.swap(state, node, x, ids):
        return ids
    return stop_all(state, out, x, f"{describe(node)} moves the channel dimension")


def split_like(state: State, node, out, args, kwargs):
    """chunk/split along channels cut at fixed positions: removing a channel moves the cut,
    unless the parts are equal chunks that lose the same positions (see ``_shuffle``)."""
    x = args[0]
    dim = _dim_arg(args, kwargs, 2, 0)
    if isinstance(dim, int) and x.dim() >= 2 and dim % x.dim() == 1:
        parts = kwargs.get("chunks", args[1] if len(args) > 1 else None)
        if (
            node.target in ("chunk", torch.chunk)
            and isinstance(parts, int)
            and _shuffle.equal_chunks(state, node, x, parts)
        ):
            return _replay(node, args, kwargs)
        reason = (
            f"{describe(node)} splits the channel dimension at fixed positions: removing a channel would "
            "move channels from one part to the other"
        )
        return stop_all(state, out, x, reason)
    return _replay(node, args, kwargs)


def getitem(state: State, node, out, args, kwargs):
    base, idx = args
    if not isinstance(base, torch.Tensor):
        return base[idx]  # an element of a tuple of id tensors, or of a real size
    index = idx if isinstance(idx, tuple) else (idx,)
    if all(isinstance(i, slice) and i == slice(None) for i in index[:2]):
        return base[idx]
    return stop_all(state, out, base, f"{describe(node)} indexes the batch or channel dimension at fixed positions")


def reduction(state: State, node, out, args, kwargs):
    """mean/sum/amax over some dims: fine when the channel dim is kept and was uniform."""
    x = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dim is None or not isinstance(out, torch.Tensor):
        return stop_all(state, out, x, f"{describe(node)} reduces over every dimension")
    dims = {d % x.dim() for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
    if dims & {0, 1}:
        return stop_all(state, out, x, f"{describe(node)} reduces over the batch or channel dimension")
    cids = _ids.along(x, 1)
    if cids is not None and out.dim() >= 2 and out.shape[1] == cids.numel():
        return _ids.broadcast_channels(cids, out.shape)
    return unknown(state, node, out, args, kwargs)
