"""Feature maps of channel producers, taken where the network uses them: after the
producer's BatchNorm and activation. One pass of the traced graph per calibration batch;
each map is reduced as soon as it is computed, so memory stays bounded by one batch."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..graph import ChannelGraph
from ..measure._common import eval_mode
from ._layers import NORMS, producer_roles

ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.SiLU,
    nn.GELU,
    nn.ELU,
    nn.Hardtanh,
    nn.Mish,
    nn.PReLU,
)
ACTIVATION_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.hardswish,
    F.silu,
    F.gelu,
    F.leaky_relu,
    F.elu,
    F.hardtanh,
    F.mish,
    torch.relu_,
}
ACTIVATION_METHODS = {"relu", "relu_"}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}

#: ``(role, output of the point node)`` -> None; called once per batch and point.
Reducer = Callable[[tuple[str, str], torch.Tensor], None]


def _is_activation(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in ACTIVATION_FUNCTIONS
    return node.op == "call_method" and node.target in ACTIVATION_METHODS


def _is_add(node: torch.fx.Node) -> bool:
    """A sum of two tensors: a residual stream's merge, whose output channels align with each operand's."""
    tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if node.op == "call_function":
        return node.target in ADD_FUNCTIONS and len(tensors) == 2
    return node.op == "call_method" and node.target in ADD_METHODS and len(tensors) == 2


def feature_points(
    model: nn.Module, graph: ChannelGraph, through_adds: bool = False
) -> dict[torch.fx.Node, tuple[str, str]]:
    """For each producer role of a prunable group, the node whose output is its feature map.

    From the producer's node, follow its only user while that is the BatchNorm after a
    conv or an activation. A conv and its BN reach the same node; the BN's role is kept.
    With ``through_adds``, a map whose only reader is a residual add is followed through the
    add and the activation after it: the stream the next layers read, not the branch output.
    Both operands of an add then reach the same node, and the first role found is kept (the
    operands' channel ``c`` and the sum's channel ``c`` are one unit of the stream's group).
    """
    modules = dict(model.named_modules())
    roles = [(m, "bn") for m in producer_roles(graph, "bn")] + [(m, "out") for m in producer_roles(graph, "out")]
    nodes = {n.target: n for n in graph.fx_graph.nodes if n.op == "call_module"}
    points: dict[torch.fx.Node, tuple[str, str]] = {}
    for module, kind in roles:  # BN roles first, so they win a shared point
        node = nodes.get(module)
        if node is None:
            continue
        while len(node.users) == 1:
            (user,) = node.users
            is_bn = user.op == "call_module" and isinstance(modules.get(user.target), NORMS)
            if not (_is_activation(user, modules) or (kind == "out" and is_bn) or (through_adds and _is_add(user))):
                break
            node = user
        points.setdefault(node, (module, kind))
    return points


class _Collector(torch.fx.Interpreter):
    def __init__(
        self, model: nn.Module, graph: torch.fx.Graph, points: dict[torch.fx.Node, Any], reduce: Reducer
    ) -> None:
        super().__init__(model, graph=graph)
        self.points, self.reduce = points, reduce

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        role = self.points.get(n)
        if role is not None and isinstance(out, torch.Tensor):
            self.reduce(role, out)
        return out


@torch.no_grad()
def collect(
    model: nn.Module, graph: ChannelGraph, batches: Iterable[torch.Tensor], reduce: Reducer, through_adds: bool = False
) -> None:
    """Run every batch through ``graph`` (eval mode) and hand each feature map to ``reduce``."""
    points = feature_points(model, graph, through_adds)
    with eval_mode(model):
        runner = _Collector(model, graph.fx_graph, points, reduce)
        for x in batches:
            runner.run(x)


def collect_calibration(ctx: Any, reduce: Reducer, method: str, through_adds: bool = False) -> int:
    """:func:`collect` over ``ctx.calibration`` (a :class:`ScoreContext`'s); the number of samples seen."""
    if ctx.calibration is None:
        raise ConfigError(f"method {method!r} needs calibration data: give a train_set (--dataset)")
    count = 0

    def batches() -> Iterable[torch.Tensor]:
        nonlocal count
        for x in ctx.calibration():
            count += x.shape[0]
            yield x

    collect(ctx.model, ctx.graph, batches(), reduce, through_adds)
    return count


def accumulate(sums: dict, key: Any, value: torch.Tensor) -> None:
    sums[key] = sums[key] + value if key in sums else value
