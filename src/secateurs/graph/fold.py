"""``fold_constant_channels``: remove channels whose output is a known constant and fold the
constant into the layers that read it, so that the network computes the same function.

A constant ``v`` at output channel ``c`` of a layer is carried forward along the fx graph
through channel-wise ops (BatchNorm in eval mode, activations, pooling, depthwise convs)
until it reaches layers that mix channels (convs, linears). There it is a fixed
contribution ``delta_o = v * sum_k W[o, c, k]`` to every output ``o``: it goes into the
consumer's bias, or, for a bias-free conv feeding a BatchNorm, out of that BN's running
mean. The channel's unit is then removed by the engine's surgery (METHODS.md, the shift
fusion of methods 1 and 3). Anything else on the way (an add with a live tensor, a
shuffle, an op without a rule) refuses the request before the model is touched.

    >>> report = fold_constant_channels(model, torch.randn(1, 3, 32, 32), {"layer1.0.bn1": {5: 0.12}})
    >>> report.exact, report.approximate_at   # (False, ('layer1.0.conv2',)) for a padded 3x3 consumer

Zero padding makes a constant non-constant at the borders: a fold through or into a
zero-padded conv is exact only away from them, and the report names those layers.
"""
from __future__ import annotations

import builtins
import difflib
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import PruningError
from ._state import Member
from .groups import ChannelGraph, Unit
from .surgery import remove_units
from .trace import MetaInterpreter, trace

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Values = dict[int, float]  # position along dim 1 (channel, or feature after flatten) -> constant


@dataclass(frozen=True)
class FoldedChannel:
    """One constant channel that was removed and folded."""

    module: str  # as named in the request
    channel: int
    value: float
    consumers: tuple[str, ...]  # the layers that read the constant and absorbed it
    absorbed_by: tuple[str, ...]  # where it went: "conv2.bias", "bn3.running_mean", "fc.bias (new)"
    approximate_at: tuple[str, ...]  # zero-padded layers on the path: the fold is exact only away from borders
    removed: tuple[Member, ...]  # every place the channel lived

    @property
    def exact(self) -> bool:
        return not self.approximate_at


@dataclass
class FoldReport:
    """What :func:`fold_constant_channels` removed and where the constants went."""

    channels: list[FoldedChannel] = field(default_factory=list)
    new_biases: tuple[str, ...] = ()  # layers that had no bias and were given one

    @property
    def exact(self) -> bool:
        """True when every fold leaves the outputs unchanged everywhere, borders included."""
        return all(c.exact for c in self.channels)

    @property
    def approximate_at(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for c in self.channels for name in c.approximate_at))

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for c in self.channels for name in c.consumers))

    @property
    def num_removed(self) -> int:
        return len(self.channels)

    @property
    def num_exact(self) -> int:
        return sum(c.exact for c in self.channels)

    def summary(self) -> str:
        lines = [f"{self.num_removed} constant channels folded ({self.num_exact} exactly) into "
                 f"{len(self.consumers)} layers" + (f"; new biases: {', '.join(self.new_biases)}" if self.new_biases
                                                     else "")]
        lines += [f"  {c.module}[{c.channel}] = {c.value:.6g} -> {', '.join(c.absorbed_by)}"
                  + ("" if c.exact else f" (exact away from the borders of {', '.join(c.approximate_at)})")
                  for c in self.channels]
        return "\n".join(lines)


# --- context: the traced graph plus what the rules need to know about it ---------------

class _Outputs(MetaInterpreter):
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
class _Context:
    gm: torch.fx.GraphModule
    modules: dict[str, nn.Module]
    outputs: dict[torch.fx.Node, Any]  # meta tensors, sizes, ints
    calls: Counter

    @classmethod
    def build(cls, model: nn.Module, graph: ChannelGraph, example_inputs: Any) -> "_Context":
        outputs = _Outputs(graph.gm)
        modes = [(m, m.training) for m in model.modules()]  # per module: a frozen BN stays frozen
        model.eval()
        try:
            outputs.run_meta(example_inputs)
        finally:
            for m, mode in modes:
                m.train(mode)
        calls = Counter(n.target for n in graph.gm.graph.nodes if n.op == "call_module")
        return cls(graph.gm, dict(model.named_modules()), outputs.out, calls)

    def is_tensor(self, node: Any) -> bool:
        return isinstance(node, torch.fx.Node) and isinstance(self.outputs.get(node), torch.Tensor)

    def shape(self, node: torch.fx.Node) -> torch.Size:
        return self.outputs[node].shape


