"""What dependency analysis accumulates: ids, where they live, ties and stops.

Everything is recorded as id tensors (one entry per op, not per channel) and resolved
once at the end by :func:`build_graph <secateurs.graph.groups.build_graph>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.fx

from . import _ids


class Member(NamedTuple):
    """One place a channel lives: ``kind`` is ``out`` (a producer's output channel / row),
    ``in`` (a consumer's input channel / column, a feature for Linear) or ``bn``
    (per-channel normalisation parameters). A depthwise conv has its ``in`` and ``out``
    channels in the same unit. A NamedTuple: traces make tens of thousands of them."""

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

    def group_of(self, kind: str, index: int) -> int:
        """Which of the ``groups`` the ``in`` or ``out`` channel ``index`` belongs to."""
        width = self.in_channels if kind == "in" else self.out_channels
        return index // (width // self.groups)


@dataclass
class State:
    count: int = 0
    ties: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    stops: list[tuple[torch.Tensor, str]] = field(default_factory=list)
    #: ``(module, kind) -> ids``: id of each channel of that layer role, by index.
    slots: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    grouped: dict[str, GroupedConv] = field(default_factory=dict)
    #: Nodes whose output is a channel dim split in two by an exact shuffle (see ``_shuffle``).
    split_nodes: set[str] = field(default_factory=set)

    def new(self, n: int) -> torch.Tensor:
        ids = torch.arange(self.count, self.count + n)
        self.count += n
        return ids

    def tie(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """``a[k]`` and ``b[k]`` must be removed together (same number of elements)."""
        self.ties.append((_flat(a), _flat(b)))

    def stop(self, ids: torch.Tensor | None, reason: str) -> None:
        """Mark every id in ``ids`` not prunable (the first reason recorded wins)."""
        if ids is not None:
            self.stops.append((torch.unique(_ids.compact(ids)), reason))

    def stop_tree(self, tree: Any, reason: str) -> None:
        """:meth:`stop` every id tensor inside a nested structure."""
        torch.fx.node.map_aggregate(tree, lambda t: self.stop(t, reason) if isinstance(t, torch.Tensor) else None)

    def add_members(self, cids: torch.Tensor, module: str, kind: str) -> None:
        """Channel ``j`` of ``module`` in role ``kind`` carries id ``cids[j]``.

        A module called twice (shared weights) has one set of channels: the second call's
        ids are tied to the first's.
        """
        key = (module, kind)
        if key in self.slots:
            self.tie(self.slots[key], cids)
        else:
            self.slots[key] = _flat(cids)


def _flat(ids: torch.Tensor) -> torch.Tensor:
    """``ids.reshape(-1)``, skipped for what is flat already (most channel-id vectors)."""
    return ids if ids.dim() == 1 else ids.reshape(-1)
