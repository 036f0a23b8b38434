"""How a constant channel passes each op of a traced graph: the context the walk reads
(every node's meta output) and one rule per op kind, in three tables (modules,
functions, tensor methods) that :mod:`secateurs.graph.fold` walks the graph with."""

from __future__ import annotations

import builtins
import math
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PruningError
from ..measure._common import eval_mode
from ._state import Member
from .groups import ChannelGraph
from .trace import MetaInterpreter

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Values = dict[int, float]  # position along dim 1 (channel, or feature after flatten) -> constant


# --- context: the traced graph plus what the rules need to know about it ---------------


class Outputs(MetaInterpreter):
    """Records every node's output (meta tensors, sizes, ints): the shapes the rules read."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.out: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise PruningError(f"running {n.format_node()} on the example inputs failed: {e}") from e
        self.out[n] = out
        return out


@dataclass
class Context:
    gm: torch.fx.GraphModule
    modules: dict[str, nn.Module]
    outputs: dict[torch.fx.Node, Any]  # meta tensors, sizes, ints
    calls: Counter

    @classmethod
    def build(cls, model: nn.Module, graph: ChannelGraph, example_inputs: Any) -> Context:
        outputs = Outputs(graph.gm)
        with eval_mode(model):  # restores each module's own mode: a frozen BN stays frozen
            outputs.run_meta(example_inputs)
        calls = Counter(n.target for n in graph.gm.graph.nodes if n.op == "call_module")
        return cls(graph.gm, dict(model.named_modules()), outputs.out, calls)

    def is_tensor(self, node: Any) -> bool:
        return isinstance(node, torch.fx.Node) and isinstance(self.outputs.get(node), torch.Tensor)

    def shape(self, node: torch.fx.Node) -> torch.Size:
        return self.outputs[node].shape


class Walk:
    """Carries one constant forward and records what it touched."""

    def __init__(self, ctx: Context, what: str) -> None:
        self.ctx = ctx
        self.what = what  # "channel 3 of 'bn1'", for messages
        self.members: set[Member] = set()
        self.deltas: dict[str, torch.Tensor] = {}  # consumer -> float64 contribution per output
        self.approximate: dict[str, str] = {}

    def refuse(self, node: torch.fx.Node, why: str) -> PruningError:
        return PruningError(f"cannot fold {self.what}: {why} (at {node.format_node()}); the model is unchanged")

    def module(self, node: torch.fx.Node) -> nn.Module:
        """The module a call_module node runs; one with state must run exactly once."""
        n = self.ctx.calls[node.target]
        if n > 1:
            raise self.refuse(
                node,
                f"{node.target!r} is called {n} times in forward, so changing it for the "
                "constant would change its other calls too",
            )
        return self.ctx.modules[node.target]

    def touch(self, module: str, kind: str, index: int) -> None:
        self.members.add(Member(module, kind, index))

    def consume(self, node: torch.fx.Node, delta: torch.Tensor) -> None:
        self.deltas[node.target] = self.deltas.get(node.target, 0) + delta

    def carry(self, start: torch.fx.Node, values: Values) -> None:
        stack = [(start, values)]
        while stack:
            node, vals = stack.pop()
            for user in node.users:
                out = rule_for(self.ctx, user)(self, user, node, vals)
                if out:
                    stack.append((user, out))


# --- rules: how a constant passes each op -----------------------------------------------
# A rule gets the walk, the node, the input node that carries the constant and the
# constants at that input; it returns the constants at the node's output, or None when
# the node absorbed them (a consumer) or they no longer matter (a size query).

Rule = Callable[[Walk, torch.fx.Node, torch.fx.Node, Values], "Values | None"]


def _op_name(node: torch.fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _zero_padded(m: nn.Module) -> bool:
    """Zero padding turns a constant into a different value near the borders."""
    if m.padding_mode != "zeros":
        return False  # reflect / replicate / circular pad a constant with the same constant
    if isinstance(m.padding, str):
        return m.padding == "same" and any(k > 1 for k in m.kernel_size)
    return any(p > 0 for p in m.padding)


def _substitute(walk: Walk, node: torch.fx.Node, src: torch.fx.Node, value: torch.Tensor) -> tuple[tuple, dict]:
    """The node's arguments with ``src`` replaced by ``value``; refuses any other live tensor."""

    def sub(a):
        if a is src:
            return value
        if walk.ctx.is_tensor(a):
            raise walk.refuse(node, f"{_op_name(node)} combines the constant with the non-constant tensor {a.name!r}")
        return walk.ctx.outputs[a] if isinstance(a, torch.fx.Node) else a

    return torch.fx.node.map_arg(node.args, sub), torch.fx.node.map_arg(node.kwargs, sub)


