"""Planning one fold request: where the constant channel lives (walking back to its
producer, forward through every reader) and whether the constant reaches every place its
unit lives. Nothing is changed here; ``fold.py`` applies the plans."""

from __future__ import annotations

import difflib
import math
import operator
from dataclasses import dataclass
from typing import Any

import torch.fx

from ..errors import PruningError
from ._fold_rules import CHANNELWISE_RULES, Context, Walk, rule_for
from .groups import ChannelGraph, Unit
from .layers import layer_type

# --- one request: where the channel lives, what the constant does ------------------------


@dataclass
class FoldPlan:
    request: tuple[str, int, float]
    unit: Unit
    unit_key: tuple[int, int]
    walk: Walk


def _start_node(ctx: Context, name: str) -> torch.fx.Node:
    if name not in ctx.modules:
        close = difflib.get_close_matches(name, list(ctx.modules), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise PruningError(f"the model has no module {name!r}{hint}")
    nodes = [n for n in ctx.gm.graph.nodes if n.op == "call_module" and n.target == name]
    m = ctx.modules[name]
    if not nodes:
        raise PruningError(
            f"{name!r} ({type(m).__name__}) is not a layer called in the traced forward; name the "
            "Conv, BatchNorm or activation whose output channel is constant"
        )
    if len(nodes) > 1:
        raise PruningError(
            f"{name!r} is called {len(nodes)} times in forward, so 'its output' is ambiguous; name "
            "the BatchNorm or conv before the call you mean"
        )
    return nodes[0]


def _trace_back(walk: Walk, node: torch.fx.Node, c: int) -> None:
    """Touch the layers that produce channel ``c`` of ``node``'s output, up to the first
    conv or linear: removing the channel removes them, and they read nothing else of it."""
    while True:
        if node.op == "call_module":
            layer = layer_type(walk.ctx.modules[node.target])
            if layer is not None and layer.fold_back is not None:
                c = layer.fold_back(walk, node, c)
                if c is None:
                    return
                node = node.args[0]
                continue
        inputs = [a for a in node.all_input_nodes if walk.ctx.is_tensor(a)]
        if rule_for(walk.ctx, node) not in CHANNELWISE_RULES or len(inputs) != 1:
            return  # an add, a cat, the network input: whatever else the unit holds is not covered
        node = inputs[0]


def plan_fold(ctx: Context, graph: ChannelGraph, name: str, channel: Any, value: Any) -> FoldPlan:
    start = _start_node(ctx, name)
    m = ctx.modules[name]
    layer = layer_type(m)
    producer = layer is not None and layer.fold_back is not None
    if not producer and rule_for(ctx, start) not in CHANNELWISE_RULES:
        raise PruningError(
            f"{name!r} is a {type(m).__name__}; name a Conv, Linear, BatchNorm or channel-wise "
            "activation whose output channel is constant"
        )
    shape = ctx.shape(start) if ctx.is_tensor(start) else None
    if shape is None or len(shape) < 2 or (producer and layer.channel_dim != 1 and len(shape) != 2):
        raise PruningError(
            f"the output of {name!r} has shape {None if shape is None else tuple(shape)}; the fold "
            "needs (batch, channels, ...)"
        )
    width = shape[1]
    try:
        if isinstance(channel, bool):
            raise TypeError
        channel = operator.index(channel)  # Python, NumPy and 0-d torch integers
    except TypeError:
        raise PruningError(f"channel {channel!r} of {name!r} is not an integer index") from None
    if not 0 <= channel < width:
        raise PruningError(
            f"channel {channel} of {name!r} is out of range: it has {width} output channels (0..{width - 1})"
        )
    try:
        value = float(value)
    except (TypeError, ValueError) as e:
        raise PruningError(f"the constant for channel {channel} of {name!r} must be a number, not {value!r}") from e
    if not math.isfinite(value):
        raise PruningError(f"the constant for channel {channel} of {name!r} is {value}; it must be finite")
    walk = Walk(ctx, f"channel {channel} of {name!r}")
    _trace_back(walk, start, channel)
    located = _locate(graph, walk)
    if located is not None:
        _check_prunable(located[0], name, channel)
    walk.carry(start, {channel: value})
    located = located or _locate(graph, walk)
    if located is None:
        raise PruningError(f"channel {channel} of {name!r} belongs to no channel group (no layer produces or reads it)")
    unit, key = located
    _check_prunable(unit, name, channel)
    _check_covers(graph, walk, unit, key)
    return FoldPlan((name, channel, value), unit, key, walk)


def _locate(graph: ChannelGraph, walk: Walk) -> tuple[Unit, tuple[int, int]] | None:
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


def _check_covers(graph: ChannelGraph, walk: Walk, unit: Unit, key: tuple[int, int]) -> None:
    """The constant must reach every place the unit lives, and nothing outside it."""
    foreign = [
        m
        for m in sorted(walk.members)
        if (hit := graph.locate(m.module, m.kind, m.index)) is None or (id(hit[0]), hit[1]) != key
    ]
    if foreign:
        raise PruningError(
            f"cannot fold {walk.what}: the traced graph places {foreign[0]} in another channel "
            "group; trace the model again (was it pruned since?)"
        )
    uncovered = [m for m in unit.members if m not in walk.members]
    if uncovered:
        shown = ", ".join(f"{m.module} ({m.kind} {m.index})" for m in uncovered[:4])
        more = f" and {len(uncovered) - 4} more" if len(uncovered) > 4 else ""
        raise PruningError(
            f"cannot fold {walk.what}: the channel also lives in {shown}{more}, which the constant "
            "does not reach (a residual add, a concat or a second reader ties them to it); the "
            "model is unchanged"
        )
