"""Running a traced graph on ``meta`` tensors, fast: :class:`MetaInterpreter` checks every
shape without computing anything, memoises each op per signature (op, argument shapes), and
works out conv and linear output shapes by arithmetic instead of the meta kernels."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn as nn

from . import _handlers as H
from ._calls import LayerCalls
from ._shapes import SAME_SHAPE_OPS, same_shape
from ._shapes import fast_shape as _fast_shape  # the name tests and callers know


class MetaInterpreter(torch.fx.Interpreter):
    """Runs a traced graph on ``meta`` tensors: every shape is checked, nothing is computed.

    ``module`` may be another instance than the one traced (same module names), which is
    how surgery checks the narrowed model against the graph traced before.
    """

    def __init__(
        self,
        module: nn.Module,
        *args: Any,
        calls: LayerCalls | None = None,
        garbage_collect_values: bool = False,
        **kwargs: Any,
    ) -> None:
        # Meta values hold no storage, so none is freed early: that skips the last-use table
        # Interpreter.__init__ builds otherwise (a walk of every node, each run).
        super().__init__(module, *args, garbage_collect_values=garbage_collect_values, **kwargs)
        #: When given, every module call is noted in it (the counted layers' shapes, for MACs).
        self.calls = calls
        # Meta kernels are Python decompositions (an add costs ~0.1 ms, a conv ~0.3 ms), and a
        # network repeats the same op on the same shapes many times: each op is run once per
        # signature (op, target, argument shapes / dtypes / strides, other arguments) and
        # the result's shapes reused. Per instance, so each trace pays its own way.
        self._memo: dict[Any, Any] = {}

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in SAME_SHAPE_OPS and not kwargs:
            out = same_shape(args)
            if out is not None:
                return out
        return self._memoised(
            ("f", target), lambda: super(MetaInterpreter, self).call_function(target, args, kwargs), args, kwargs
        )

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        return self._memoised(
            ("m", target), lambda: super(MetaInterpreter, self).call_method(target, args, kwargs), args, kwargs
        )

    def _memoised(self, op: Any, run: Any, args: tuple, kwargs: dict) -> Any:
        key = _signature(op, args, kwargs)
        if key is None:
            return run()
        hit = self._memo.get(key)
        if hit is None:
            out = run()
            hit = _shapes_of(out)
            if hit is None:  # a non-tensor result (a size, a flag): not memoised
                return out
            self._memo[key] = hit
            return out
        return _rebuild(hit)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        out = self._module_output(module, args, kwargs)
        if self.calls is not None:
            self.calls.record(target, module, args, out)
        return out

    def _module_output(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor):
            out = _fast_shape(module, args[0])
            if out is not None:
                return out
            if (
                H.module_handler(module) is not H.unknown
                and not H.shape_preserving(module)
                and not module._parameters
                and not module._buffers
            ):
                # A built-in layer with no state (pooling, flatten, padding): its extra_repr
                # holds its whole configuration, so equal signatures give equal shapes.
                return self._memoised(
                    ("c", type(module), module.extra_repr()),
                    lambda: self._call_module_meta(module, args, kwargs),
                    args,
                    kwargs,
                )
        return self._call_module_meta(module, args, kwargs)

    def _call_module_meta(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if H.shape_preserving(module) and len(args) == 1 and not kwargs:
            # Same shape out as in; skips slow meta decompositions (batch norm). Per-channel
            # parameters must still fit the input, which is what running would check.
            x = args[0]
            state = (
                [*module.named_parameters(), *module.named_buffers()]
                if module._modules
                else [
                    *module._parameters.items(),
                    *module._buffers.items(),
                ]
            )
            for name, t in state:
                if t is None:
                    continue
                if t.dim() == 1 and (x.dim() < 2 or t.shape[0] != x.shape[1]):
                    raise RuntimeError(
                        f"{self._name_of(module)}.{name} has {t.shape[0]} entries for an input of shape {tuple(x.shape)}"
                    )
            return x
        tensors = {k: v.to("meta") for k, v in [*module.named_parameters(), *module.named_buffers()]}
        return torch.func.functional_call(module, tensors, args, kwargs)

    def _name_of(self, module: nn.Module) -> str:
        return next((n for n, m in self.submodules.items() if m is module), type(module).__name__)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def fetch_attr(self, target: str) -> Any:
        module = self.submodules.get(target)  # one dict look-up, not a walk down the dotted path
        return module if module is not None else super().fetch_attr(target)

    def run(self, *args: Any, initial_env: dict | None = None, enable_io_processing: bool = True) -> Any:
        """``Interpreter.run`` without its progress bar (made, then updated per node, even
        when disabled: a tenth of a small network's meta run); errors name the node alike."""
        env = self.env = initial_env if initial_env is not None else {}
        self.args_iter = iter(self.graph.process_inputs(*args) if enable_io_processing else args)
        last_uses = self.user_to_last_uses if self.garbage_collect_values else {}
        for node in self.graph.nodes:
            if node in env:
                continue
            try:
                env[node] = self.run_node(node)
            except Exception as e:
                if getattr(self, "extra_traceback", True):
                    msg = f"While executing {node.format_node()}"
                    msg = f"{e.args[0]}\n\n{msg}" if e.args else msg
                    e.args = (f"{msg}\nOriginal traceback:\n{node.stack_trace}", *e.args[1:])
                    if isinstance(e, KeyError):
                        raise RuntimeError(*e.args) from e
                raise
            for done in last_uses.get(node, ()):
                del env[done]
            if node.op == "output":
                return self.graph.process_outputs(env[node]) if enable_io_processing else env[node]
        return None

    def run_node(self, n: torch.fx.Node) -> Any:
        # Interpreter.run_node without its per-node logging and node-meta context: shapes only.
        try:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            return getattr(self, n.op)(n.target, args, kwargs)
        except (NotImplementedError, RuntimeError):
            if not self._opaque(n):
                raise
            if self.calls is not None and n.op == "call_module":
                self.calls.opaque(self.fetch_attr(n.target))
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
        modes = {m: m.training for m in self.submodules.values()}  # every module, once (named_modules)
        training = any(modes.values())
        if training:  # a model in eval mode (the usual case) is left alone: no walk, no setattr
            self.module.eval()
        try:
            with torch.no_grad():
                return self.run(*[t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs])
        finally:
            for m, mode in modes.items():
                if m.training != mode:
                    m.training = mode


def _signature(op: Any, args: tuple, kwargs: dict) -> Any:
    """A hashable key for an op on these arguments (tensors by shape, stride and dtype, the
    nesting kept), or None when an argument is not hashable (then the op is not memoised)."""
    key = (op, _frozen(args), _frozen(tuple(sorted(kwargs.items()))))
    try:
        hash(key)
    except TypeError:  # a slice, a dict: run it every time
        return None
    return key


def _frozen(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (torch.Tensor, tuple(a.shape), a.stride(), a.dtype, a.device.type)
    if isinstance(a, (tuple, list)):
        return (type(a), tuple(_frozen(x) for x in a))
    return (type(a), a)  # 1 and 1.0 are equal keys but give different dtypes


def _shapes_of(out: Any) -> Any:
    """``out`` as (shape, stride, dtype) of each meta tensor, or None if it holds anything else."""
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.stride(), out.dtype) if out.device.type == "meta" else None
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        parts = [_shapes_of(t) for t in out]
        return None if any(p is None for p in parts) else (type(out), tuple(parts))
    return None


def _rebuild(shapes: Any) -> Any:
    if isinstance(shapes[0], type):
        return shapes[0](_rebuild(p) for p in shapes[1])
    shape, stride, dtype = shapes
    return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
