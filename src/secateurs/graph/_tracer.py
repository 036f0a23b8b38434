"""The ``torch.fx`` tracer of :func:`~secateurs.graph.trace`: leaf modules by trace handler,
and the two per-node steps of ``torch.fx.Tracer`` without their generic overhead.

``torch.fx`` spends most of a small network's trace on bookkeeping no analysis here reads:
``copy.copy`` of the scope at every module call and of the module stack at every node,
a dozen type checks per argument, and a walk of every node's arguments for raw
``SymInt``s (symbolic tracing makes none).
:class:`Tracer` does the same bookkeeping with plain dict copies and attribute swaps, and
hands anything unusual (preserved node meta, stack traces, mutation checks, a torch
without these attributes) to ``torch.fx`` itself. The graph, node names, ``meta`` and
scopes come out the same (``tests/test_tracer.py`` holds them to ``torch.fx``'s own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
import torch.fx.traceback as fx_traceback
import torch.nn as nn

from . import _handlers as H

#: Argument types torch.fx passes through unchanged, by exact type.
_ATOMS = frozenset({int, float, bool, str, type(None)})


class Tracer(torch.fx.Tracer):
    def __init__(self, leaf_modules: Sequence[type[nn.Module]] = ()) -> None:
        super().__init__()
        self.extra_leaves = tuple(leaf_modules)
        self._lean = all(hasattr(self, a) for a in ("scope", "module_stack", "num_calls", "node_name_to_scope"))

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # A module whose exact type has a registered trace handler is one node, whatever its forward.
        return (
            isinstance(m, self.extra_leaves)
            or H.module_handler(m) is not H.unknown
            or super().is_leaf_module(m, qualname)
        )

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """``torch.fx.Tracer.call_module`` with the scope swapped in place (fx copies it)."""
        if not self._lean:
            return super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        scope = self.scope
        before = scope.module_path, scope.module_type
        scope.module_path, scope.module_type = path, type(m)
        try:
            calls = self.num_calls.get(path, 0)
            key = f"{path}@{calls}" if calls > 0 else path
            self.module_stack[key] = (path, type(m))  # left in place on failure: errors name it
            self.num_calls[path] = calls + 1
            if self.is_leaf_module(m, path):
                out = self.create_proxy("call_module", path, args, kwargs)
            else:
                out = forward(*args, **kwargs)
            last, _ = self.module_stack.popitem(last=True)
            if last != key:
                raise AssertionError(f"Unexpected key {last}, expected {key}")
        finally:
            scope.module_path, scope.module_type = before
        return out

    def create_arg(self, a: Any) -> Any:
        """``Tracer.create_arg`` for what module calls pass (proxies, plain numbers and
        strings, tuples and lists of them) without its dozen type checks; anything else,
        subclasses included, goes to torch.fx."""
        kind = type(a)
        if not self._lean:
            return super().create_arg(a)
        if kind is torch.fx.Proxy:
            return a.node
        if kind in _ATOMS:
            return a
        if kind is tuple or kind is list:
            return kind([self.create_arg(x) for x in a])
        return super().create_arg(a)

    def create_node(
        self,
        kind: str,
        target: Any,
        args: tuple,
        kwargs: dict,
        name: str | None = None,
        type_expr: Any | None = None,
    ) -> torch.fx.Node:
        """``TracerBase.create_node`` for the plain case: the module stack copied with
        ``dict.copy`` and the arguments set after the node is made, which skips fx's walk
        of them for raw ``SymInt`` values (a warning symbolic tracing never triggers)."""
        if (
            not self._lean
            or self.check_mutable_operations
            or self.record_stack_traces
            or fx_traceback.has_preserved_node_meta()
        ):
            return super().create_node(kind, target, args, kwargs, name, type_expr)
        node = self.graph.create_node(kind, target, None, None, name, type_expr)
        if args:
            node.args = args
        if kwargs:
            node.kwargs = kwargs
        self.node_name_to_scope[node.name] = (self.scope.module_path, self.scope.module_type)
        if self.module_stack:
            node.meta["nn_module_stack"] = self.module_stack.copy()
        return node