class _Walk:
    """Carries one constant forward and records what it touched."""

    def __init__(self, ctx: _Context, what: str) -> None:
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
            raise self.refuse(node, f"{node.target!r} is called {n} times in forward, so changing it for the "
                                    "constant would change its other calls too")
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
                out = _rule_for(self.ctx, user)(self, user, node, vals)
                if out:
                    stack.append((user, out))


# --- rules: how a constant passes each op -----------------------------------------------
# A rule gets the walk, the node, the input node that carries the constant and the
# constants at that input; it returns the constants at the node's output, or None when
# the node absorbed them (a consumer) or they no longer matter (a size query).

Rule = Callable[[_Walk, torch.fx.Node, torch.fx.Node, Values], "Values | None"]


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


def _substitute(walk: _Walk, node: torch.fx.Node, src: torch.fx.Node, value: torch.Tensor) -> tuple[tuple, dict]:
    """The node's arguments with ``src`` replaced by ``value``; refuses any other live tensor."""
    def sub(a):
        if a is src:
            return value
        if walk.ctx.is_tensor(a):
            raise walk.refuse(node, f"{_op_name(node)} combines the constant with the non-constant tensor "
                                    f"{a.name!r}")
        return walk.ctx.outputs[a] if isinstance(a, torch.fx.Node) else a
    return torch.fx.node.map_arg(node.args, sub), torch.fx.node.map_arg(node.kwargs, sub)


def _first_input(walk: _Walk, node: torch.fx.Node, src: torch.fx.Node) -> None:
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
        delta[k * per_out:(k + 1) * per_out] += v * w[k * per_out:(k + 1) * per_out, i - k * per_in]
    if padded:
        walk.approximate.setdefault(node.target, "conv with zero padding")
    walk.consume(node, delta)
    return None


def _linear(walk, node, src, values):
    _first_input(walk, node, src)
    m = walk.module(node)
    if len(walk.ctx.shape(src)) != 2:
        raise walk.refuse(node, f"{node.target!r} reads a {len(walk.ctx.shape(src))}-D tensor; the fold handles "
                                "a Linear over (batch, features)")
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
    raise walk.refuse(node, f"{_op_name(node)} reshapes the channel dimension {tuple(before)} -> {tuple(after)} "
                            "(e.g. a channel shuffle)")


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
    raise walk.refuse(node, f"{_op_name(node)} is not an op the fold can carry a constant through; register a rule "
                            "in secateurs.graph.fold.MODULE_RULES / FUNCTION_RULES / METHOD_RULES")


_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                      nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus)
_SAME_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d,
                 nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
                 nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)

MODULE_RULES: dict[type, Rule] = {
    **{cls: _pointwise_module for cls in _POINTWISE_MODULES},
    **{cls: _same for cls in _SAME_MODULES},
    nn.AvgPool1d: _avg_pool, nn.AvgPool2d: _avg_pool, nn.AvgPool3d: _avg_pool,
    **{cls: _batchnorm for cls in _BATCHNORMS},
    **{cls: _conv for cls in _CONVS},
    nn.Linear: _linear,
    nn.Flatten: _reshape,
}

FUNCTION_RULES: dict[Any, Rule] = {
    **{f: _pointwise_function for f in (
        F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
        F.sigmoid, F.tanh, F.softplus, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
        # element-wise with a number (x * 0.5, x + 3); with a live tensor the substitution refuses
        operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
        torch.add, torch.sub, torch.mul, torch.div)},
    **{f: _same for f in (torch.clone, F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.adaptive_avg_pool1d,
                          F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate)},
    F.avg_pool1d: _avg_pool, F.avg_pool2d: _avg_pool,
    torch.flatten: _reshape, torch.reshape: _reshape, torch.squeeze: _reshape, torch.unsqueeze: _reshape,
    torch.cat: _cat, torch.concat: _cat,
    operator.getitem: _getitem,
    torch.mean: _reduction, torch.sum: _reduction, torch.amax: _reduction,
    builtins.getattr: _no_value,
}

