"""The budget's fast paths against their plain statements, on every zoo model.

* the cost model's one forward (:func:`layer_figures`: layer costs and MACs together)
  against a forward that records the layer costs alone plus :func:`count_macs`;
* unit scores gathered role by role against the per-unit, per-member mean;
* a group's removal steps (one sort) against Python's stable sort of its units;
* ``ChannelGroup.one_per_role`` against the units' members;
* the figures from a trace's or a surgery's recorded layer calls (no forward) against the
  hooked forward, and the fall-back where the trace cannot see every layer.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs.errors import ConfigError
from secateurs.graph import cut, trace
from secateurs.graph.layers import layer_type
from secateurs.measure import count_macs, count_params
from secateurs.measure.macs import layer_figures
from secateurs.select import CostModel, normalise, solve, unit_scores
from secateurs.select.budget import _member_counts, _steps
from secateurs.select.scores import _group_scores

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = secateurs.list_models()
SHAPE = (3, 32, 32)


def _costs_by_hooks(model: nn.Module, x: torch.Tensor) -> dict:
    """Each layer's ``LayerType.cost`` from a plain hooked forward: the reference."""
    costs, hooks = {}, []
    for name, m in model.named_modules():
        layer = layer_type(m)
        if layer is not None and layer.cost is not None:

            def record(mod, inputs, output, name=name, fn=layer.cost):
                cost = fn(mod, output)
                if cost is not None:
                    costs[name] = cost

            hooks.append(m.register_forward_hook(record))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return costs


@pytest.mark.parametrize("name", ZOO)
def test_cost_model_forward_equals_separate_counts(name: str) -> None:
    torch.manual_seed(0)
    model = secateurs.create_model(name).eval()
    x = torch.zeros(1, *SHAPE)
    costs, macs = layer_figures(model, x)
    ref = _costs_by_hooks(model, x)
    assert costs == ref and list(costs) == list(ref)
    assert macs == count_macs(model, SHAPE)
    cost = CostModel.of(model, x)
    assert cost.layers == ref
    assert cost.macs == float(count_macs(model, SHAPE)) and cost.params == float(count_params(model))
    assert cost.widths == {(n, "bn" if c.kind == "bn" else "out"): c.out_ch for n, c in ref.items()}


def test_cost_model_restores_modes_removes_hooks_and_names_a_bad_shape() -> None:
    model = secateurs.create_model("test_resnet").train()
    next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d)).eval()  # a frozen BN stays frozen
    modes = [m.training for m in model.modules()]
    layer_figures(model, torch.zeros(1, *SHAPE))
    assert [m.training for m in model.modules()] == modes
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ConfigError, match=r"\(1, 5, 5\)"):
        layer_figures(model, torch.zeros(1, 1, 5, 5))
    assert all(not m._forward_hooks for m in model.modules())


def _graph_and_scores(name: str) -> tuple:
    torch.manual_seed(0)
    model = secateurs.create_model(name).eval()
    graph = trace(model, torch.zeros(1, *SHAPE))
    scores = {}
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            scores[(n, "out")] = m.weight.detach().abs().flatten(1).sum(1)
        elif isinstance(m, nn.BatchNorm2d):
            scores[(n, "bn")] = torch.rand(m.num_features)
    return graph, scores


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("normalised", [True, False])
def test_gathered_unit_scores_equal_the_per_member_mean(name: str, normalised: bool) -> None:
    graph, scores = _graph_and_scores(name)
    fast = unit_scores(graph, scores, normalised)
    plain = normalise(scores) if normalised else {k: v.float() for k, v in scores.items()}
    ref = {
        gi: _group_scores(g, plain)
        for gi, g in enumerate(graph.groups)
        if g.prunable and any(role in plain for role in g.layers)
    }
    assert fast.keys() == ref.keys()
    for gi in ref:
        assert torch.equal(fast[gi], ref[gi]), (name, gi)


@pytest.mark.parametrize("name", ZOO)
def test_steps_and_role_counts_equal_their_plain_statements(name: str) -> None:
    graph, scores = _graph_and_scores(name)
    for gi, s in unit_scores(graph, scores).items():
        group = graph.groups[gi]
        counts = [Counter((m.module, m.kind) for m in u.members) for u in group.units]
        assert group.one_per_role == all(c == Counter(dict.fromkeys(group.layers, 1)) for c in counts)
        steps = _steps(group, s, graph)
        for score, units, step_counts in steps:
            assert step_counts == _member_counts(units)
            assert list(step_counts) == list(_member_counts(units))  # the order the tracker sums in
        if any(m in graph.grouped_convs for m, _ in group.layers):
            continue
        order = sorted(range(group.size), key=lambda i: float(s[i]))
        assert [(score, units) for score, units, _ in steps] == [(float(s[i]), [group.units[i]]) for i in order]


@pytest.mark.parametrize("name", ZOO)
def test_recorded_calls_give_the_hooked_forward_figures(name: str) -> None:
    """A trace's calls (and a surgery's shape check's, on the narrowed model) give the
    cost model and dense and sparse MACs the hooked real forward measures."""
    graph, scores = _graph_and_scores(name)
    model, x = graph.gm, torch.zeros(1, *SHAPE)  # gm holds the model's own modules
    assert graph.calls is not None and graph.calls.usable
    cost = CostModel.of(model, x, graph.calls)
    assert cost == CostModel.of(model, x)
    assert graph.calls.macs(model) == count_macs(model, SHAPE)
    plan = solve(graph, unit_scores(graph, scores, True), cost, 0.3)  # a removal the engine accepts
    calls = cut(model, graph, plan.units, x)
    assert plan.units and calls is not None and calls.usable
    assert CostModel.of(model, x, calls) == CostModel.of(model, x)
    for sparse in (False, True):
        assert calls.figures(model, sparse)[1] == count_macs(model, SHAPE, sparse=sparse, per_layer=True)[1]


def test_calls_hidden_in_a_leaf_or_of_a_batch_fall_back_to_the_forward() -> None:
    """A conv inside a module kept whole is not seen by the graph: the record says so, and
    the cost model runs the forward (its MACs then include that conv)."""
    from engine_models import LeafBlock, Opaque

    model = LeafBlock().eval()
    x = torch.zeros(1, 3, 8, 8)
    graph = trace(model, x, leaf_modules=(Opaque,))
    assert not graph.calls.complete and not graph.calls.usable
    assert CostModel.of(model, x, graph.calls).macs == count_macs(model, (3, 8, 8)) > graph.calls.macs(model)
    batch = trace(model, torch.zeros(4, 3, 8, 8))
    assert batch.calls.complete and batch.calls.batch == 4 and not batch.calls.usable
    assert cut(model, batch, [], None) is None
