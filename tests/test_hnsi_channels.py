"""hnsi's structural claim on a zoo model: at 50% kernel-sparse MACs, the high-level convs stop
reading whole input channels, which materialisation removes (dense MACs fall), while the
low-level convs keep reading every input channel (docs/methods.md, hnsi)."""

from __future__ import annotations

import pytest
import torch

import secateurs
from secateurs import count_macs
from secateurs.methods._kernels import kernel_layers

SHAPE = (3, 32, 32)


def run(high_strength: float):
    torch.manual_seed(0)
    model = secateurs.create_model("resnet20", num_classes=10, in_channels=3)
    pruned, result = secateurs.prune(
        model,
        "hnsi",
        macs_reduction=0.5,
        finetune="none",
        latency=False,
        input_shape=SHAPE,
        method_options={"high_strength": high_strength},
    )
    return model, pruned, result


@pytest.fixture(scope="module")
def default_run():
    return run(0.6)


def test_high_level_convs_lose_whole_input_channels_and_low_level_ones_none(default_run):
    model, pruned, result = default_run
    convs = [x.name for x in kernel_layers(model, torch.zeros(1, *SHAPE))]
    low = result.rounds[1].details["low_layers"]
    assert low == convs[: int(0.5 * len(convs) + 0.5)]  # low_fraction 0.5, forward order
    f = result.finalized
    removed = f["inputs_removed"]
    assert removed and set(removed) <= set(convs) - set(low), removed  # only high-level convs lose inputs
    for name in low:  # the low-level convs read as many channels as before
        assert pruned.get_submodule(name).in_channels == model.get_submodule(name).in_channels, name
    for name, k in removed.items():
        assert pruned.get_submodule(name).in_channels == model.get_submodule(name).in_channels - k, name
    base, after = count_macs(model, SHAPE), count_macs(pruned, SHAPE)
    assert f["dense_macs"] == [base, after]
    assert abs(result.achieved - 0.5) <= 0.01  # the kernel-sparse target
    assert 1 - after / base >= 0.20  # measured 24.0% (resnet20, seed 0)


def test_the_default_strength_removes_more_channels_than_the_stage_strength(default_run):
    """At ``high_strength=1`` the same target is met mostly with scattered kernels: fewer
    channels go, and the dense MACs fall less (14.6% against 24.0% on this model)."""
    model, _, result = default_run
    _, plain_pruned, plain = run(1.0)
    assert abs(plain.achieved - 0.5) <= 0.01
    assert plain.finalized["inputs_removed_total"] < result.finalized["inputs_removed_total"]
    assert count_macs(plain_pruned, SHAPE) > count_macs(default_run[1], SHAPE)
    assert 1 - count_macs(plain_pruned, SHAPE) / count_macs(model, SHAPE) < 0.20