METHOD_RULES: dict[str, Rule] = {
    **{m: _pointwise_function for m in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_",
                                        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_")},
    **{m: _same for m in ("contiguous", "clone", "float", "to", "detach")},
    **{m: _reshape for m in ("view", "reshape", "flatten", "squeeze", "unsqueeze")},
    **{m: _reduction for m in ("mean", "sum", "amax")},
    **{m: _no_value for m in ("size", "dim")},
}

# Ops a channel passes unchanged in position, so a request may name the module after them.
_CHANNELWISE_RULES = (_same, _pointwise_module, _pointwise_function, _avg_pool)


def _rule_for(ctx: _Context, node: torch.fx.Node) -> Rule:
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


# --- one request: where the channel lives, what the constant does ------------------------

@dataclass
class _Plan:
    request: tuple[str, int, float]
    unit: Unit
    unit_key: tuple[int, int]
    walk: _Walk


def _start_node(ctx: _Context, name: str) -> torch.fx.Node:
    if name not in ctx.modules:
        close = difflib.get_close_matches(name, list(ctx.modules), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise PruningError(f"the model has no module {name!r}{hint}")
    nodes = [n for n in ctx.gm.graph.nodes if n.op == "call_module" and n.target == name]
    m = ctx.modules[name]
    if not nodes:
        raise PruningError(f"{name!r} ({type(m).__name__}) is not a layer called in the traced forward; name the "
                           "Conv, BatchNorm or activation whose output channel is constant")
    if len(nodes) > 1:
        raise PruningError(f"{name!r} is called {len(nodes)} times in forward, so 'its output' is ambiguous; name "
                           "the BatchNorm or conv before the call you mean")
    return nodes[0]


def _trace_back(walk: _Walk, node: torch.fx.Node, c: int) -> None:
    """Touch the layers that produce channel ``c`` of ``node``'s output, up to the first
    conv or linear: removing the channel removes them, and they read nothing else of it."""
    while True:
        if node.op == "call_module":
            m = walk.ctx.modules[node.target]
            if isinstance(m, _CONVS):
                walk.touch(node.target, "out", c)
                if not (m.groups > 1 and m.groups == m.in_channels):
                    return
                c //= m.out_channels // m.in_channels  # depthwise: input channel c feeds this output
                walk.touch(node.target, "in", c)
                node = node.args[0]
                continue
            if isinstance(m, nn.Linear):
                walk.touch(node.target, "out", c)
                return
            if isinstance(m, _BATCHNORMS):
                walk.touch(node.target, "bn", c)
                node = node.args[0]
                continue
        inputs = [a for a in node.all_input_nodes if walk.ctx.is_tensor(a)]
        if _rule_for(walk.ctx, node) not in _CHANNELWISE_RULES or len(inputs) != 1:
            return  # an add, a cat, the network input: whatever else the unit holds is not covered
        node = inputs[0]


def _plan(ctx: _Context, graph: ChannelGraph, name: str, channel: Any, value: Any) -> _Plan:
    start = _start_node(ctx, name)
    m = ctx.modules[name]
    if not isinstance(m, _CONVS + _BATCHNORMS + (nn.Linear,)) and _rule_for(ctx, start) not in _CHANNELWISE_RULES:
        raise PruningError(f"{name!r} is a {type(m).__name__}; name a Conv, Linear, BatchNorm or channel-wise "
                           "activation whose output channel is constant")
    shape = ctx.shape(start) if ctx.is_tensor(start) else None
    if shape is None or len(shape) < 2 or (isinstance(m, nn.Linear) and len(shape) != 2):
        raise PruningError(f"the output of {name!r} has shape {None if shape is None else tuple(shape)}; the fold "
                           "needs (batch, channels, ...)")
    width = shape[1]
    try:
        if isinstance(channel, bool):
            raise TypeError
        channel = operator.index(channel)  # Python, NumPy and 0-d torch integers
    except TypeError:
        raise PruningError(f"channel {channel!r} of {name!r} is not an integer index") from None
    if not 0 <= channel < width:
        raise PruningError(f"channel {channel} of {name!r} is out of range: it has {width} output channels "
                           f"(0..{width - 1})")
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise PruningError(f"the constant for channel {channel} of {name!r} must be a number, not {value!r}") from e
    if not math.isfinite(value):
        raise PruningError(f"the constant for channel {channel} of {name!r} is {value}; it must be finite")
    walk = _Walk(ctx, f"channel {channel} of {name!r}")
    _trace_back(walk, start, channel)
    located = _locate(graph, walk)
    if located is not None:
        _check_prunable(located[0], name, channel)
    walk.carry(start, {channel: value})
    located = located or _locate(graph, walk)
    if located is None:
        raise PruningError(f"channel {channel} of {name!r} belongs to no channel group (no layer produces or reads "
                           "it)")
    unit, key = located
    _check_prunable(unit, name, channel)
    _check_covers(graph, walk, unit, key)
    return _Plan((name, channel, value), unit, key, walk)


def _locate(graph: ChannelGraph, walk: _Walk) -> tuple[Unit, tuple[int, int]] | None:
    """The unit of the first place the walk touched (``_check_covers`` checks the rest)."""
    for mem in sorted(walk.members):
        hit = graph.locate(mem.module, mem.kind, mem.index)
        if hit is not None:
            group, pos = hit
            return group.units[pos], (id(group), pos)
    return None


def _check_prunable(unit: Unit, name: str, channel: int) -> None:
    if not unit.prunable:
        raise PruningError(f"channel {channel} of {name!r} cannot be removed: {unit.reason}")


def _check_covers(graph: ChannelGraph, walk: _Walk, unit: Unit, key: tuple[int, int]) -> None:
    """The constant must reach every place the unit lives, and nothing outside it."""
    foreign = [m for m in sorted(walk.members)
               if (hit := graph.locate(m.module, m.kind, m.index)) is None or (id(hit[0]), hit[1]) != key]
    if foreign:
        raise PruningError(f"cannot fold {walk.what}: the traced graph places {foreign[0]} in another channel "
                           "group; trace the model again (was it pruned since?)")
    uncovered = [m for m in unit.members if m not in walk.members]
    if uncovered:
        shown = ", ".join(f"{m.module} ({m.kind} {m.index})" for m in uncovered[:4])
        more = f" and {len(uncovered) - 4} more" if len(uncovered) > 4 else ""
        raise PruningError(f"cannot fold {walk.what}: the channel also lives in {shown}{more}, which the constant "
                           "does not reach (a residual add, a concat or a second reader ties them to it); the "
                           "model is unchanged")


# --- applying: deltas into biases / running means, then the engine's surgery ------------

@dataclass(frozen=True)
class _Target:
    module: nn.Module
    attr: str
    sign: float
    label: str
    like: torch.Tensor  # dtype and device of a new tensor
    new: bool = False  # a bias the layer did not have


def _target(ctx: _Context, consumer: str) -> _Target:
    """Where ``consumer``'s delta goes: its bias; else the running mean of the BN it alone feeds; else a new bias."""
    m = ctx.modules[consumer]
    if m.bias is not None:
        return _Target(m, "bias", 1.0, f"{consumer}.bias", m.bias)
    node = next(n for n in ctx.gm.graph.nodes if n.op == "call_module" and n.target == consumer)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and ctx.calls[users[0].target] == 1:
        bn = ctx.modules[users[0].target]
        if isinstance(bn, _BATCHNORMS) and bn.running_mean is not None:
            return _Target(bn, "running_mean", -1.0, f"{users[0].target}.running_mean", bn.running_mean)
    return _Target(m, "bias", 1.0, f"{consumer}.bias (new)", m.weight, new=True)


def _shifted(t: _Target, delta: torch.Tensor) -> torch.Tensor:
    old = getattr(t.module, t.attr)
    base = old.detach().double() if old is not None else torch.zeros_like(delta)
    new = (base + t.sign * delta.to(base.device)).to(dtype=t.like.dtype, device=t.like.device)
    if t.attr == "bias":
        return nn.Parameter(new, requires_grad=t.like.requires_grad)
    return new


def fold_refusals(model: nn.Module, example_inputs: Any, channels: list[tuple[str, int]],
                  graph: ChannelGraph | None = None) -> dict[tuple[str, int], str]:
    """Why each ``(module, channel)`` could not be folded on its own (absent: it could).

    Checks what :func:`fold_constant_channels` would check, without changing anything, so
    a method can keep only the channels whose constant reaches every place they live.
    """
    graph = graph or trace(model, example_inputs)
    ctx = _Context.build(model, graph, example_inputs)
    refused: dict[tuple[str, int], str] = {}
    for name, channel in channels:
        try:
            _plan(ctx, graph, name, channel, 0.0)
        except PruningError as e:
            refused[(name, channel)] = str(e)
    return refused


def fold_constant_channels(model: nn.Module, example_inputs: Any, constants: Mapping[str, Mapping[int, float]],
                           graph: ChannelGraph | None = None) -> FoldReport:
    """Remove channels whose output is a known constant, folding the constant into their readers.

    The eval-mode function is preserved: exactly when no zero-padded conv or average pool
    lies on the way (see :attr:`FoldReport.approximate_at`), else away from the borders.

    Args:
        model: the network; changed in place.
        example_inputs: a tensor or tuple of tensors the model accepts.
        constants: ``{module_name: {channel: value}}``: output channel ``channel`` of the
            module (a Conv, Linear, BatchNorm or channel-wise activation such as ReLU) is
            ``value`` at every position, e.g. a conv filter with no kernels left outputs
            its bias, a BN channel with gamma = 0 outputs beta.
        graph: a :func:`trace` of this very model, to skip tracing again; stale afterwards.

    Raises:
        PruningError: a channel is unknown, out of range or not prunable, or its constant
            would have to pass anything but a chain of channel-wise ops (an add or mul
            with a live tensor, a shuffle, a concat along space) or misses a place where
            the channel lives. Everything is checked first; the model is then unchanged.
    """
    if not constants:
        return FoldReport()
    graph = graph or trace(model, example_inputs)
    ctx = _Context.build(model, graph, example_inputs)
    plans: dict[tuple[int, int], _Plan] = {}
    for name, channels in constants.items():
        for channel, value in channels.items():
            plan = _plan(ctx, graph, name, channel, value)
            if plan.unit_key in plans:
                other = plans[plan.unit_key].request
                raise PruningError(f"channel {channel} of {name!r} and channel {other[1]} of {other[0]!r} are the "
                                   "same channel (one unit); give its constant once")
            plans[plan.unit_key] = plan
    totals: dict[str, torch.Tensor] = {}
    for p in plans.values():
        for consumer, delta in p.walk.deltas.items():
            totals[consumer] = totals.get(consumer, 0) + delta
    targets = {consumer: _target(ctx, consumer) for consumer in totals}
    new_values = {consumer: _shifted(targets[consumer], delta) for consumer, delta in totals.items()}

    undo: list[tuple[nn.Module, str, Any]] = []
    try:
        for consumer, value in new_values.items():
            t = targets[consumer]
            undo.append((t.module, t.attr, getattr(t.module, t.attr)))
            setattr(t.module, t.attr, value)
        remove_units(model, graph, [p.unit for p in plans.values()], example_inputs)
    except Exception:
        for module, attr, old in reversed(undo):
            setattr(module, attr, old)
        raise
    channels = [FoldedChannel(
        module=p.request[0], channel=p.request[1], value=p.request[2],
        consumers=tuple(sorted(p.walk.deltas)),
        absorbed_by=tuple(targets[c].label for c in sorted(p.walk.deltas)),
        approximate_at=tuple(sorted(p.walk.approximate)),
        removed=p.unit.members) for p in plans.values()]
    new_biases = tuple(c for c, t in targets.items() if t.new)
    return FoldReport(channels, new_biases)
