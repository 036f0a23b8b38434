"""The vectorised group builder against the plain one, and the fast shape paths of the
meta interpreter against torch's own meta kernels.

:func:`build_graph` resolves channels with tensor passes and builds each unit's members
on first use; :func:`build_graph_reference` is the same statement one member at a time.
Both must give the same groups, in the same order, with the same units, members, reasons
and positions, on every model the engine is tested on.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn
from engine_models import TOYS

import secateurs
from secateurs.graph._build import build_graph, build_graph_reference
from secateurs.graph._state import State

T = importlib.import_module("secateurs.graph.trace")
M = importlib.import_module("secateurs.graph._meta")

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = ["resnet20", "vgg16", "mobilenet_v2", "mobilenet_v1", "ghostnet", "shufflenet_v2", "shufflenet_v1"]


def _state(model: nn.Module, x: torch.Tensor, leaves=()) -> tuple:
    gm = T.symbolic_trace(model, leaves)
    state = State()
    T._ChannelPass(gm, state).run_meta(x)
    return gm, state


def _same(model: nn.Module, x: torch.Tensor, leaves=()) -> None:
    gm, state = _state(model, x, leaves)
    fast, ref = build_graph(gm, state, model), build_graph_reference(gm, state, model)
    assert [(g.name, g.layers, g.size, g.reason) for g in fast.groups] == [
        (g.name, g.layers, g.size, g.reason) for g in ref.groups
    ]
    for gf, gr in zip(fast.groups, ref.groups):
        assert [(u.members, u.reason) for u in gf.units] == [(u.members, u.reason) for u in gr.units]
    for (module, kind), roots in ref._roots.items():
        for i in range(len(roots)):
            (g1, p1), (g2, p2) = fast.locate(module, kind, i), ref.locate(module, kind, i)
            assert (fast.groups.index(g1), p1) == (ref.groups.index(g2), p2)


@pytest.mark.parametrize("name", list(TOYS))
def test_vectorised_build_equals_reference_on_toys(name: str) -> None:
    cls, shape, leaves = TOYS[name]
    _same(cls().eval(), torch.randn(shape), leaves)


@pytest.mark.parametrize("name", ZOO)
def test_vectorised_build_equals_reference_on_zoo(name: str) -> None:
    _same(secateurs.create_model(name).eval(), torch.randn(1, 3, 32, 32))


def test_a_hash_collision_falls_back_to_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every role hashed to the same number: groups with different roles collide, the
    exact check sees it, and the reference builds the graph."""
    model, x = secateurs.create_model("resnet20").eval(), torch.randn(1, 3, 32, 32)
    gm, state = _state(model, x)
    ref = build_graph_reference(gm, state, model)
    calls = []
    real = build_graph_reference
    monkeypatch.setattr(torch, "randint", lambda lo, hi, size, generator=None: torch.zeros(size, dtype=torch.long))
    import secateurs.graph._build as G

    monkeypatch.setattr(G, "build_graph_reference", lambda *a: calls.append(1) or real(*a))
    fast = G.build_graph(gm, state, model)
    assert calls == [1]
    assert [(g.name, g.size) for g in fast.groups] == [(g.name, g.size) for g in ref.groups]


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(4, 6, 3, padding=1), (2, 4, 9, 7)),
        (nn.Conv2d(4, 6, 3, stride=2, dilation=2, bias=False), (1, 4, 11, 12)),
        (nn.Conv2d(4, 8, (3, 5), padding="same", groups=2, padding_mode="reflect"), (1, 4, 8, 9)),
        (nn.Conv2d(4, 8, 3, padding="valid", groups=4), (1, 4, 6, 6)),
        (nn.Conv1d(3, 5, 4, stride=3, padding=2), (2, 3, 17)),
        (nn.Conv3d(2, 3, 3, padding=(1, 0, 2)), (1, 2, 5, 6, 7)),
        (nn.Linear(6, 3), (2, 5, 6)),
        (nn.Linear(6, 3, bias=False), (6,)),
    ],
)
def test_fast_layer_shapes_equal_the_meta_kernels(module: nn.Module, shape: tuple) -> None:
    x = torch.empty(shape, device="meta")
    fast = M._fast_shape(module, x)
    ref = torch.func.functional_call(module, {k: v.to("meta") for k, v in module.named_parameters()}, (x,))
    assert fast is not None and fast.shape == ref.shape and fast.dtype == ref.dtype


def test_fast_layer_shapes_leave_mismatches_to_the_meta_kernels() -> None:
    """A conv whose weight does not fit its input gets no shape from arithmetic: the meta
    kernels run and raise, as the real forward would."""
    conv = nn.Conv2d(4, 6, 3)
    assert M._fast_shape(conv, torch.empty(1, 5, 8, 8, device="meta")) is None
    assert M._fast_shape(conv, torch.empty(1, 4, 2, 2, device="meta")) is None  # output would be empty
    assert M._fast_shape(nn.Linear(6, 3), torch.empty(2, 5, device="meta")) is None


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "vgg16"])
def test_vectorised_removals_equal_walking_the_members(name: str) -> None:
    """Units in a shuffled order, some twice: the same modules, kinds, order and indices."""
    from secateurs.graph.groups import removals

    graph = secateurs.trace(secateurs.create_model(name).eval(), torch.randn(1, 3, 32, 32))
    units = [u for g in graph.groups for u in g.units]
    rng = torch.Generator().manual_seed(0)
    picked = [units[int(i)] for i in torch.randint(0, len(units), (len(units) // 3,), generator=rng)]
    fast = removals(picked)
    walked: dict = {}
    for u in picked:
        for m in u.members:  # materialised now: removals() of these units walks them
            walked.setdefault(m.module, {}).setdefault(m.kind, set()).add(m.index)
    walked = {n: {k: sorted(v) for k, v in kinds.items()} for n, kinds in walked.items()}
    assert [(n, list(k.items())) for n, k in fast.items()] == [(n, list(k.items())) for n, k in walked.items()]
    assert removals(picked) == fast  # the member walk, now that members exist


def test_shape_check_catches_a_broken_surgeon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A conv surgeon that forgets the input side leaves a consumer one channel too wide:
    the shape check on meta tensors (fast conv shapes included) must catch it and undo all."""
    import copy
    import dataclasses

    from secateurs.errors import PruningError
    from secateurs.graph import LAYER_TYPES, remove_units

    model = secateurs.create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    graph = secateurs.trace(model, x)
    before = copy.deepcopy(model.state_dict())
    conv = LAYER_TYPES[nn.Conv2d]

    def forgets_inputs(journal, module, kinds):
        return conv.prune(journal, module, {k: v for k, v in kinds.items() if k != "in"})

    monkeypatch.setitem(LAYER_TYPES, nn.Conv2d, dataclasses.replace(conv, prune=forgets_inputs))
    group = next(g for g in graph.prunable_groups if g.name == "stages.0.0.conv1.0")
    with pytest.raises(PruningError, match="undone"):
        remove_units(model, graph, group.units[:2], x)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    monkeypatch.setitem(LAYER_TYPES, nn.Conv2d, conv)
    remove_units(model, graph, group.units[:2], x)  # the same request, surgeon intact: fine
    block = model.get_submodule("stages.0.0")
    assert block.conv1[0].out_channels == block.conv2[0].in_channels == 14
