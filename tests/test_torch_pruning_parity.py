"""Parity with Torch-Pruning: the same request gives the same smaller network.

For one request (output channels of one conv or linear), ``secateurs.prune_channels`` and
Torch-Pruning's ``DependencyGraph.get_pruning_group(...).prune()`` are both exact removals
of the same coupled channels, so on deep copies of one model they must agree on the
parameter count, the MACs, every remaining weight, and the outputs in eval mode.

The cases cover a residual stream (several convs and BNs, a shortcut conv, the next
stage's inputs), a block-internal conv, a stream through depthwise convs, a Ghost module's
concat, squeeze-excitation, a grouped conv's outputs and a classifier Linear.

Left out, because Torch-Pruning 1.6.1 does not handle them (checked by hand):
  * ``shufflenet_v2``: ``build_dependency`` raises ZeroDivisionError in its reshape
    index mapping (``test_shufflenet_v2`` builds, so only its prunable groups are here);
  * channels that cross a channel shuffle (ShuffleNetV1/V2): the pruned model no longer
    runs (secateurs refuses the request);
  * an uneven removal from a grouped conv (ShuffleNetV1): the pruned model runs but
    computes something else, or does not run (secateurs refuses);
  * a depthwise conv with a channel multiplier: the pruned model does not run.
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs.measure import count_macs, count_params

tp = pytest.importorskip("torch_pruning")

INPUT = (3, 32, 32)
ATOL = 1e-5

# (model, layer whose output channels are requested, the channel indices)
CASES = [
    ("resnet20", "stem.0", [0, 5, 9]),  # stage-0 residual stream: 13 layer roles
    ("resnet20", "stages.1.0.shortcut.0", [1, 2, 30]),  # stage-1 stream, named by its shortcut conv
    ("resnet20", "stages.2.1.conv1.0", [0, 17, 63]),  # block-internal
    ("test_resnet", "stages.2.0.conv2.0", [3, 4]),  # the last stream: feeds the classifier
    ("test_resnet", "stages.0.0.conv1.0", [7]),
    ("test_vgg", "features.0", [0, 1, 2]),
    ("test_vgg", "features.11", [5, 31]),  # the last conv: feeds flatten + Linear
    ("vgg16", "features.7", list(range(0, 128, 3))),
    ("test_mobilenet_v1", "stem.0", [2, 6]),  # through a depthwise conv
    ("test_mobilenet_v1", "stages.2.0", [0, 9]),  # named by the depthwise conv itself
    ("test_mobilenet_v1", "stages.4.3", [1, 63]),
    ("test_mobilenet_v2", "stages.3.conv.6", [0, 23]),  # inverted-residual stream
    ("test_mobilenet_v2", "stages.2.conv.0", [10, 11, 40]),  # expansion conv
    ("test_mobilenet_v2", "final_conv.0", [0, 1]),
    ("test_ghostnet", "stem.0", [1]),
    ("test_ghostnet", "stages.1.branch.1.primary.0", [0, 5]),  # a Ghost module: concat of two convs
    ("test_ghostnet", "stages.2.branch.1.reduce", [0, 6]),  # squeeze-excitation
    ("test_ghostnet", "head.1", [0, 63]),  # a Linear
    ("test_shufflenet_v1", "stages.4.branch.6", [0, 16, 32]),  # a grouped conv's outputs, one per group
    ("test_shufflenet_v2", "stem.0", [3]),  # into both branches of a stride-2 unit
    ("test_shufflenet_v2", "stages.3.branch2.0", [0, 15]),
]


def _trained_looking(name: str) -> nn.Module:
    """Random BN affine terms, BN statistics measured on a random batch (so activations stay
    O(1) through every depth, as in a trained network), and PyTorch's default Linear init
    instead of the zoo's std-0.01 one: the logits are O(1) and depend on the input, so an
    absolute tolerance means something."""
    torch.manual_seed(0)
    model = secateurs.create_model(name)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *INPUT))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


@cache
def _pruned(name: str, layer: str, indices: tuple[int, ...]) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(original, pruned by secateurs, pruned by Torch-Pruning); cached across the tests."""
    model = _trained_looking(name)
    x = torch.zeros(1, *INPUT)
    ours = secateurs.prune_channels(copy.deepcopy(model), x, {layer: list(indices)})
    theirs = copy.deepcopy(model)
    target = theirs.get_submodule(layer)
    fn = tp.prune_linear_out_channels if isinstance(target, nn.Linear) else tp.prune_conv_out_channels
    dg = tp.DependencyGraph().build_dependency(theirs, example_inputs=x)
    group = dg.get_pruning_group(target, fn, idxs=list(indices))
    assert dg.check_pruning_group(group)
    group.prune()
    return model, ours.eval(), theirs.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # xdist workers share the cores
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name, layer, indices", CASES)
def test_same_params_and_macs(name: str, layer: str, indices: list[int]) -> None:
    model, ours, theirs = _pruned(name, layer, tuple(indices))
    assert count_params(ours) < count_params(model)
    assert count_params(ours) == count_params(theirs)
    assert count_macs(ours, INPUT) == count_macs(theirs, INPUT)


@pytest.mark.parametrize("name, layer, indices", CASES)
def test_same_weights(name: str, layer: str, indices: list[int]) -> None:
    """Exact removals of the same channels keep the same entries of every tensor."""
    _, ours, theirs = _pruned(name, layer, tuple(indices))
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.parametrize("name, layer, indices", CASES)
def test_same_outputs(name: str, layer: str, indices: list[int]) -> None:
    model, ours, theirs = _pruned(name, layer, tuple(indices))
    x = torch.randn(2, *INPUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want, before = ours(x), theirs(x), model(x)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (got - before).abs().max() > 100 * ATOL, "the removed channels were dead: a vacuous comparison"
