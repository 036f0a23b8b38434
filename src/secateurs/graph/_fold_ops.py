"""How a constant channel passes the ops that are not one layer type's: the fold rules.

A rule gets the walk (``_fold_rules.Walk``), the node, the input node that carries the
constant and the constants at that input; it returns the constants at the node's output,
or None when the node absorbed them (a consumer) or they no longer matter (a size query).
Layer types carry their own rule (``LayerType.fold``); ``_fold_rules.py`` holds the
tables of functions and tensor methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.fx

if TYPE_CHECKING:
    from ._fold_rules import Walk

Values = dict[int, float]  # position along dim 1 (channel, or feature after flatten) -> constant
Rule = Callable[["Walk", torch.fx.Node, torch.fx.Node, Values], "Values | None"]


def op_name(node: torch.fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def substitute(walk: Walk, node: torch.fx.Node, src: torch.fx.Node, value: torch.Tensor) -> tuple[tuple, dict]:
    """The node's arguments with ``src`` replaced by ``value``; refuses any other live tensor."""

    def sub(a):
        if a is src:
            return value
        if walk.ctx.is_tensor(a):
            raise walk.refuse(node, f"{op_name(node)} combines the constant with the non-constant tensor {a.name!r}")
        return walk.ctx.outputs[a] if isinstance(a, torch.fx.Node) else a

    return torch.fx.node.map_arg(node.args, sub), torch.fx.node.map_arg(node.kwargs, sub)


def first_input(walk: Walk, node: torch.fx.Node, src: torch.fx.Node) -> None:
    if not node.args or node.args[0] is not src:
        raise walk.refuse(node, f"{op_name(node)} reads the constant in an argument other than its input")


def same(walk, node, src, values):
    """Identity, dropout (eval), max pooling, adaptive pooling, upsampling: a constant stays."""
    first_input(walk, node, src)
    return values


def pointwise_module(walk, node, src, values):
    first_input(walk, node, src)
    m = walk.ctx.modules[node.target]
    return {c: float(m(torch.tensor(v, dtype=torch.float64))) for c, v in values.items()}


def pointwise_function(walk, node, src, values):
    out = {}
    for c, v in values.items():
        args, kwargs = substitute(walk, node, src, torch.tensor(v, dtype=torch.float64))
        if node.op == "call_method":
            self_, *rest = args
            out[c] = float(getattr(self_, node.target)(*rest, **kwargs))
        else:
            out[c] = float(node.target(*args, **kwargs))
    return out


def avg_pool(walk, node, src, values):
    first_input(walk, node, src)
    if node.op == "call_module":
        m, where = walk.ctx.modules[node.target], node.target
        padding, include, divisor = m.padding, m.count_include_pad, getattr(m, "divisor_override", None)
    else:
        where = node.name
        normalized = node.normalized_arguments(walk.ctx.gm, normalize_to_only_use_kwargs=True)
        if normalized is None:
            raise walk.refuse(node, f"cannot read the arguments of {op_name(node)}")
        kw = normalized.kwargs
        padding, include, divisor = kw.get("padding", 0), kw.get("count_include_pad", True), kw.get("divisor_override")
    if divisor is not None:
        raise walk.refuse(node, "average pooling with divisor_override scales the constant by the window")
    if include and any(p > 0 for p in ((padding,) if isinstance(padding, int) else padding)):
        walk.approximate.setdefault(where, "average pooling counts the zero padding")
    return values


def reshape(walk, node, src, values):
    """Trailing dims reshaped: unchanged. ``(N, C, *S) -> (N, C*S)``: channel c fills S features."""
    first_input(walk, node, src)
    before, after = walk.ctx.shape(src), walk.ctx.shape(node)
    if len(before) >= 2 and len(after) >= 2 and tuple(before[:2]) == tuple(after[:2]):
        return values
    if len(before) >= 2 and len(after) == 2 and after[0] == before[0] and after[1] == math.prod(before[1:]):
        s = math.prod(before[2:])
        return {c * s + k: v for c, v in values.items() for k in range(s)}
    raise walk.refuse(
        node,
        f"{op_name(node)} reshapes the channel dimension {tuple(before)} -> {tuple(after)} (e.g. a channel shuffle)",
    )


def cat(walk, node, src, values):
    tensors = node.args[0] if node.args else node.kwargs["tensors"]
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim % len(walk.ctx.shape(node)) != 1:
        raise walk.refuse(node, f"cat along dim {dim} mixes the constant with the other parts' values")
    out, offset = {}, 0
    for t in tensors:
        if t is src:
            out.update({offset + c: v for c, v in values.items()})
        offset += walk.ctx.shape(t)[1]
    return out


def getitem(walk, node, src, values):
    base, idx = node.args
    index = idx if isinstance(idx, tuple) else (idx,)
    if base is src and len(index) >= 2 and all(i == slice(None) for i in index[:2]):
        return values  # a spatial crop of a constant
    raise walk.refuse(node, "indexing selects channels at fixed positions")


def reduction(walk, node, src, values):
    """mean/amax over spatial dims keep a constant; sum multiplies it by the number of terms."""
    first_input(walk, node, src)
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    shape = walk.ctx.shape(src)
    dims = None if dim is None else [d % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
    if dims is None or 0 in dims or 1 in dims:
        raise walk.refuse(node, f"{op_name(node)} reduces over the batch or channel dimension")
    scale = math.prod(shape[d] for d in dims) if op_name(node) == "sum" else 1
    return {c: v * scale for c, v in values.items()}


def no_value(walk, node, src, values):
    """size(), dim(), .shape: read the shape only, which the removal does not change for the caller."""
    if walk.ctx.is_tensor(node):
        raise walk.refuse(node, f"{op_name(node)} has no rule for carrying a constant")
    return None


def output(walk, node, src, values):
    raise walk.refuse(node, "the constant reaches the network output")


def unknown(walk, node, src, values):
    raise walk.refuse(
        node,
        f"{op_name(node)} is not an op the fold can carry a constant through; register a rule "
        "with its layer type (secateurs.register_layer, LayerType.fold) or in secateurs.graph._fold_rules's "
        "FUNCTION_RULES / METHOD_RULES",
    )
