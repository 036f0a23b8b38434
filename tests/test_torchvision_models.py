"""torchvision's classification CNNs through the engine: traced, and removals exact.

torchvision is optional (the ``dev`` extra). On the CPU build of torch its compiled ops do
not load and a plain ``import torchvision`` fails inside ``torchvision._meta_registrations``;
:func:`secateurs.models._torchvision.import_torchvision` imports it without those op
registrations, which the classification models never call. The module is skipped, with the
reason, when torchvision is not installed at all.

The reference is the one of ``test_engine``: removing channels gives the outputs (float64)
of the original model with those channels zeroed at their producers. Per model, two groups
are checked here (the one spanning the most layers, e.g. a residual stream, and one drawn
by a fixed seed), each by removing one unit per conv group (one unit where no grouped conv
is involved); ``benchmarks/torchvision_coverage.py`` walks every group of every model.
"""

from __future__ import annotations

import copy
import functools
import random

import pytest
import torch
import torch.nn as nn
from test_engine import _randomise, _seed, conv_group_classes, request_for, zeroed

from secateurs.graph import ChannelGraph, prune_channels, trace

try:
    from secateurs.models._torchvision import import_torchvision

    tvm = import_torchvision()
except ImportError as e:  # not installed: the dev extra brings it
    pytest.skip(
        f"torchvision is not importable ({e}); pip install -e '.[dev]' -c constraints.txt", allow_module_level=True
    )

pytestmark = pytest.mark.usefixtures("one_thread")

#: Of the output scale. float64 leaves ~1e-14; tighter than test_engine's because one channel
#: of a network without BN (AlexNet, SqueezeNet) moves its output by only ~1e-5 of its scale.
TOLERANCE = 1e-9

#: name -> (input side, constructor options); inception_v3 needs at least 75 pixels.
MODELS: dict[str, tuple[int, dict]] = {
    "resnet18": (64, {}),
    "resnet50": (64, {}),
    "resnext50_32x4d": (64, {}),
    "wide_resnet50_2": (64, {}),
    "mobilenet_v2": (64, {}),
    "mobilenet_v3_large": (64, {}),
    "efficientnet_b0": (64, {}),
    "efficientnet_v2_s": (64, {}),
    "regnet_x_400mf": (64, {}),
    "regnet_y_400mf": (64, {}),
    "mnasnet1_0": (64, {}),
    "shufflenet_v2_x1_0": (64, {}),
    "squeezenet1_0": (64, {}),
    "densenet121": (64, {}),
    "googlenet": (64, {"aux_logits": False, "init_weights": True}),
    "inception_v3": (96, {"aux_logits": False, "init_weights": True}),
    "vgg11_bn": (64, {}),
    "alexnet": (64, {}),
    "convnext_tiny": (64, {}),
}
#: Over 10 s each on one core (big weights in float64, or long traces): marked slow, still run in CI.
SLOW = {"wide_resnet50_2", "efficientnet_v2_s", "convnext_tiny", "densenet121", "vgg11_bn", "resnext50_32x4d"}


@functools.cache
def built(name: str) -> tuple[nn.Module, ChannelGraph, torch.Tensor]:
    """The model with trained-looking BN statistics, in float64, its trace and an input."""
    side, options = MODELS[name]
    torch.manual_seed(_seed(name))
    model = getattr(tvm, name)(num_classes=10, **options)
    with torch.no_grad():  # ConvNeXt's 1e-6 initial layer scales would hide every block: trained ones are ~0.1-1
        for key, p in model.named_parameters():
            if key.endswith("layer_scale"):
                p.uniform_(0.3, 1.0)
    _randomise(model, torch.randn(4, 3, side, side), _seed(name, "bn"))
    model.double()
    x = torch.randn(2, 3, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return model, trace(model, torch.zeros_like(x)), x


def one_per_conv_group(graph: ChannelGraph, gi: int, rng: random.Random) -> list[int]:
    """One unit position from each class of units that share conv groups (one in all when
    the group meets no grouped conv)."""
    return sorted(rng.choice(c) for c in conv_group_classes(graph.groups[gi], graph).values())


def checked_groups(graph: ChannelGraph, name: str) -> list[int]:
    prunable = [i for i, g in enumerate(graph.groups) if g.prunable]
    widest = max(prunable, key=lambda i: (len(graph.groups[i].layers), -i))
    drawn = random.Random(_seed(name, "group")).choice(prunable)
    return sorted({widest, drawn})


@pytest.mark.parametrize("name", [pytest.param(n, marks=(pytest.mark.slow,) if n in SLOW else ()) for n in MODELS])
def test_torchvision_removal_equals_zeroing(name: str) -> None:
    model, graph, x = built(name)
    assert graph.prunable_groups, graph.summary()
    with torch.no_grad():
        original = model(x)
    for gi in checked_groups(graph, name):
        units = [graph.groups[gi].units[p] for p in one_per_conv_group(graph, gi, random.Random(_seed(name, gi)))]
        pruned = copy.deepcopy(model)
        prune_channels(pruned, torch.zeros_like(x), request_for(units), graph=graph)
        with torch.no_grad():
            want, got = zeroed(model, units)(x), pruned(x)
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= TOLERANCE * scale, (name, graph.groups[gi])
        assert (original - want).abs().max().item() > 10 * TOLERANCE * scale, ("a vacuous check", graph.groups[gi])


def test_only_convnext_keeps_channels_for_a_reason_other_than_its_ends() -> None:
    """Every model but ConvNeXt has only its input and output non-prunable; ConvNeXt's
    stream goes through LayerNorm over channels (written as permute + layer_norm)."""
    stuck = {}
    for name in ("resnet18", "shufflenet_v2_x1_0", "efficientnet_b0", "convnext_tiny"):
        graph = built(name)[1]
        stuck[name] = {g.reason.split(" (")[0] for g in graph.groups if not g.prunable}
    assert stuck["resnet18"] == stuck["efficientnet_b0"] == {"network input", "network output"}
    assert "permute" in stuck["convnext_tiny"]
    assert stuck["shufflenet_v2_x1_0"] - {"network input", "network output"} == {
        "shuffles, equal chunks or adds tie all 58 channels of 'stage2.0.branch1.2' into one unit: removing it would "
        "empty the layer",
        "shuffles, equal chunks or adds tie all 116 channels of 'stage3.0.branch1.2' into one "
        "unit: removing it would empty the layer",
    }
