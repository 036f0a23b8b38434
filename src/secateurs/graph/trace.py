"""``trace``: torch.fx graph + channel-id propagation -> a :class:`ChannelGraph`.

The pass is a ``torch.fx.Interpreter`` that runs the model on ``meta`` tensors (shapes
only, no arithmetic) and, beside every tensor, an id tensor (see ``_ids``). Producers
(convs, linears) mint ids; element-wise ops tie the ids they combine; data-movement ops
are replayed on the ids; an op with no handler stops the channels it touches.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from typing import Any

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
        # A module whose exact type has a registered trace handler is one node, whatever its forward.
        return (
            isinstance(m, self.extra_leaves)
            or H.module_handler(m) is not H.unknown
            or super().is_leaf_module(m, qualname)
        )


def symbolic_trace(model: nn.Module, leaf_modules: Sequence[type[nn.Module]] = ()) -> torch.fx.GraphModule:
    """``torch.fx`` trace with extra leaf module types; errors name what failed and what to do."""
    tracer = _Tracer(leaf_modules)
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
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


class MetaInterpreter(torch.fx.Interpreter):
    """Runs a traced graph on ``meta`` tensors: every shape is checked, nothing is computed.

    ``module`` may be another instance than the one traced (same module names), which is
    how surgery checks the narrowed model against the graph traced before.
    """

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if H.shape_preserving(module) and len(args) == 1 and not kwargs:
            # Same shape out as in; skips slow meta decompositions (batch norm). Per-channel
            # parameters must still fit the input, which is what running would check.
            x = args[0]
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                if t.dim() == 1 and (x.dim() < 2 or t.shape[0] != x.shape[1]):
                    raise RuntimeError(
                        f"{target}.{name} has {t.shape[0]} entries for an input of shape {tuple(x.shape)}"
                    )
            return x
        tensors = {k: v.to("meta") for k, v in [*module.named_parameters(), *module.named_buffers()]}
        return torch.func.functional_call(module, tensors, args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            return super().run_node(n)
        except (NotImplementedError, RuntimeError):
            if not self._opaque(n):
                raise
            return self._run_on_zeros(n)

    def _run_on_zeros(self, n: torch.fx.Node) -> Any:
        """An op without a handler that needs values (a leaf module branching on ``x.sum()``,
        a wrapped function calling ``.item()``): run it once on zeros, for its output shape."""
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        device = torch.device("cpu")
        if n.op == "call_module":
            fn = self.fetch_attr(n.target)
            device = next((t.device for t in [*fn.parameters(), *fn.buffers()]), device)
        elif n.op == "call_function":
            fn = n.target
        else:

            def fn(self_, *a, **k):
                return getattr(self_, n.target)(*a, **k)

        def zeros(t: Any) -> Any:
            return torch.zeros(t.shape, dtype=t.dtype, device=device) if isinstance(t, torch.Tensor) else t

        args, kwargs = torch.fx.node.map_aggregate((args, kwargs), zeros)
        return torch.fx.node.map_aggregate(
            fn(*args, **kwargs), lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t
        )

    def _opaque(self, n: torch.fx.Node) -> bool:
        if n.op == "call_module":
            return H.module_handler(self.fetch_attr(n.target)) is H.unknown
        if n.op == "call_function":
            return H.function_handler(n.target) is H.unknown
        return n.op == "call_method" and n.target not in H.METHOD_HANDLERS

    def run_meta(self, example_inputs: Any) -> Any:
        """Run on meta copies of ``example_inputs``, in eval mode (every module's own mode
        is put back after)."""
        inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        modes = {m: m.training for m in self.module.modules()}
        self.module.eval()
        try:
            with torch.no_grad():
                return self.run(*[t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs])
        finally:
            for m, training in modes.items():
                m.training = training


class _ChannelPass(MetaInterpreter):
    def __init__(self, gm: torch.fx.GraphModule, state: State) -> None:
        super().__init__(gm)
        self.state = state
        self.ids: dict[torch.fx.Node, Any] = {}

    def _handler(self, node: torch.fx.Node) -> H.Handler:
        if node.op == "call_module":
            return H.module_handler(self.module.get_submodule(node.target))
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
        elif H.tensors_in(out):  # sizes and flags carry no channels, and stop none
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
    gm = symbolic_trace(model, leaf_modules)
    state = State()
    _ChannelPass(gm, state).run_meta(example_inputs)  # gm holds the model's own submodules
    with _gc_paused():
        return build_graph(gm, state, model)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building tens of thousands of small members would set off several full collections,
    each scanning every live object (torch's included): 4x the cost of the build itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
