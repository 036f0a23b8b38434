"""The pruning engine against independent references.

The reference for exactness is zeroing: removing a set of channels must give the outputs
of the original model in which those channels are made exactly zero (producer rows and
biases, BN scale and shift, in every coupled place). The zeroing, the choice of balanced
subsets for grouped convs and the parameter-count prediction are written here from the
units' members and the layers' shapes, not taken from the engine.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import random
import re
import zlib
from collections import defaultdict

import pytest
import torch
import torch.fx
import torch.nn as nn
from engine_models import TOYS, DataDependent

import secateurs
from secateurs.errors import PruningError, TraceError
from secateurs.graph import LAYER_TYPES, ChannelGraph, ChannelGroup, Unit, prune_channels, remove_units, trace
from secateurs.models import create_model, list_models

# shufflenet_v1 (full size, slow in float64) is walked through test_shufflenet_v1.
FULL_SIZE = [
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "vgg16",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v2",
    "ghostnet",
]
ZOO = sorted(n for n in list_models() if n.startswith("test_")) + FULL_SIZE
IMAGE = (2, 3, 32, 32)
TOLERANCE = 1e-5  # of the output scale; float64 leaves ~1e-12 of rounding


pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _randomise(model: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """Trained-looking BN statistics and affine terms, and random biases, so that a zeroed
    channel changes the output: the statistics are measured on ``x`` (no activation
    saturates, no ReLU is dead everywhere), then perturbed."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.bias is not None:
                # Layers with a bias have no BN after them (SE gates, heads): smaller weights
                # keep the gates out of saturation, a bias of 1..2 keeps their ReLUs alive.
                m.weight.mul_(0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) + 1)
        for m in norms:
            m.momentum = None  # a plain average over the calibration batch
        model.train()(x)
        for m in norms:
            n = m.num_features
            m.momentum = 0.1
            m.running_mean.add_(torch.randn(n, generator=g) * 0.2 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model.eval()


@functools.cache
def zoo(name: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, ChannelGraph]:
    """A zoo model (never modified: tests work on copies) and its trace."""
    torch.manual_seed(_seed(name))
    model = create_model(name, num_classes=10, in_channels=3)
    _randomise(model, torch.randn(8, *IMAGE[1:]), _seed(name, "bn"))  # float32: float64 convs are slow
    model.to(dtype)
    return model, trace(model, torch.zeros(IMAGE, dtype=dtype))


@functools.cache
def structure(name: str) -> tuple[None, ChannelGraph]:
    """The groups of a zoo model, for parametrising: a trace only, no weights to set up."""
    return None, trace(create_model(name, num_classes=10, in_channels=3), torch.zeros(IMAGE))


@functools.cache
def toy(name: str) -> tuple[nn.Module, ChannelGraph]:
    cls, shape, leaves = TOYS[name]
    torch.manual_seed(_seed(name))
    calibration = torch.randn((8, *shape[1:]) if len(shape) > 1 else shape, dtype=torch.float64)
    model = _randomise(cls().double(), calibration, _seed(name, "bn"))
    return model, trace(model, torch.zeros(shape, dtype=torch.float64), leaf_modules=leaves)


def _cases(source, names) -> list:
    return [
        pytest.param(name, gi, id=f"{name}-{gi}-{g.name}")
        for name in names
        for gi, g in enumerate(source(name)[1].groups)
        if g.prunable
    ]


# --- references -----------------------------------------------------------------------


def zeroed(model: nn.Module, units: list[Unit]) -> nn.Module:
    """A copy of ``model`` in which every channel of ``units`` is exactly zero."""
    ref = copy.deepcopy(model)
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for u in units:
            for m in u.members:
                layer = modules[m.module]
                if m.kind in ("out", "bn"):  # a producer row (+ bias), or BN scale and shift
                    layer.weight[m.index] = 0
                    if layer.bias is not None:
                        layer.bias[m.index] = 0
    return ref


def plan_of(units: list[Unit]) -> dict[str, dict[str, set[int]]]:
    plan: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for u in units:
        for m in u.members:
            plan[m.module][m.kind].add(m.index)
    return plan


def predicted_param_drop(model: nn.Module, units: list[Unit]) -> int:
    """Parameters removed, from each layer's shape and the channels it loses."""
    modules = dict(model.named_modules())
    drop = 0
    for name, kinds in plan_of(units).items():
        m = modules[name]
        r_out, r_in, r_bn = (len(kinds.get(k, ())) for k in ("out", "in", "bn"))
        if isinstance(m, nn.modules.conv._ConvNd):
            o, i, g, k = m.out_channels, m.in_channels, m.groups, math.prod(m.kernel_size)
            depthwise = 1 < g == i  # one input column per filter, and that stays so
            cols_after = 1 if depthwise else (i - r_in) // g
            bias = m.bias is not None
            drop += o * (i // g) * k + o * bias - ((o - r_out) * cols_after * k + (o - r_out) * bias)
        elif isinstance(m, nn.Linear):
            o, i, bias = m.out_features, m.in_features, m.bias is not None
            drop += o * i + o * bias - ((o - r_out) * (i - r_in) + (o - r_out) * bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            drop += 2 * r_bn  # weight and bias; running statistics are buffers
    return drop


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_group_classes(group: ChannelGroup, graph: ChannelGraph) -> dict[tuple, list[int]]:
    """The group's unit positions classed by the conv groups their members fall in."""

    def signature(u: Unit) -> tuple:
        sig = []
        for m in u.members:
            gc = graph.grouped_convs.get(m.module)
            if gc is not None and m.kind in ("in", "out"):
                width = gc.in_channels if m.kind == "in" else gc.out_channels
                sig.append((m.module, m.kind, m.index // (width // gc.groups)))
        return tuple(sig)

    classes: dict[tuple, list[int]] = defaultdict(list)
    for pos, u in enumerate(group.units):
        classes[signature(u)].append(pos)
    return classes


def balanced_subset(group: ChannelGroup, graph: ChannelGraph, rng: random.Random, keep: int = 1) -> list[int]:
    """Positions of 1..size-keep random units; for a group in grouped convs, the same number
    from every conv group."""
    classes = conv_group_classes(group, graph)
    if len(classes) == 1:
        return rng.sample(range(group.size), rng.randint(1, group.size - keep))
    smallest = min(len(c) for c in classes.values())
    assert smallest > keep, f"{group!r}: a conv group holds {smallest} units, no proper balanced subset"
    k = rng.randint(1, smallest - keep)
    return sorted(p for c in classes.values() for p in rng.sample(c, k))


def request_for(units: list[Unit]) -> dict[str, list[int]]:
    """A prune_channels request naming one producer channel of each unit."""
    request: dict[str, list[int]] = defaultdict(list)
    for u in units:
        m = next(m for m in u.members if m.kind in ("out", "bn"))
        request[m.module].append(m.index)
    return dict(request)


def check_removal_equals_zeroing(model: nn.Module, graph: ChannelGraph, gi: int, x: torch.Tensor, seed: int) -> None:
    group = graph.groups[gi]
    units = [group.units[p] for p in balanced_subset(group, graph, random.Random(seed))]
    pruned = copy.deepcopy(model)
    prune_channels(pruned, x, request_for(units), graph=graph)
    with torch.no_grad():
        want, got, original = zeroed(model, units)(x), pruned(x), model(x)
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= TOLERANCE * scale
    # The check must be able to fail: zeroing moves the output far more than the tolerance.
    assert (original - want).abs().max().item() > 10 * TOLERANCE * scale, "a vacuous check"
    assert n_params(model) - n_params(pruned) == predicted_param_drop(model, units)


# --- every zoo model, every prunable group ---------------------------------------------


@pytest.mark.parametrize("name, gi", _cases(structure, ZOO))
def test_zoo_removal_equals_zeroing(name: str, gi: int) -> None:
    model, graph = zoo(name)
    assert graph.groups[gi].layers == structure(name)[1].groups[gi].layers
    x = torch.randn(IMAGE, dtype=torch.float64, generator=torch.Generator().manual_seed(gi))
    check_removal_equals_zeroing(model, graph, gi, x, _seed(name, gi))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_has_prunable_groups(name: str) -> None:
    assert zoo(name)[1].prunable_groups


def test_zoo_covers_every_family() -> None:
    """Every registered model is tested itself or through its family's test_* variant."""

    def covered(name: str) -> bool:
        return name in ZOO or f"test_{name}" in ZOO or f"test_{name.rstrip('0123456789')}" in ZOO

    assert [n for n in list_models() if not covered(n)] == []


# --- a pruned model is a plain model ---------------------------------------------------


def _prune_every_group(name: str) -> tuple[nn.Module, nn.Module, dict[tuple, int]]:
    model, graph = zoo(name, torch.float32)
    rng = random.Random(_seed(name, "all"))
    units, removed = [], {}
    for g in graph.prunable_groups:
        classes = conv_group_classes(g, graph)
        if len(classes) > 1 and min(map(len, classes.values())) <= 2:
            continue  # e.g. two shuffle positions per conv group: keeping two leaves nothing to remove
        # Keep two: a depthwise conv left with one channel is an ordinary 1x1-channel conv,
        # and its group would be split in two by the re-trace below.
        chosen = balanced_subset(g, graph, rng, keep=2)
        units += [g.units[p] for p in chosen]
        removed[g.layers] = len(chosen)
    pruned = copy.deepcopy(model)
    remove_units(pruned, graph, units, torch.zeros(IMAGE))
    return model, pruned, removed


def _hooks(m: nn.Module) -> list[str]:
    return [k for k, v in vars(m).items() if k.endswith("hooks") and v]


@pytest.mark.parametrize("name", ZOO)
def test_pruned_model_is_plain_and_round_trips(name: str, tmp_path) -> None:
    model, pruned, removed = _prune_every_group(name)
    x = torch.randn(IMAGE, generator=torch.Generator().manual_seed(1))
    before, after = dict(model.named_modules()), dict(pruned.named_modules())
    assert before.keys() == after.keys()
    for key, m in after.items():
        assert type(m) is type(before[key]) and vars(m).keys() == vars(before[key]).keys(), key
        assert not _hooks(m), (key, _hooks(m))
        for p in m.parameters(recurse=False):
            assert type(p) is nn.Parameter and p.is_leaf and p.requires_grad and p.is_contiguous()
    with torch.no_grad():
        out = pruned(x)
        assert torch.equal(torch.fx.symbolic_trace(pruned)(x), out)
        regraph = trace(pruned, x)
        sizes = {g.layers: g.size for g in regraph.groups if g.prunable}
        assert {k: sizes.get(k) for k in removed} == {
            g.layers: g.size - removed[g.layers]
            for g in zoo(name, torch.float32)[1].prunable_groups
            if g.layers in removed
        }
        path = secateurs.save(pruned, tmp_path / "pruned.safetensors")
        assert torch.equal(secateurs.load(path).eval()(x), out)


# --- refusals leave the model untouched ------------------------------------------------


def _snapshot(model: nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, repr(m), m.training) for n, m in model.named_modules()],
    )


def _assert_unchanged(model: nn.Module, snap: tuple) -> None:
    tensors, modules = snap
    now = model.state_dict()
    assert now.keys() == tensors.keys()
    assert all(now[k].dtype == v.dtype and torch.equal(now[k], v) for k, v in tensors.items())
    assert [(n, repr(m), m.training) for n, m in model.named_modules()] == modules


REFUSALS = [
    pytest.param("test_resnet", {"head.2": [0]}, "network output", id="network-output"),
    pytest.param(
        "test_shufflenet_v1",
        {"stages.4.branch.6": [0, 1]},
        r"grouped conv \(3 groups of 16 output",
        id="uneven-grouped-conv",
    ),
    pytest.param("test_shufflenet_v1", {"stem.0": [0]}, "grouped conv 'stages.1.branch.0'", id="grouped-straddle"),
    pytest.param(
        "test_shufflenet_v1",
        {"stages.1.branch.0": [2]},
        "fall in 2 of the 3 groups of grouped conv",
        id="shuffle-position-straddles-conv-groups",
    ),
    pytest.param("test_vgg", {"features.0": [8]}, r"out of range: it has 8 output channels", id="index-range"),
    pytest.param("test_vgg", {"features.0": [-1]}, "out of range", id="negative-index"),
    pytest.param("test_vgg", {"features.0": [1.0]}, "not an integer", id="float-index"),
    pytest.param("test_vgg", {"features.0": 3}, "must be a list of indices", id="not-a-list"),
    pytest.param(
        "test_vgg", {"feature.0": [0]}, r"no module 'feature.0'; did you mean 'features.0'", id="unknown-name"
    ),
    pytest.param(
        "test_vgg", {"features.0": list(range(8))}, "removes all 8 output channels of 'features.0'", id="all-channels"
    ),
    pytest.param("test_vgg", {"features.2": [0]}, "'features.2' is a ReLU", id="not-a-layer"),
]


@pytest.mark.parametrize("source, request_, message", REFUSALS)
def test_refusal_leaves_model_unchanged(source, request_, message) -> None:
    if isinstance(source, str):
        model, x = copy.deepcopy(zoo(source, torch.float32)[0]).train(), torch.zeros(IMAGE)
    else:
        x = torch.zeros(2, 3, 8, 8)
        model = _randomise(source(), torch.randn(8, 3, 8, 8), 0).train()
    snap = _snapshot(model)
    with pytest.raises(PruningError, match=message):
        prune_channels(model, x, request_)
    _assert_unchanged(model, snap)


def test_failure_during_surgery_is_undone(monkeypatch) -> None:
    """A surgeon that fails after others have run: every replaced attribute goes back."""
    model, graph = zoo("test_resnet", torch.float32)
    model = copy.deepcopy(model)
    snap = _snapshot(model)

    def broken(journal, module, removals):
        raise RuntimeError("disk on fire")

    linear = dataclasses.replace(LAYER_TYPES[nn.Linear], prune=broken)
    monkeypatch.setitem(LAYER_TYPES, nn.Linear, linear)  # the head comes last in the plan
    group = graph.groups[next(i for i, g in enumerate(graph.groups) if ("head.2", "in") in g.layers)]
    with pytest.raises(PruningError, match="undone.*disk on fire"):
        remove_units(model, graph, group.units[:3], torch.zeros(IMAGE))
    _assert_unchanged(model, snap)


def test_shape_check_catches_a_narrowed_layer_the_graph_disagrees_with() -> None:
    model, graph = zoo("test_vgg", torch.float32)
    model = copy.deepcopy(model)
    model.features[1] = nn.BatchNorm2d(7)  # out of step with features.0 (8 channels)
    snap = _snapshot(model)
    group = next(g for g in graph.prunable_groups if g.name == "features.4")
    with pytest.raises(PruningError, match="features.1"):
        remove_units(model, graph, group.units[:2], torch.zeros(IMAGE))
    _assert_unchanged(model, snap)


# --- toy topologies ----------------------------------------------------------------------


@pytest.mark.parametrize("name, gi", _cases(toy, TOYS))
def test_toy_removal_equals_zeroing(name: str, gi: int) -> None:
    model, graph = toy(name)
    x = torch.randn(TOYS[name][1], dtype=torch.float64, generator=torch.Generator().manual_seed(gi))
    check_removal_equals_zeroing(model, graph, gi, x, _seed(name, gi))


def _group_with(graph: ChannelGraph, module: str, kind: str = "out") -> ChannelGroup:
    return graph.locate(module, kind, 0)[0]


def test_depthwise_multiplier_ties_each_input_to_two_outputs() -> None:
    graph = toy("depthwise_multiplier")[1]
    group = _group_with(graph, "pw.0")
    assert group.prunable and group.size == 8
    for c, u in enumerate(group.units):
        assert [m.index for m in u.members if m.module == "dw.0"] == [c, 2 * c, 2 * c + 1]  # in c, out 2c, 2c+1


def test_flatten_gives_each_channel_its_block_of_features() -> None:
    graph = toy("flatten_linear")[1]
    group = _group_with(graph, "conv.0")
    assert group.prunable
    for c, u in enumerate(group.units):
        assert [m.index for m in u.members if m.module == "fc1"] == list(range(16 * c, 16 * c + 16))


def test_squeeze_excite_gate_is_tied_to_its_input() -> None:
    group = _group_with(toy("squeeze_excite")[1], "conv.0")
    assert group.prunable and ("expand", "out") in group.layers and ("reduce", "in") in group.layers


def test_concat_offsets_the_second_branch() -> None:
    graph = toy("concat")[1]
    assert [u.members[-1] for u in _group_with(graph, "b.0").units] == [("fuse.0", "in", 6 + i) for i in range(4)]


def test_sub_and_mul_tie_the_three_branches() -> None:
    group = _group_with(toy("sub_mul")[1], "a.0")
    assert group.prunable and {("a.0", "out"), ("b.0", "out"), ("c.0", "out")} <= set(group.layers)


def test_unbatched_sum_ties_position_by_position() -> None:
    group = _group_with(toy("unbatched_sum")[1], "a")
    assert group.prunable and group.layers == (("a", "out"), ("b", "out"), ("out", "in"))


@pytest.mark.parametrize(
    "name, module",
    [
        ("upsample", "conv1.0"),
        ("global_mean", "conv.0"),
        ("permute", "conv1.0"),
        ("spatial_gate", "conv.0"),
        ("shared_conv", "stem.0"),
        ("conv1d", "body.0"),
        ("mlp", "fc1"),
        ("unbatched_sum", "a"),
    ],
)
def test_channelwise_topologies_stay_prunable(name: str, module: str) -> None:
    assert _group_with(toy(name)[1], module).prunable


@pytest.mark.parametrize(
    "name, module, reason",
    [
        ("cumsum", "conv1.0", "cumsum .* is an op without a channel handler"),
        ("opaque_function", "conv1.0", "mystery .* is an op without a channel handler"),
        ("constant_scale", "conv1.0", "tensor attribute 'scale'"),
        ("leaf_block", "conv1.0", r"block \(Opaque\) is a module the engine does not look into"),
        ("spatial_gate", "gate", "broadcasts this one-channel operand"),
        ("hard_coded_width", "conv2.0", "hard-codes 6 as the size of dim 1"),
    ],
)
def test_unsupported_topologies_keep_their_channels(name: str, module: str, reason: str) -> None:
    graph = toy(name)[1]
    group = _group_with(graph, module)
    assert not group.prunable
    assert re.search(reason, group.reason), group.reason
    assert graph.prunable_groups, "the rest of the network stays prunable"


def test_trace_keeps_every_module_mode() -> None:
    model = copy.deepcopy(zoo("test_vgg", torch.float32)[0]).train()
    model.features[1].eval()  # e.g. a frozen BN
    modes = [m.training for m in model.modules()]
    trace(model, torch.zeros(IMAGE))
    assert [m.training for m in model.modules()] == modes


def test_leaf_module_is_not_looked_into() -> None:
    graph = toy("leaf_block")[1]
    assert graph.locate("block.inner", "out", 0) is None


def test_data_dependent_forward_raises_trace_error() -> None:
    with pytest.raises(TraceError, match=r"DataDependent in 'branch' \(Branch\).*control flow.*leaf_modules"):
        trace(DataDependent(), torch.zeros(1, 3, 4, 4))


def test_leaf_modules_make_data_dependent_blocks_traceable() -> None:
    from engine_models import Branch

    graph = trace(DataDependent(), torch.zeros(1, 3, 4, 4), leaf_modules=(Branch,))
    assert "Branch" in graph.locate("conv", "out", 0)[0].reason
