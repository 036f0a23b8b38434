"""A user's own layer type, registered at run time with ``secateurs.register_layer``: traced,
pruned through (as a producer and as a consumer), checked against zeroing, counted and
saved and loaded; and the registry's own rules."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs.errors import ConfigError, PruningError
from secateurs.graph import prune_channels, trace
from secateurs.graph.layers import (
    CONV,
    LAYER_TYPES,
    Journal,
    LayerCost,
    LayerType,
    dense_flow,
    keep_indices,
    layer_type,
    narrow_param,
    unregister_layer,
)
from secateurs.measure.macs import layer_costs

IMAGE = (3, 8, 8)


class PointwiseConv(nn.Module):
    """A 1x1 convolution written as an einsum on its own parameters: a layer the library
    does not know until it is registered (fx would trace into it and stop at its weights)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels) / math.sqrt(in_channels))
        self.bias = nn.Parameter(torch.randn(out_channels) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oi,bihw->bohw", self.weight, x) + self.bias.view(1, -1, 1, 1)


def _prune(j: Journal, m: PointwiseConv, removals: dict[str, list[int]]) -> None:
    if removals.get("out"):
        keep = keep_indices(m.out_channels, removals["out"])
        narrow_param(j, m, "weight", 0, keep)
        narrow_param(j, m, "bias", 0, keep)
        j.set(m, "out_channels", len(keep))
    if removals.get("in"):
        keep = keep_indices(m.in_channels, removals["in"])
        narrow_param(j, m, "weight", 1, keep)
        j.set(m, "in_channels", len(keep))


POINTWISE = LayerType(
    "pointwise",
    (PointwiseConv,),
    role="out",
    flow=dense_flow(),
    prune=_prune,
    widths=lambda m: (m.in_channels, m.out_channels),
    macs=lambda m, inputs, output, sparse: output.numel() * m.in_channels,
    cost=lambda m, output: LayerCost("conv", m.in_channels, m.out_channels, positions=output[0, 0].numel(), bias=True),
    spec=lambda m: {"in_channels": m.in_channels, "out_channels": m.out_channels},
)


class Net(nn.Module):
    """conv-BN-ReLU -> the user's pointwise conv -> ReLU -> conv -> pool -> linear: the
    custom layer reads a prunable group (``in``) and produces one (``out``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.mix = PointwiseConv(6, 10)
        self.conv2 = nn.Conv2d(10, 5, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(self.conv2(torch.relu(self.mix(x))))


def net() -> Net:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():  # statistics that are not the identity, so the BN matters
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def registered():
    yield secateurs.register_layer(POINTWISE)
    LAYER_TYPES.pop(PointwiseConv, None)  # whichever type a test left registered


def _zeroed(model: nn.Module, request: dict[str, list[int]]) -> nn.Module:
    """A copy of the unpruned model in which every removed channel reaches its readers as
    zero: the columns its readers read it through are zeroed (an independent reference)."""
    graph = trace(model, torch.zeros(1, *IMAGE))
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, channels in request.items():
            for c in channels:
                group, pos = graph.locate(name, layer_type(modules[name]).role, c)
                for member in group.units[pos].members:
                    if member.kind == "in":
                        modules[member.module].weight[:, member.index] = 0
    return ref


@pytest.mark.parametrize(
    "request_",
    [{"mix": [1, 4, 7]}, {"conv1": [0, 2]}, {"bn1": [5]}, {"mix": [0], "conv1": [3]}],
    ids=["its-outputs", "its-inputs", "its-inputs-by-bn", "both"],
)
def test_pruning_through_a_registered_layer_equals_zeroing(registered, request_) -> None:
    model = net()
    x = torch.randn(6, *IMAGE, generator=torch.Generator().manual_seed(1))
    reference = _zeroed(model, request_)(x)
    pruned = prune_channels(copy.deepcopy(model), torch.zeros(1, *IMAGE), request_)
    removed_out = len(request_.get("mix", []))
    removed_in = len(request_.get("conv1", []) + request_.get("bn1", []))
    assert (pruned.mix.in_channels, pruned.mix.out_channels) == (6 - removed_in, 10 - removed_out)
    assert tuple(pruned.mix.weight.shape) == (10 - removed_out, 6 - removed_in)
    assert pruned.conv2.in_channels == 10 - removed_out
    torch.testing.assert_close(pruned(x), reference, rtol=1e-5, atol=1e-5)


def test_the_trace_sees_the_registered_layer_as_one_node(registered) -> None:
    graph = trace(net(), torch.zeros(1, *IMAGE))
    ins = next(g for g in graph.groups if ("mix", "in") in g.layers)
    outs = next(g for g in graph.groups if ("mix", "out") in g.layers)
    assert ins.prunable and outs.prunable
    assert set(ins.layers) == {("conv1", "out"), ("bn1", "bn"), ("mix", "in")}
    assert set(outs.layers) == {("mix", "out"), ("conv2", "in")}
    assert any(n.op == "call_module" and n.target == "mix" for n in graph.gm.graph.nodes)


def test_unregistered_the_layer_keeps_its_channels() -> None:
    graph = trace(net(), torch.zeros(1, *IMAGE))
    conv1 = next(g for g in graph.groups if ("conv1", "out") in g.layers)
    assert not conv1.prunable and "einsum" in conv1.reason
    with pytest.raises(PruningError, match="PointwiseConv; name a Conv, Linear or BatchNorm"):
        prune_channels(net(), torch.zeros(1, *IMAGE), {"mix": [0]})


def test_macs_and_cost_of_a_registered_layer(registered) -> None:
    model = net()
    total, layers = secateurs.count_macs(model, IMAGE, per_layer=True)
    h, w = IMAGE[1:]
    assert layers["mix"] == h * w * 6 * 10  # one MAC per (position, input, output)
    assert total == h * w * (3 * 9 * 6 + 6 * 10 + 10 * 9 * 5) + 5 * 4
    pruned = prune_channels(copy.deepcopy(model), torch.zeros(1, *IMAGE), {"mix": [0, 1], "conv1": [2]})
    assert secateurs.count_macs(pruned, IMAGE, per_layer=True)[1]["mix"] == h * w * 5 * 8
    cost = layer_costs(model, torch.zeros(1, *IMAGE))["mix"]
    assert cost.cost(1, 2) == (float(h * w * 5 * 8), float(5 * 8 + 8))


def test_a_pruned_model_with_the_layer_saves_and_loads(registered, tmp_path: Path) -> None:
    pruned = prune_channels(net(), torch.zeros(1, *IMAGE), {"mix": [3, 9], "conv1": [1]})
    secateurs.save(pruned, tmp_path / "m.safetensors")
    loaded = secateurs.load(tmp_path / "m.safetensors", arch=net)
    assert (loaded.mix.in_channels, loaded.mix.out_channels) == (5, 8)
    x = torch.randn(3, *IMAGE)
    assert torch.equal(loaded.eval()(x), pruned.eval()(x))


def test_registering_a_class_twice_needs_replace(registered) -> None:
    with pytest.raises(ConfigError, match="registered already as layer type 'pointwise'.*replace=True"):
        secateurs.register_layer(dataclasses.replace(POINTWISE, name="other"))
    again = secateurs.register_layer(dataclasses.replace(POINTWISE, name="other"), replace=True)
    assert LAYER_TYPES[PointwiseConv] is again


def test_a_conv_subclass_registered_as_a_conv_is_pruned_like_one() -> None:
    class LeafConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)

    model = nn.Sequential(LeafConv(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    assert not trace(model, torch.zeros(1, *IMAGE)).prunable_groups  # traced into: weights read directly
    layer = secateurs.register_layer(dataclasses.replace(CONV, name="leaf-conv", classes=(LeafConv,)))
    try:
        x = torch.randn(2, *IMAGE)
        ref = copy.deepcopy(model)
        with torch.no_grad():
            ref[2].weight[:, 1] = 0
        pruned = prune_channels(model, torch.zeros(1, *IMAGE), {"0": [1]})
        assert pruned[0].out_channels == 3
        torch.testing.assert_close(pruned(x), ref(x))
    finally:
        unregister_layer(layer)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(role="out"), "give it flow.*prune.*widths"),
        (dict(role="filters"), "role 'filters' is not one of"),
        (dict(prune=_prune), "prune but no widths"),
    ],
)
def test_an_incomplete_layer_type_is_refused(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        LayerType("broken", (PointwiseConv,), **kwargs)


def test_a_spec_class_name_may_not_shadow_another() -> None:
    shadow = type("Conv2d", (nn.Module,), {})
    with pytest.raises(ConfigError, match="'Conv2d' is already torch.nn.modules.conv.Conv2d"):
        secateurs.register_layer(LayerType("shadow", (shadow,), spec=lambda m: {}))
    assert shadow not in LAYER_TYPES
