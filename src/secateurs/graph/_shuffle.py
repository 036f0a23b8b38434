"""Channel permutations that stay exact when channels are removed: shuffles and equal chunks.

A channel shuffle, ``x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)``,
moves channel ``a * (c // g) + r`` to ``r * g + a``. Replayed on the id tensors, the
permutation itself is read off exactly; what needs care is that ``c // g`` is recomputed
after a removal. It stays the same map on the kept channels when every block ``a`` loses
the same positions ``r``: so the split ties position ``r`` of every block into one unit
(one unit per shuffle position), and removals come in multiples of ``g``.

The rule holds for any split of the channel dim into two dims one of whose sizes is
written in the code (``g``) and the other read from the tensor (``c // g`` or ``-1``);
the split output is *marked* and may then only be transposed (its two split dims),
passed through element-wise ops, or merged back into one channel dim. Anything else that
meets a marked tensor reads mixed ids and stops them, as any unknown layout does.

``x.chunk(k, dim=1)`` into equal parts is the same idea: part ``i`` holds positions
``i * (c // k) + r``; tying position ``r`` of every part keeps the parts equal and in step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from . import _ids
from ._state import State


def _shape_args(node: torch.fx.Node) -> tuple | None:
    """The target shape of a view/reshape as written: ints (literals) and fx Nodes (read from tensors)."""
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = node.args[1:]
    elif node.target is torch.reshape:
        shape = node.args[1:2]
    else:
        return None
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(shape)


def _is_literal(size: Any) -> bool:
    return isinstance(size, int) and size != -1


def split(state: State, node: torch.fx.Node, x: torch.Tensor, ids: torch.Tensor) -> bool:
    """``(N, C, *S) -> (N, A, B, *S)`` with exactly one of ``A``, ``B`` written in the code:
    tie the ids along that dim, mark the node and say True; False when it is no such split."""
    xs, os = tuple(x.shape), tuple(ids.shape)
    if len(xs) < 2 or len(os) != len(xs) + 1 or os[0] != xs[0] or os[3:] != xs[2:] or os[1] * os[2] != xs[1]:
        return False
    shape = _shape_args(node)
    if shape is None or len(shape) != len(os) or _ids.along(x, 1) is None:
        return False
    literal = [_is_literal(s) for s in shape[1:3]]
    if literal.count(True) != 1:
        return False
    dim = 1 if literal[0] else 2
    flat = _ids.compact(ids)
    for k in range(1, os[dim]):
        state.tie(flat.select(dim, 0), flat.select(dim, k))
    state.split_nodes.add(node.name)
    return True


def is_marked(state: State, arg: Any) -> bool:
    return isinstance(arg, torch.fx.Node) and arg.name in state.split_nodes


def swap(state: State, node: torch.fx.Node, x: torch.Tensor, ids: torch.Tensor) -> bool:
    """A transpose/permute of a marked tensor that swaps its two split dims and nothing else."""
    if not is_marked(state, node.args[0]):
        return False
    n = x.dim()
    if node.target in ("transpose", torch.transpose):
        dims = node.args[1:3] if len(node.args) >= 3 else ()
        ok = len(dims) == 2 and all(isinstance(d, int) for d in dims) and {d % n for d in dims} == {1, 2}
    else:
        perm = node.args[1:]
        perm = tuple(perm[0]) if len(perm) == 1 and isinstance(perm[0], (tuple, list)) else tuple(perm)
        ok = all(isinstance(d, int) for d in perm) and [d % n for d in perm] == [0, 2, 1, *range(3, n)]
    if ok:
        state.split_nodes.add(node.name)
    return ok


def merge(state: State, node: torch.fx.Node, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """``(N, A, B, *S) -> (N, A * B, *S)`` of a marked tensor: the permuted channel ids, or
    None when the result does not have one id per channel (or is no such merge)."""
    if not is_marked(state, node.args[0]):
        return None
    xs, os = tuple(x.shape), tuple(out.shape)
    if len(xs) < 3 or len(os) != len(xs) - 1 or os[0] != xs[0] or os[2:] != xs[3:] or os[1] != xs[1] * xs[2]:
        return None
    small = _ids.compact(x)  # stride-0 (broadcast) dims to size 1: the reshape costs the channels only
    cids = _ids.along(small.reshape(small.shape[0], xs[1] * xs[2], *small.shape[3:]), 1)
    return None if cids is None else _ids.broadcast_channels(cids, out.shape)


def equal_chunks(state: State, node: torch.fx.Node, x: torch.Tensor, parts: int) -> bool:
    """``x.chunk(parts, dim=1)`` into equal parts of clean channels: tie position ``r`` of
    every part (True), or False when the parts would be unequal or the channels are mixed."""
    cids = _ids.along(x, 1) if x.dim() >= 2 else None
    if cids is None or parts < 2 or cids.numel() % parts:
        return False
    blocks = cids.reshape(parts, -1)
    for k in range(1, parts):
        state.tie(blocks[0], blocks[k])
    return True
