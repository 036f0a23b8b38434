"""Channel-id tensors: the bookkeeping behind dependency analysis.

Every tensor in the traced forward gets a twin of the same shape holding integer channel
ids. Data-movement ops (cat, view, getitem, ...) are applied to the twin exactly as to
the real tensor, so which channel lands where is read off the result instead of being
modelled op by op. Producers make their twins as expanded views of one id per channel, so
a twin costs no per-element memory until an op materialises it.
"""

from __future__ import annotations

import math

import torch


def fresh(ids: torch.Tensor, shape: torch.Size, dim: int = 1) -> torch.Tensor:
    """An id tensor of ``shape`` whose positions along ``dim`` carry ``ids`` (one per position)."""
    if len(shape) == 0:
        return ids.reshape(())
    return broadcast_channels(ids, shape, dim)


def broadcast_channels(cids: torch.Tensor, shape: torch.Size, dim: int = 1) -> torch.Tensor:
    """``cids`` laid along ``dim`` of ``shape``: a view, no per-element storage."""
    dim = dim % len(shape)
    if cids.dim() == 1 and cids.shape[0] == shape[dim]:  # the usual case: one strided view
        stride = [0] * len(shape)
        stride[dim] = cids.stride(0)
        return cids.as_strided(shape, stride)
    view = [1] * len(shape)
    view[dim] = cids.numel()
    return cids.reshape(view).expand(shape)


def compact(ids: torch.Tensor, keep: int | None = None) -> torch.Tensor:
    """``ids`` narrowed to one position along every broadcast (stride-0) dim but ``keep``.

    It holds the same ids without the repeats an expansion makes, so checks and
    ``unique`` on it cost the number of distinct positions, not of elements.
    """
    for d in range(ids.dim()):
        if d != keep and ids.stride(d) == 0 and ids.shape[d] > 1:
            ids = ids.narrow(d, 0, 1)
    return ids


def along(ids: torch.Tensor, dim: int = 1) -> torch.Tensor | None:
    """The one id of each position along ``dim``, or None if a position mixes ids."""
    if ids.dim() == 0:
        return None
    dim = dim % ids.dim()
    shape, stride = ids.shape, ids.stride()
    if all(stride[d] == 0 or shape[d] == 1 for d in range(len(shape)) if d != dim):
        # A broadcast of one id per position (what producers make): the ids along ``dim``
        # are one strided view, read without the narrow/move/compare passes below.
        return ids.as_strided((shape[dim],), (stride[dim],))
    flat = compact(ids, keep=dim).movedim(dim, 0).reshape(ids.shape[dim], -1)
    first = flat[:, 0]
    if flat.shape[1] > 1 and not bool((flat == first[:, None]).all()):
        return None
    return first


def is_flatten_of_channels(in_shape: torch.Size, out_shape: torch.Size) -> bool:
    """``(N, C, *S) -> (N, C * prod(S))``: channel-major features, as ``flatten(1)`` gives."""
    return (
        len(out_shape) == 2
        and len(in_shape) >= 2
        and out_shape[0] == in_shape[0]
        and out_shape[1] == math.prod(in_shape[1:])
    )


def keeps_channel_dim(in_shape: torch.Size, out_shape: torch.Size) -> bool:
    """Batch and channel sizes unchanged: only trailing dims were reshaped."""
    return len(in_shape) >= 2 and len(out_shape) >= 2 and tuple(in_shape[:2]) == tuple(out_shape[:2])
