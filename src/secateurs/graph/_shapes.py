"""Output shapes worked out by arithmetic for the layers and ops every network repeats,
so that meta runs (the trace, the surgery's shape check) skip their meta kernels: those
are Python decompositions costing 0.1 to 3 ms a call. Each function returns None whenever
its case does not fit exactly; the meta kernel then runs and raises what it raises."""

from __future__ import annotations

import operator

import torch
import torch.nn as nn

from .layers.kinds import CONVS

#: Element-wise ops whose output, for two contiguous meta tensors of one shape and one
#: floating dtype, is a contiguous tensor of that shape and dtype: skips a ~0.4 ms Python
#: decomposition per distinct shape (every residual add of a network).
SAME_SHAPE_OPS = frozenset({operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul})


def same_shape(args: tuple) -> torch.Tensor | None:
    if len(args) != 2:
        return None
    a, b = args
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.is_meta and b.is_meta):
        return None
    if a.shape != b.shape or a.dtype != b.dtype or not a.dtype.is_floating_point:
        return None
    if not (a.is_contiguous() and b.is_contiguous()) or type(a) is not torch.Tensor or type(b) is not torch.Tensor:
        return None
    return torch.empty(a.shape, dtype=a.dtype, device="meta")


def fast_shape(module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The output of a plain conv, linear or pooling layer on ``x``, from the layer's
    arithmetic, or None when anything does not fit (then the meta kernels run and raise
    what they raise)."""
    kind = type(module)
    if not x.is_meta:
        return None
    if kind in CONVS:
        return _conv_shape(module, x)
    if kind in _ADAPTIVE_AVG:
        return _adaptive_shape(module, x, _ADAPTIVE_AVG[kind])
    if kind in _MAX_POOLS:
        return _max_pool_shape(module, x, _MAX_POOLS[kind])
    if kind is nn.Linear:
        w, b = module.weight, module.bias
        if x.dim() < 1 or w.dim() != 2 or x.shape[-1] != w.shape[1] or x.dtype != w.dtype:
            return None
        if b is not None and (tuple(b.shape) != (w.shape[0],) or b.dtype != w.dtype):
            return None
        return torch.empty((*x.shape[:-1], w.shape[0]), dtype=x.dtype, device="meta")
    return None


def _conv_shape(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    w, b, n = m.weight, m.bias, m.weight.dim() - 2
    if x.dim() != n + 2 or x.dtype != w.dtype or w.shape[0] % m.groups or x.shape[1] != w.shape[1] * m.groups:
        return None
    if b is not None and (tuple(b.shape) != (w.shape[0],) or b.dtype != w.dtype):
        return None
    size = []
    for d in range(n):
        length, k = x.shape[2 + d], w.shape[2 + d]
        if m.padding == "same":
            out = length
        else:
            pad = 0 if m.padding == "valid" else m.padding[d]
            out = (length + 2 * pad - m.dilation[d] * (k - 1) - 1) // m.stride[d] + 1
        if out < 1:
            return None
        size.append(out)
    return torch.empty((x.shape[0], w.shape[0], *size), dtype=x.dtype, device="meta")


_ADAPTIVE_AVG = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}


def _adaptive_shape(m: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor | None:
    """Adaptive average pooling of a contiguous input: its leading dims, then the output
    size (None keeps the input's). The meta kernel is a ~3 ms decomposition."""
    if x.dim() not in (n + 1, n + 2) or not x.is_contiguous() or 0 in x.shape[1:] or not x.dtype.is_floating_point:
        return None
    size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * n
    if len(size) != n:
        return None
    spatial = x.shape[-n:]
    out = [spatial[d] if s is None else s for d, s in enumerate(size)]
    if any(not isinstance(s, int) or s < 1 for s in out):
        return None
    return torch.empty((*x.shape[:-n], *out), dtype=x.dtype, device="meta")


_MAX_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}


def _max_pool_shape(m: nn.Module, x: torch.Tensor, n: int) -> torch.Tensor | None:
    """Max pooling of a contiguous input, by ATen's ``pooling_output_shape`` (ceil mode
    included: the last window must start inside the input or its left padding)."""
    if m.return_indices or x.dim() not in (n + 1, n + 2) or not x.is_contiguous() or not x.dtype.is_floating_point:
        return None
    if 0 in x.shape[-n - 1 :]:  # empty channels or positions: the kernel raises
        return None
    each = [_per_dim(v, n) for v in (m.kernel_size, m.stride if m.stride else m.kernel_size, m.padding, m.dilation)]
    if any(v is None for v in each):
        return None
    out = []
    for length, k, s, p, d in zip(x.shape[-n:], *each):
        if k < 1 or s < 1 or d < 1 or p < 0 or p > k // 2 or length < 1:
            return None
        size = (length + 2 * p - d * (k - 1) - 1 + (s - 1 if m.ceil_mode else 0)) // s + 1
        if m.ceil_mode and (size - 1) * s >= length + p:
            size -= 1
        if size < 1:
            return None
        out.append(size)
    return torch.empty((*x.shape[:-n], *out), dtype=x.dtype, device="meta")


def _per_dim(v: object, n: int) -> tuple[int, ...] | None:
    """An int or a tuple of ``n`` ints as ``n`` ints; None for anything else."""
    v = (v,) * n if isinstance(v, int) else v
    return tuple(v) if isinstance(v, (tuple, list)) and len(v) == n and all(isinstance(i, int) for i in v) else None
