"""How a constant channel passes each op of a traced graph: the context the walk reads
(every node's meta output), the walk, and which fold rule each op gets (a layer type's
``LayerType.fold`` for modules, the tables below for functions and tensor methods; the
rules themselves are in ``_fold_ops.py`` and ``layers/``)."""

from __future__ import annotations

import builtins
import operator
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from ..errors import PruningError
from ..measure._common import eval_mode
from . import _fold_ops as R
from ._fold_ops import Rule, Values
from ._state import Member
from .groups import ChannelGraph
from .layers import kinds as K
from .layers import layer_type
from .trace import MetaInterpreter

__all__ = ["CHANNELWISE_RULES", "FUNCTION_RULES", "METHOD_RULES", "Context", "Rule", "Values", "Walk", "rule_for"]


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
        calls = Counter(n.target for n in graph.fx_graph.nodes if n.op == "call_module")
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


FUNCTION_RULES: dict[Any, Rule] = {
    # element-wise with a number (x * 0.5, x + 3); with a live tensor the substitution refuses
    **{f: R.pointwise_function for f in (*K.POINTWISE_FUNCTIONS, *K.ARITHMETIC_FUNCTIONS)},
    **{f: R.same for f in K.SAME_VALUE_FUNCTIONS},
    **{f: R.avg_pool for f in K.AVG_POOL_FUNCTIONS},
    **{f: R.reshape for f in K.RESHAPE_FUNCTIONS},
    **{f: R.cat for f in K.CAT_FUNCTIONS},
    operator.getitem: R.getitem,
    **{f: R.reduction for f in K.REDUCTION_FUNCTIONS},
    builtins.getattr: R.no_value,
}

METHOD_RULES: dict[str, Rule] = {
    **{m: R.pointwise_function for m in (*K.POINTWISE_METHODS, *K.ARITHMETIC_METHODS)},
    **{m: R.same for m in K.SAME_VALUE_METHODS},
    **{m: R.reshape for m in K.RESHAPE_METHODS},
    **{m: R.reduction for m in K.REDUCTION_METHODS},
    **{m: R.no_value for m in ("size", "dim")},
}

# Ops a channel passes unchanged in position, so a request may name the module after them.
CHANNELWISE_RULES = (R.same, R.pointwise_module, R.pointwise_function, R.avg_pool)


def rule_for(ctx: Context, node: torch.fx.Node) -> Rule:
    if node.op == "output":
        return R.output
    if node.op == "call_module":
        layer = layer_type(ctx.modules[node.target])
        return R.unknown if layer is None or layer.fold is None else layer.fold
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target, R.unknown)
    if node.op == "call_method":
        return METHOD_RULES.get(node.target, R.unknown)
    return R.unknown