def _first_input(walk: Walk, node: torch.fx.Node, src: torch.fx.Node) -> None:
    if not node.args or node.args[0] is not src:
        raise walk.refuse(node, f"{_op_name(node)} reads the constant in an argument other than its input")


def _same(walk, node, src, values):
    """Identity, dropout (eval), max pooling, adaptive pooling, upsampling: a constant stays."""
    _first_input(walk, node, src)
    return values


def _pointwise_module(walk, node, src, values):
    _first_input(walk, node, src)
    m = walk.ctx.modules[node.target]
    return {c: float(m(torch.tensor(v, dtype=torch.float64))) for c, v in values.items()}


def _pointwise_function(walk, node, src, values):
    out = {}
    for c, v in values.items():
        args, kwargs = _substitute(walk, node, src, torch.tensor(v, dtype=torch.float64))
        if node.op == "call_method":
            self_, *rest = args
            out[c] = float(getattr(self_, node.target)(*rest, **kwargs))
        else:
            out[c] = float(node.target(*args, **kwargs))
    return out


def _avg_pool(walk, node, src, values):
    _first_input(walk, node, src)
    if node.op == "call_module":
        m, where = walk.ctx.modules[node.target], node.target
        padding, include, divisor = m.padding, m.count_include_pad, getattr(m, "divisor_override", None)
    else:
        where = node.name
        normalized = node.normalized_arguments(walk.ctx.gm, normalize_to_only_use_kwargs=True)
        if normalized is None:
            raise walk.refuse(node, f"cannot read the arguments of {_op_name(node)}")
        kw = normalized.kwargs
        padding, include, divisor = kw.get("padding", 0), kw.get("count_include_pad", True), kw.get("divisor_override")
    if divisor is not None:
        raise walk.refuse(node, "average pooling with divisor_override scales the constant by the window")
    if include and any(p > 0 for p in ((padding,) if isinstance(padding, int) else padding)):
        walk.approximate.setdefault(where, "average pooling counts the zero padding")
    return values


def _batchnorm(walk, node, src, values):
    _first_input(walk, node, src)
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


def _conv(walk, node, src, values):
    """A depthwise conv turns the constant into another one; any other conv absorbs it."""
    _first_input(walk, node, src)
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


def _linear(walk, node, src, values):
    _first_input(walk, node, src)
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


def _reshape(walk, node, src, values):
    """Trailing dims reshaped: unchanged. ``(N, C, *S) -> (N, C*S)``: channel c fills S features."""
    _first_input(walk, node, src)
    before, after = walk.ctx.shape(src), walk.ctx.shape(node)
    if len(before) >= 2 and len(after) >= 2 and tuple(before[:2]) == tuple(after[:2]):
        return values
    if len(before) >= 2 and len(after) == 2 and after[0] == before[0] and after[1] == math.prod(before[1:]):
        s = math.prod(before[2:])
        return {c * s + k: v for c, v in values.items() for k in range(s)}
    raise walk.refuse(
        node,
        f"{_op_name(node)} reshapes the channel dimension {tuple(before)} -> {tuple(after)} (e.g. a channel shuffle)",
    )


def _cat(walk, node, src, values):
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


def _getitem(walk, node, src, values):
    base, idx = node.args
    index = idx if isinstance(idx, tuple) else (idx,)
    if base is src and len(index) >= 2 and all(i == slice(None) for i in index[:2]):
        return values  # a spatial crop of a constant
    raise walk.refuse(node, "indexing selects channels at fixed positions")


