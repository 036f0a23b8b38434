"""Where a unit's channel passes a BatchNorm followed by a ReLU-type activation.

Probability pruning reads ``P(y <= 0)`` at each such point; a unit in a depthwise
separable block has two (the BN before the depthwise conv and the one after it), a
plain conv-BN-ReLU channel one, a linear bottleneck or a residual stream (BN -> add)
none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from ..graph import ChannelGraph, Unit
from ._gaussian import RELU_TYPES
from ._layers import NORMS


@dataclass(frozen=True)
class Point:
    bn: str  # the BatchNorm module
    act: str  # the activation module right after it (its only reader)
    index: int  # the unit's channel in both
    order: int  # position of the BN in forward order


def activation_after_bn(
    model: nn.Module, graph: ChannelGraph, act_types: tuple[type[nn.Module], ...] = RELU_TYPES
) -> dict[str, tuple[str, int]]:
    """``{bn name: (activation name, forward position)}`` for every BN read only by one such activation."""
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for n in graph.fx_graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    found: dict[str, tuple[str, int]] = {}
    for pos, node in enumerate(graph.fx_graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), NORMS) or len(node.users) != 1:
            continue
        (user,) = node.users
        if (
            user.op == "call_module"
            and isinstance(modules.get(user.target), act_types)
            and calls[node.target] == 1
            and calls[user.target] == 1
        ):
            found[node.target] = (user.target, pos)
    return found


def unit_points(unit: Unit, after_bn: dict[str, tuple[str, int]]) -> list[Point]:
    """The unit's points in forward order."""
    points = [
        Point(m.module, after_bn[m.module][0], m.index, after_bn[m.module][1])
        for m in unit.members
        if m.kind == "bn" and m.module in after_bn
    ]
    return sorted(points, key=lambda p: p.order)
