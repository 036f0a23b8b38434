"""The shapes meta runs work out by arithmetic (``graph/_shapes.py``) must be the ones the
layers and ops give when they run: shape, strides and dtype, case by case; and every case
they do not cover exactly must be left to the kernels (None)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn

SH = importlib.import_module("secateurs.graph._shapes")


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _same(fast: torch.Tensor | None, real: torch.Tensor) -> None:
    assert fast is not None
    assert (fast.shape, fast.stride(), fast.dtype, fast.device.type) == (real.shape, real.stride(), real.dtype, "meta")


@pytest.mark.parametrize("op", sorted(SH.SAME_SHAPE_OPS, key=repr))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 24, 8, 8), (2, 3), (5,), ()])
def test_same_shape_ops_match_the_kernel(op, dtype, shape) -> None:
    a, b = torch.zeros(shape, dtype=dtype), torch.ones(shape, dtype=dtype)
    _same(SH.same_shape((_meta(a), _meta(b))), op(a, b))


def test_same_shape_leaves_everything_else_to_the_kernel() -> None:
    m = lambda *s, **k: torch.empty(*s, device="meta", **k)  # noqa: E731
    x = m(1, 4, 2, 2)
    assert SH.same_shape((x, m(1, 4, 1, 1))) is None  # broadcast
    assert SH.same_shape((x, m(1, 4, 2, 2, dtype=torch.float64))) is None  # promotion
    assert SH.same_shape((m(3, dtype=torch.int64), m(3, dtype=torch.int64))) is None  # integers
    assert SH.same_shape((x, x.transpose(2, 3))) is None  # strides
    assert SH.same_shape((x, 2.0)) is None and SH.same_shape((x,)) is None
    assert SH.same_shape((torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))) is None  # not meta


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.AdaptiveAvgPool2d(1), (1, 16, 8, 8)),
        (nn.AdaptiveAvgPool2d((2, None)), (2, 16, 8, 6)),
        (nn.AdaptiveAvgPool2d((3, 5)), (16, 8, 7)),
        (nn.AdaptiveAvgPool1d(4), (2, 3, 9)),
        (nn.AdaptiveAvgPool3d((1, 2, 2)), (1, 2, 4, 4, 4)),
        (nn.Conv2d(4, 8, 3, stride=2, padding=1), (1, 4, 9, 9)),
        (nn.Conv2d(4, 8, 3, padding="same", dilation=2, groups=4), (2, 4, 7, 5)),
        (nn.Conv1d(3, 6, 5, padding="valid"), (2, 3, 11)),
        (nn.Linear(7, 3), (2, 5, 7)),
        (nn.MaxPool2d(2), (1, 8, 16, 16)),
        (nn.MaxPool2d(3, stride=2, padding=1), (2, 4, 9, 8)),
        (nn.MaxPool2d(3, stride=2, ceil_mode=True), (1, 4, 8, 7)),
        (nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=True), (1, 2, 5, 5)),
        (nn.MaxPool2d((3, 2), stride=(2, 1), dilation=(1, 2)), (4, 9, 9)),
        (nn.MaxPool1d(4, stride=3, ceil_mode=True), (2, 3, 10)),
        (nn.MaxPool3d(2, padding=1), (1, 2, 4, 5, 6)),
    ],
)
def test_layer_shapes_match_the_kernel(module: nn.Module, shape) -> None:
    x = torch.zeros(shape)
    with torch.no_grad():
        _same(SH.fast_shape(module, _meta(x)), module(x))


def test_max_pooling_leaves_odd_cases_to_the_kernel() -> None:
    x = torch.empty(1, 4, 8, 8, device="meta")
    assert SH.fast_shape(nn.MaxPool2d(2, return_indices=True), x) is None  # two outputs
    assert SH.fast_shape(nn.MaxPool2d(2, padding=2), x) is None  # padding over half the kernel: the kernel raises
    assert SH.fast_shape(nn.MaxPool2d(9), x) is None  # empty output: the kernel raises
    assert SH.fast_shape(nn.MaxPool2d(2), x.transpose(1, 3)) is None
    assert SH.fast_shape(nn.MaxPool2d(2), torch.empty(1, 0, 8, 8, device="meta")) is None


def test_adaptive_pooling_leaves_odd_inputs_to_the_kernel() -> None:
    pool = nn.AdaptiveAvgPool2d(1)
    assert SH.fast_shape(pool, torch.empty(1, 4, 8, 8, device="meta").transpose(2, 3)) is None
    assert SH.fast_shape(pool, torch.empty(1, 4, 0, 8, device="meta")) is None
    assert SH.fast_shape(pool, torch.empty(8, 8, device="meta")) is None
    assert SH.fast_shape(pool, torch.empty(1, 4, 8, 8, dtype=torch.int64, device="meta")) is None
