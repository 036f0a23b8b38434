"""The engine's fx tracer (``graph/_tracer.py``) skips torch.fx's generic bookkeeping; the
graph it records must be the one ``torch.fx`` records with the same leaf modules: same
nodes, names, ops, targets, arguments, module stacks and scopes, and the same error
context (the module stack left in place) when a forward does not trace."""

from __future__ import annotations

import importlib

import pytest
import torch.fx
import torch.nn as nn
from engine_models import TOYS, SharedConv

import secateurs

TR = importlib.import_module("secateurs.graph._tracer")


class _Plain(TR.Tracer):
    """The same leaves, every step left to torch.fx."""

    def __init__(self, leaves=()) -> None:
        super().__init__(leaves)
        self._lean = False


def _record(tracer: torch.fx.Tracer, model: nn.Module) -> tuple:
    graph = tracer.trace(model)
    nodes = [(n.name, n.op, n.target, repr(n.args), repr(n.kwargs), n.meta.get("nn_module_stack")) for n in graph.nodes]
    return nodes, dict(tracer.node_name_to_scope), graph.python_code("self").src


def _same(model: nn.Module, leaves=()) -> None:
    lean = TR.Tracer(leaves)
    assert lean._lean  # this torch has what the lean path needs: it is the one tested
    assert _record(lean, model) == _record(_Plain(leaves), model)


@pytest.mark.parametrize("name", secateurs.list_models())
def test_same_graph_as_torch_fx_on_the_zoo(name: str) -> None:
    _same(secateurs.create_model(name).eval())


@pytest.mark.parametrize("name", list(TOYS))
def test_same_graph_as_torch_fx_on_toys(name: str) -> None:
    cls, _, leaves = TOYS[name]
    _same(cls().eval(), leaves)


def test_a_module_called_twice_gets_the_same_numbered_stack_keys() -> None:
    _same(SharedConv().eval())
    graph = TR.Tracer().trace(SharedConv().eval())
    stacks = [list(n.meta["nn_module_stack"]) for n in graph.nodes if n.op == "call_module"]
    assert any(any("@1" in k for k in s) for s in stacks)


def test_a_failing_forward_leaves_the_failing_module_on_the_stack() -> None:
    class Bad(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # branches on a value: does not trace

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Bad()

        def forward(self, x):
            return self.inner(x)

    for tracer in (TR.Tracer(), _Plain()):
        with pytest.raises(torch.fx.proxy.TraceError):
            tracer.trace(Net())
        assert [v[0] for v in tracer.module_stack.values()] == ["inner"]
        assert (tracer.scope.module_path, tracer.scope.module_type) == ("", None)


def test_the_graph_module_is_made_on_first_use_and_runs_like_the_model() -> None:
    import torch

    model = secateurs.create_model("test_resnet").eval()
    x = torch.randn(2, 3, 32, 32)
    graph = secateurs.trace(model, x)
    assert isinstance(graph.traced, torch.fx.Graph) and graph.fx_graph.owning_module is model
    gm = graph.gm
    assert isinstance(gm, torch.fx.GraphModule) and graph.gm is gm and graph.fx_graph is gm.graph
    assert gm.get_submodule("stem.0") is model.get_submodule("stem.0")  # the model's own modules
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
