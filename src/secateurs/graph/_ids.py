"""Channel-id tensors: the bookkeeping behind dependency analysis.

Every tensor in the traced forward gets a twin of the same shape holding integer channel
ids. Data-movement ops (cat, view, getitem, ...) are applied to the twin exactly as to
the real tensor, so which channel lands where is read off the result instead of being
modelled op by op.
"""
from __future__ import annotations

import math

import torch


def fresh(ids: range, shape: torch.Size, dim: int = 1) -> torch.Tensor:
    """An id tensor of ``shape`` whose positions along ``dim`` carry ``ids``."""
    if len(shape) == 0:
        return torch.tensor(ids[0] if len(ids) else -1)
    dim = dim % len(shape)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return torch.as_tensor(list(ids), dtype=torch.long).view(view).expand(shape)


def along(ids: torch.Tensor, dim: int = 1) -> torch.Tensor | None:
    """The one id of each position along ``dim``, or None if a position mixes ids."""
    if ids.dim() == 0:
        return None
    dim = dim % ids.dim()
    if all(ids.stride(d) == 0 or ids.shape[d] == 1 for d in range(ids.dim()) if d != dim):
        # An expanded per-channel vector (how producers make them): uniform by construction.
        return ids[tuple(slice(None) if d == dim else 0 for d in range(ids.dim()))]
    flat = ids.movedim(dim, 0).reshape(ids.shape[dim], -1)
    first = flat[:, 0]
    if flat.shape[1] > 1 and not bool((flat == first[:, None]).all()):
        return None
    return first


def broadcast_channels(cids: torch.Tensor, shape: torch.Size, dim: int = 1) -> torch.Tensor:
    view = [1] * len(shape)
    view[dim % len(shape)] = cids.numel()
    return cids.reshape(view).expand(shape)  # a view: no per-element storage


def is_flatten_of_channels(in_shape: torch.Size, out_shape: torch.Size) -> bool:
    """``(N, C, *S) -> (N, C * prod(S))``: channel-major features, as ``flatten(1)`` gives."""
    return (len(out_shape) == 2 and len(in_shape) >= 2 and out_shape[0] == in_shape[0]
            and out_shape[1] == math.prod(in_shape[1:]))


def keeps_channel_dim(in_shape: torch.Size, out_shape: torch.Size) -> bool:
    """Batch and channel sizes unchanged: only trailing dims were reshaped."""
    return len(in_shape) >= 2 and len(out_shape) >= 2 and tuple(in_shape[:2]) == tuple(out_shape[:2])
