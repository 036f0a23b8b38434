"""``trace``: torch.fx graph + channel-id propagation -> a :class:`ChannelGraph`.

The pass is a ``torch.fx.Interpreter`` that runs the model on ``meta`` tensors (shapes
only, no arithmetic) and, beside every tensor, an id tensor (see ``_ids``). Producers
(convs, linears) mint ids; element-wise ops tie the ids they combine; data-movement ops
are replayed on the ids; an op with no handler stops the channels it touches. The meta
replay itself is :class:`~secateurs.graph._meta.MetaInterpreter`; the graph is built from the
recorded ties by :mod:`secateurs.graph._build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from ..errors import TraceError
from . import _handlers as H
from ._build import build_graph
from ._calls import LayerCalls
from ._meta import MetaInterpreter
from ._state import State
from ._tracer import Tracer
from .groups import ChannelGraph, gc_paused

try:  # generates and compiles the forward's Python code on first call, not up front
    from torch.fx._lazy_graph_module import _LazyGraphModule as _GraphModule
except ImportError:  # pragma: no cover - older torch
    _GraphModule = torch.fx.GraphModule


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[type[nn.Module]] = ()) -> torch.fx.GraphModule:
    """``torch.fx`` trace with extra leaf module types; errors name what failed and what to do."""
    return _GraphModule(model, trace_graph(model, leaf_modules), type(model).__name__)


def trace_graph(model: nn.Module, leaf_modules: Sequence[type[nn.Module]] = ()) -> torch.fx.Graph:
    """:func:`symbolic_trace`'s graph alone, owned by ``model`` itself: building the
    GraphModule copies every module path into a new tree (a third of the fx cost), and the
    analysis only needs the graph and the model's own modules."""
    tracer = Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; all mean "this forward does not trace"
        # fx leaves the module being traced on its stack when the forward raises.
        where = next(reversed(tracer.module_stack.values()), None)
        at = f" in {where[0]!r} ({where[1].__name__})" if where and where[0] else ""
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}{at}: {type(e).__name__}: {e}. Data-dependent Python "
            "control flow cannot be traced: move it into a submodule and pass that type in leaf_modules "
            "(its channels are then kept), or rewrite it without branching on tensor values."
        ) from e
    graph.owning_module = model  # what node handlers look modules up in (a GraphModule takes it over)
    return graph


def graph_module(graph: torch.fx.Graph) -> torch.fx.GraphModule:
    """The GraphModule of a graph from :func:`trace_graph` (its owner is the traced model)."""
    root = graph.owning_module
    return _GraphModule(root, graph, type(root).__name__)


class _ChannelPass(MetaInterpreter):
    def __init__(
        self, gm: nn.Module, state: State, calls: LayerCalls | None = None, graph: torch.fx.Graph | None = None
    ) -> None:
        # Values freed at their last use: the id tensors of a node go with its value.
        super().__init__(gm, graph=graph, calls=calls, garbage_collect_values=True)
        self.state = state
        self.ids: dict[torch.fx.Node, Any] = {}

    def _handler(self, node: torch.fx.Node) -> H.Handler:
        if node.op == "call_module":
            return H.module_handler(self.fetch_attr(node.target))
        if node.op == "call_function":
            return H.function_handler(node.target)
        if node.op == "call_method":
            return H.METHOD_HANDLERS.get(node.target, H.unknown)
        return {"placeholder": H.placeholder, "get_attr": H.get_attr}.get(node.op, H.unknown)

    def _ids_or_value(self, a: torch.fx.Node) -> Any:
        ids = self.ids.get(a)
        return ids if ids is not None else self.env[a]

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except Exception as e:
            raise TraceError(f"running {n.format_node()} on the example inputs failed: {type(e).__name__}: {e}") from e
        if n.op == "output":
            self.state.stop_tree(torch.fx.node.map_arg(n.args, lambda a: self.ids.get(a)), "network output")
        elif isinstance(out, torch.Tensor) or H.tensors_in(out):  # sizes and flags carry no channels
            self.ids[n] = self._ids_of(n, out)
        for done in self.user_to_last_uses.get(n, ()):  # free id tensors with their values
            self.ids.pop(done, None)
        return out

    def _ids_of(self, n: torch.fx.Node, out: Any) -> Any:
        # Tensors become their id tensors; everything else (sizes, ints) keeps its real value
        # so that data-movement ops can be replayed on the ids with the same arguments.
        args = torch.fx.node.map_arg(n.args, self._ids_or_value)
        kwargs = torch.fx.node.map_arg(n.kwargs, self._ids_or_value)
        try:
            ids = self._handler(n)(self.state, n, out, args, kwargs)
            return ids if ids is not None else H.unknown(self.state, n, out, args, kwargs)  # never lose ids
        except Exception as e:
            raise TraceError(f"channel analysis of {n.format_node()} failed: {type(e).__name__}: {e}") from e


def trace(model: nn.Module, example_inputs: Any, leaf_modules: Sequence[type[nn.Module]] = ()) -> ChannelGraph:
    """Trace ``model`` and find every set of channels that must be removed together.

    Args:
        model: the network; its forward is replayed on ``meta`` tensors (shapes only, in
            eval mode, each module's mode restored after), so tracing costs no arithmetic.
        example_inputs: a tensor or a tuple of tensors, e.g. ``torch.randn(1, 3, 32, 32)``;
            only their shapes and dtypes matter.
        leaf_modules: module types not to trace into; they keep their channels.
    """
    fx_graph = trace_graph(model, leaf_modules)
    state, calls = State(), LayerCalls()
    analysis = _ChannelPass(model, state, calls, graph=fx_graph)
    analysis.run_meta(example_inputs)
    with gc_paused():
        graph = build_graph(fx_graph, state, model, analysis.submodules)
    graph.calls = calls
    return graph