def _reduction(walk, node, src, values):
    """mean/amax over spatial dims keep a constant; sum multiplies it by the number of terms."""
    _first_input(walk, node, src)
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    shape = walk.ctx.shape(src)
    dims = None if dim is None else [d % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
    if dims is None or 0 in dims or 1 in dims:
        raise walk.refuse(node, f"{_op_name(node)} reduces over the batch or channel dimension")
    scale = math.prod(shape[d] for d in dims) if _op_name(node) == "sum" else 1
    return {c: v * scale for c, v in values.items()}


def _no_value(walk, node, src, values):
    """size(), dim(), .shape: read the shape only, which the removal does not change for the caller."""
    if walk.ctx.is_tensor(node):
        raise walk.refuse(node, f"{_op_name(node)} has no rule for carrying a constant")
    return None


def _output(walk, node, src, values):
    raise walk.refuse(node, "the constant reaches the network output")


def _unknown(walk, node, src, values):
    raise walk.refuse(
        node,
        f"{_op_name(node)} is not an op the fold can carry a constant through; register a rule "
        "in secateurs.graph.fold.MODULE_RULES / FUNCTION_RULES / METHOD_RULES",
    )


_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
)
_SAME_MODULES = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Upsample,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
)

MODULE_RULES: dict[type, Rule] = {
    **{cls: _pointwise_module for cls in _POINTWISE_MODULES},
    **{cls: _same for cls in _SAME_MODULES},
    nn.AvgPool1d: _avg_pool,
    nn.AvgPool2d: _avg_pool,
    nn.AvgPool3d: _avg_pool,
    **{cls: _batchnorm for cls in _BATCHNORMS},
    **{cls: _conv for cls in _CONVS},
    nn.Linear: _linear,
    nn.Flatten: _reshape,
}

FUNCTION_RULES: dict[Any, Rule] = {
    **{
        f: _pointwise_function
        for f in (
            F.relu,
            F.relu6,
            F.leaky_relu,
            F.elu,
            F.gelu,
            F.silu,
            F.mish,
            F.hardswish,
            F.hardsigmoid,
            F.hardtanh,
            F.sigmoid,
            F.tanh,
            F.softplus,
            torch.relu,
            torch.sigmoid,
            torch.tanh,
            torch.clamp,
            # element-wise with a number (x * 0.5, x + 3); with a live tensor the substitution refuses
            operator.add,
            operator.sub,
            operator.mul,
            operator.truediv,
            operator.iadd,
            operator.imul,
            torch.add,
            torch.sub,
            torch.mul,
            torch.div,
        )
    },
    **{
        f: _same
        for f in (
            torch.clone,
            F.dropout,
            F.dropout2d,
            F.max_pool1d,
            F.max_pool2d,
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_max_pool2d,
            F.interpolate,
        )
    },
    F.avg_pool1d: _avg_pool,
    F.avg_pool2d: _avg_pool,
    torch.flatten: _reshape,
    torch.reshape: _reshape,
    torch.squeeze: _reshape,
    torch.unsqueeze: _reshape,
    torch.cat: _cat,
    torch.concat: _cat,
    operator.getitem: _getitem,
    torch.mean: _reduction,
    torch.sum: _reduction,
    torch.amax: _reduction,
    builtins.getattr: _no_value,
}

METHOD_RULES: dict[str, Rule] = {
    **{
        m: _pointwise_function
        for m in (
            "relu",
            "relu_",
            "sigmoid",
            "sigmoid_",
            "tanh",
            "clamp",
            "clamp_",
            "add",
            "add_",
            "sub",
            "sub_",
            "mul",
            "mul_",
            "div",
            "div_",
        )
    },
    **{m: _same for m in ("contiguous", "clone", "float", "to", "detach")},
    **{m: _reshape for m in ("view", "reshape", "flatten", "squeeze", "unsqueeze")},
    **{m: _reduction for m in ("mean", "sum", "amax")},
    **{m: _no_value for m in ("size", "dim")},
}

# Ops a channel passes unchanged in position, so a request may name the module after them.
CHANNELWISE_RULES = (_same, _pointwise_module, _pointwise_function, _avg_pool)


def rule_for(ctx: Context, node: torch.fx.Node) -> Rule:
    if node.op == "output":
        return _output
    if node.op == "call_module":
        m = ctx.modules[node.target]
        return next((MODULE_RULES[c] for c in type(m).__mro__ if c in MODULE_RULES), _unknown)
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target, _unknown)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target, _unknown)
    return _unknown
