"""Params, MACs and latency against hand counts on tiny hand-written models."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn

from secateurs.errors import ConfigError, SecateursError
from secateurs.measure import Measurement, count_macs, count_params, measure, measure_latency

SHAPE = (3, 16, 16)


def conv_zoo() -> nn.Sequential:
    """Plain 3x3, grouped, depthwise and strided convs, then pool, flatten, linear."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, groups=2),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


# MACs = out_elements * (C_in / groups) * prod(kernel) for convs, out * in * rows for linear.
ZOO_LAYER_MACS = {
    "0": (8 * 16 * 16) * 3 * 9,
    "2": (16 * 16 * 16) * (8 // 2) * 9,
    "3": (16 * 16 * 16) * 1 * 9,
    "5": (32 * 8 * 8) * 16 * 9,
    "8": 10 * 32,
}


def test_macs_match_hand_count_per_layer():
    total, layers = count_macs(conv_zoo(), SHAPE, per_layer=True)
    assert layers == ZOO_LAYER_MACS
    assert total == sum(ZOO_LAYER_MACS.values())


@pytest.mark.parametrize(
    "model, shape, expected",
    [
        # conv1d (4 -> 6, k=5, L 20 -> 16) then a linear over the last dim of a 3-D tensor (6 rows)
        (nn.Sequential(nn.Conv1d(4, 6, 5), nn.Linear(16, 3)), (4, 20), 6 * 16 * 4 * 5 + 6 * 16 * 3),
        (nn.Linear(7, 2), (5, 7), 5 * 7 * 2),
        (nn.Conv3d(2, 4, 3, padding=1), (2, 3, 4, 4), (4 * 3 * 4 * 4) * 2 * 27),
        # transposed: every input element goes through C_out/groups kernels
        (nn.ConvTranspose2d(4, 2, 3, stride=2), (4, 5, 5), (4 * 5 * 5) * 2 * 9),
    ],
    ids=["conv1d-linear3d", "linear2d", "conv3d", "convtranspose2d"],
)
def test_macs_other_layer_kinds(model, shape, expected):
    assert count_macs(model, shape) == expected


class Decoder(nn.Module):
    """Linear first, convolution later: a vector input must not be rejected for its rank."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4 * 3 * 3)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(-1, 4, 3, 3))


def test_model_starting_with_linear_takes_any_rank():
    assert count_macs(Decoder(), (6,)) == 36 * 6 + (4 * 3 * 3) * 2 * 4


def test_leading_batch_of_one_is_accepted():
    assert count_macs(conv_zoo(), (1, *SHAPE)) == count_macs(conv_zoo(), SHAPE)


@pytest.mark.parametrize("shape", [(16, 16), (2, 3, 16, 16), (1, 1, 3, 16, 16), (3, 0, 16), "3x16x16"])
def test_bad_input_shape_names_the_shape(shape):
    with pytest.raises(ConfigError, match=re.escape(str(shape))):
        count_macs(conv_zoo(), shape)


def test_forward_failure_is_config_error_and_leaves_no_hooks():
    model = conv_zoo()
    with pytest.raises(ConfigError, match=r"\(4, 16, 16\)"):
        count_macs(model, (4, 16, 16))  # the first conv wants 3 channels
    assert all(not m._forward_hooks for m in model.modules())


def test_sparse_macs_drop_by_zeroed_kernels_only():
    model = conv_zoo()
    dense_before = count_macs(model, SHAPE)
    sparse_before = count_macs(model, SHAPE, sparse=True)
    assert sparse_before == dense_before  # random init: no zero kernel
    with torch.no_grad():
        model[0].weight[0, 1] = 0
        model[0].weight[5, 2] = 0
        model[2].weight[3, 0] = 0
        model[2].weight[4, 1, 1:] = 0  # one non-zero element left: the kernel still counts
        model[8].weight[0, :5] = 0
    drop = 2 * (16 * 16) * 9 + 1 * (16 * 16) * 9 + 5 * 1
    assert count_macs(model, SHAPE) == dense_before
    assert count_macs(model, SHAPE, sparse=True) == sparse_before - drop


@pytest.mark.parametrize("as_buffer", [False, True], ids=["attribute", "buffer"])
def test_sparse_macs_honour_kernel_mask(as_buffer):
    model = conv_zoo()
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[2, :] = False
    mask[6, 0] = False
    if as_buffer:
        model[0].register_buffer("kernel_mask", mask)
    else:
        model[0].kernel_mask = mask
    # the weights are untouched, so only the mask can lower the count
    drop = 4 * (16 * 16) * 9
    assert count_macs(model, SHAPE, sparse=True) == count_macs(model, SHAPE) - drop


def test_kernel_mask_of_wrong_shape_names_the_layer():
    model = conv_zoo()
    model[2].kernel_mask = torch.ones(16, 8, dtype=torch.bool)
    with pytest.raises(SecateursError, match=r"layer '2'.*\(16, 4\)"):
        count_macs(model, SHAPE, sparse=True)


def test_params_and_nonzero_params_exact():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 10))
    expected = (8 * 3 * 9 + 8) + (8 + 8) + (8 * 10 + 10)
    assert count_params(model) == expected
    assert count_params(model, nonzero=True) == expected - 8  # BN bias starts at zero
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[3].bias.zero_()
    assert count_params(model) == expected
    assert count_params(model, nonzero=True) == expected - 8 - 2 * 27 - 10


def test_count_macs_restores_modes_and_removes_hooks():
    model = conv_zoo().train()
    model[4].eval()  # a submodule frozen on purpose must stay frozen
    count_macs(model, SHAPE, sparse=True)
    assert model.training and model[0].training
    assert not model[4].training
    assert all(not m._forward_hooks for m in model.modules())


def test_measure_latency_reports_medians_and_threads():
    model = conv_zoo().train()
    threads_before = torch.get_num_threads()
    lat = measure_latency(model, SHAPE, batch_sizes=(1, 4), warmup=1, repeats=3, threads=1)
    assert set(lat["batches"]) == {1, 4}
    for t in lat["batches"].values():
        assert 0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"]
    assert lat["threads"] == 1 and lat["device"] == "cpu"
    assert torch.get_num_threads() == threads_before
    assert model.training


def test_measure_latency_rejects_bad_batch_sizes():
    with pytest.raises(ConfigError, match=r"\(0,\)"):
        measure_latency(conv_zoo(), SHAPE, batch_sizes=(0,))


def test_measurement_is_json_and_round_trips():
    m = measure(conv_zoo(), SHAPE, batch_sizes=(1, 4), warmup=1, repeats=2)
    assert m.macs == m.sparse_macs == sum(ZOO_LAYER_MACS.values())
    assert m.params == m.nonzero_params + 16  # the BatchNorm bias starts at zero
    d = m.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Measurement.from_dict(d) == m
    text = m.summary()
    assert "MACs" in text and "batch 1" in text and "batch 4" in text and "threads" in text


def test_measure_without_latency():
    m = measure(conv_zoo(), SHAPE, latency=False)
    assert m.latency is None and m.input_shape == SHAPE
    assert "not measured" in m.summary()
    json.dumps(m.to_dict())
