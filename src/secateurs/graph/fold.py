"""``fold_constant_channels``: remove channels whose output is a known constant and fold the
constant into the layers that read it, so that the network computes the same function.

A constant ``v`` at output channel ``c`` of a layer is carried forward along the fx graph
through channel-wise ops (BatchNorm in eval mode, activations, pooling, depthwise convs)
until it reaches layers that mix channels (convs, linears). There it is a fixed
contribution ``delta_o = v * sum_k W[o, c, k]`` to every output ``o``: it goes into the
consumer's bias, or, for a bias-free conv feeding a BatchNorm, out of that BN's running
mean. The channel's unit is then removed by the engine's surgery (the shift fusion of
probability and hnsi, see docs/methods.md). Anything else on the way (an add with a live tensor, a
shuffle, an op without a rule) refuses the request before the model is touched.

    >>> report = fold_constant_channels(model, torch.randn(1, 3, 32, 32), {"layer1.0.bn1": {5: 0.12}})
    >>> report.exact, report.approximate_at   # (False, ('layer1.0.conv2',)) for a padded 3x3 consumer

Zero padding makes a constant non-constant at the borders: a fold through or into a
zero-padded conv is exact only away from them, and the report names those layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from ..errors import PruningError
from ._fold_plan import FoldPlan, plan_fold
from ._fold_rules import Context
from ._state import Member
from .groups import ChannelGraph
from .layers import layer_type
from .surgery import removal_problems, remove_units
from .trace import trace


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
        lines = [
            f"{self.num_removed} constant channels folded ({self.num_exact} exactly) into "
            f"{len(self.consumers)} layers" + (f"; new biases: {', '.join(self.new_biases)}" if self.new_biases else "")
        ]
        lines += [
            f"  {c.module}[{c.channel}] = {c.value:.6g} -> {', '.join(c.absorbed_by)}"
            + ("" if c.exact else f" (exact away from the borders of {', '.join(c.approximate_at)})")
            for c in self.channels
        ]
        return "\n".join(lines)


# --- applying: deltas into biases / running means, then the engine's surgery ------------


@dataclass(frozen=True)
class _Target:
    module: nn.Module
    attr: str
    sign: float
    label: str
    like: torch.Tensor  # dtype and device of a new tensor
    new: bool = False  # a bias the layer did not have


def _target(ctx: Context, consumer: str) -> _Target:
    """Where ``consumer``'s delta goes: its bias; else the running mean of the BN it alone feeds; else a new bias."""
    m = ctx.modules[consumer]
    if m.bias is not None:
        return _Target(m, "bias", 1.0, f"{consumer}.bias", m.bias)
    node = next(n for n in ctx.gm.graph.nodes if n.op == "call_module" and n.target == consumer)
    users = list(node.users)
    if len(users) == 1 and users[0].op == "call_module" and ctx.calls[users[0].target] == 1:
        reader = ctx.modules[users[0].target]
        layer = layer_type(reader)
        shift = None if layer is None or layer.input_shift is None else getattr(reader, layer.input_shift, None)
        if shift is not None:
            label = f"{users[0].target}.{layer.input_shift}"
            return _Target(reader, layer.input_shift, -1.0, label, shift)
    return _Target(m, "bias", 1.0, f"{consumer}.bias (new)", m.weight, new=True)


def _shifted(t: _Target, delta: torch.Tensor) -> torch.Tensor:
    old = getattr(t.module, t.attr)
    base = old.detach().double() if old is not None else torch.zeros_like(delta)
    new = (base + t.sign * delta.to(base.device)).to(dtype=t.like.dtype, device=t.like.device)
    if t.attr == "bias":
        return nn.Parameter(new, requires_grad=t.like.requires_grad)
    return new


def fold_refusals(
    model: nn.Module, example_inputs: Any, channels: list[tuple[str, int]], graph: ChannelGraph | None = None
) -> dict[tuple[str, int], str]:
    """Why each ``(module, channel)`` could not be folded on its own (absent: it could).

    Checks what :func:`fold_constant_channels` would check, without changing anything, so
    a method can keep only the channels whose constant reaches every place they live.
    """
    graph = graph or trace(model, example_inputs)
    ctx = Context.build(model, graph, example_inputs)
    refused: dict[tuple[str, int], str] = {}
    for name, channel in channels:
        try:
            plan_fold(ctx, graph, name, channel, 0.0)
        except PruningError as e:
            refused[(name, channel)] = str(e)
    return refused


def fold_constant_channels(
    model: nn.Module,
    example_inputs: Any,
    constants: Mapping[str, Mapping[int, float]],
    graph: ChannelGraph | None = None,
) -> FoldReport:
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
    ctx = Context.build(model, graph, example_inputs)
    plans: dict[tuple[int, int], FoldPlan] = {}
    for name, channels in constants.items():
        for channel, value in channels.items():
            plan = plan_fold(ctx, graph, name, channel, value)
            if plan.unit_key in plans:
                other = plans[plan.unit_key].request
                raise PruningError(
                    f"channel {channel} of {name!r} and channel {other[1]} of {other[0]!r} are the "
                    "same channel (one unit); give its constant once"
                )
            plans[plan.unit_key] = plan
    totals: dict[str, torch.Tensor] = {}
    for p in plans.values():
        for consumer, delta in p.walk.deltas.items():
            totals[consumer] = totals.get(consumer, 0) + delta
    targets = {consumer: _target(ctx, consumer) for consumer in totals}
    new_values = {consumer: _shifted(targets[consumer], delta) for consumer, delta in totals.items()}

    problems = removal_problems(model, graph, [p.unit for p in plans.values()])
    if problems:  # checked before any bias is written
        raise PruningError(next(iter(problems.values())))
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
    channels = [
        FoldedChannel(
            module=p.request[0],
            channel=p.request[1],
            value=p.request[2],
            consumers=tuple(sorted(p.walk.deltas)),
            absorbed_by=tuple(targets[c].label for c in sorted(p.walk.deltas)),
            approximate_at=tuple(sorted(p.walk.approximate)),
            removed=p.unit.members,
        )
        for p in plans.values()
    ]
    new_biases = tuple(c for c, t in targets.items() if t.new)
    return FoldReport(channels, new_biases)
