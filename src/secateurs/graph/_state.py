"""What dependency analysis accumulates: ids, their memberships, unions and stops."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from ._unionfind import UnionFind


@dataclass(frozen=True, order=True)
class Member:
    """One place a channel lives: ``kind`` is ``out`` (a producer's output channel / row),
    ``in`` (a consumer's input channel / column, a feature for Linear), ``bn`` (per-channel
    normalisation parameters) or ``dw`` (a depthwise conv, where input and output go together)."""

    module: str
    kind: str
    index: int


@dataclass
class GroupedConv:
    """A conv with 1 < groups < in_channels: removals must leave every group equal."""

    module: str
    groups: int
    in_channels: int
    out_channels: int


@dataclass
class State:
    uf: UnionFind = field(default_factory=UnionFind)
    members: dict[int, list[Member]] = field(default_factory=lambda: defaultdict(list))
    stops: dict[int, str] = field(default_factory=dict)
    grouped: dict[str, GroupedConv] = field(default_factory=dict)

    def new(self, n: int) -> range:
        return self.uf.add(n)

    def stop(self, ids: torch.Tensor | None, reason: str) -> None:
        """Mark every id in ``ids`` not prunable (the first reason recorded wins)."""
        if ids is None:
            return
        for i in torch.unique(ids).tolist():
            self.stops.setdefault(int(i), reason)

    def stop_tree(self, tree: Any, reason: str) -> None:
        """:meth:`stop` every id tensor inside a nested structure."""
        import torch.fx

        torch.fx.node.map_aggregate(tree, lambda t: self.stop(t, reason) if isinstance(t, torch.Tensor) else None)

    def add_members(self, cids: torch.Tensor, module: str, kind: str) -> None:
        for j, i in enumerate(cids.tolist()):
            self.members[int(i)].append(Member(module, kind, j))

    def union_tensors(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Tie the ids met at the same position of two broadcast-compatible id tensors."""
        from ._ids import along

        if a.dim() >= 2 and b.dim() == a.dim() and a.shape[1] == b.shape[1]:
            ca, cb = along(a, 1), along(b, 1)
            if ca is not None and cb is not None:  # the usual case: one id per channel
                for x, y in zip(ca.tolist(), cb.tolist()):
                    if x != y:
                        self.uf.union(x, y)
                return
        a, b = torch.broadcast_tensors(a, b)
        pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)]), dim=1)
        for x, y in pairs.t().tolist():
            if x != y:
                self.uf.union(x, y)

