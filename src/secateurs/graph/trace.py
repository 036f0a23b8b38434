"""``trace``: torch.fx graph + channel-id propagation -> a :class:`ChannelGraph`.

The pass is a ``torch.fx.Interpreter`` that runs the model on the example inputs and, beside
every real tensor, an id tensor (see ``_ids``). Producers (convs, linears) mint ids;
element-wise ops tie the ids they combine; data-movement ops are replayed on the ids; an
op with no handler stops the channels it touches.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.fx
import torch.nn as nn

from ..errors import TraceError
from . import _handlers as H
from ._state import State
from .groups import ChannelGraph, build_graph


class _Tracer(torch.fx.Tracer):
    def __init__(self, leaf_modules: Sequence[type[nn.Module]] = ()) -> None:
        super().__init__()
        self.extra_leaves = tuple(leaf_modules)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.extra_leaves) or super().is_leaf_module(m, qualname)


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[type[nn.Module]] = ()) -> torch.fx.GraphModule:
    """``torch.fx`` trace with extra leaf module types; errors name what failed and what to do."""
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; all mean "this forward does not trace"
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}. Data-dependent Python "
            "control flow cannot be traced: move it into a submodule and pass that type in leaf_modules "
            "(its channels are then kept), or rewrite it without branching on tensor values."
        ) from e
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


class _ChannelPass(torch.fx.Interpreter):
    """Runs on the ``meta`` device: only shapes are needed, so no arithmetic is done."""

    def __init__(self, gm: torch.fx.GraphModule, state: State) -> None:
        super().__init__(gm)
        self.state = state
        self.ids: dict[torch.fx.Node, Any] = {}

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if isinstance(module, H.SHAPE_PRESERVING_MODULES) and len(args) == 1 and not kwargs:
            return args[0]  # same shape and dtype; skips slow meta decompositions (batch norm)
        tensors = {k: v.to("meta") for k, v in [*module.named_parameters(), *module.named_buffers()]}
        return torch.func.functional_call(module, tensors, args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def _handler(self, node: torch.fx.Node) -> H.Handler:
        if node.op == "placeholder":
            return H.placeholder
        if node.op == "call_module":
            return H.MODULE_HANDLERS.get(type(self.module.get_submodule(node.target)), H.unknown)
        if node.op == "call_function":
            return H.FUNCTION_HANDLERS.get(node.target, H.unknown)
        if node.op == "call_method":
            return H.METHOD_HANDLERS.get(node.target, H.unknown)
        if node.op == "get_attr":
            return H.stop_all("tensor attribute {node} is used directly in forward; its channels are kept")
        return H.unknown

    def _ids_or_value(self, a: torch.fx.Node) -> Any:
        ids = self.ids.get(a)
        return ids if ids is not None else self.env[a]

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise TraceError(f"running {n.format_node()} on the example inputs failed: {e}") from e
        if n.op == "output":
            self.state.stop_tree(torch.fx.node.map_arg(n.args, lambda a: self.ids.get(a)), "network output")
            return out
        # Tensors become their id tensors; everything else (sizes, ints) keeps its real value
        # so that data-movement ops can be replayed on the ids with the same arguments.
        args = torch.fx.node.map_arg(n.args, self._ids_or_value)
        kwargs = torch.fx.node.map_arg(n.kwargs, self._ids_or_value)
        try:
            self.ids[n] = self._handler(n)(self.state, n, out, args, kwargs)
        except Exception as e:
            raise TraceError(f"channel analysis of {n.format_node()} failed: {type(e).__name__}: {e}") from e
        return out


def trace(model: nn.Module, example_inputs: Any, leaf_modules: Sequence[type[nn.Module]] = ()) -> ChannelGraph:
    """Trace ``model`` and find every set of channels that must be removed together.

    Args:
        model: the network; its forward is replayed on ``meta`` tensors (shapes only, in
            eval mode, restored after), so tracing costs no arithmetic.
        example_inputs: a tensor or a tuple of tensors, e.g. ``torch.randn(1, 3, 32, 32)``;
            only their shapes and dtypes matter.
        leaf_modules: module types not to trace into; they keep their channels.
    """
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    gm = symbolic_trace(model, leaf_modules)
    state = State()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _ChannelPass(gm, state).run(*[t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs])
    finally:
        model.train(was_training)
    return build_graph(gm, state, model)
