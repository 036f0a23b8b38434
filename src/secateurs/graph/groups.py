"""Channel groups: what :func:`trace` finds, and how a request maps onto it."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch.fx
import torch.nn as nn

from ._state import GroupedConv, Member, State

PRODUCER_KINDS = ("out", "dw", "bn")


@dataclass(frozen=True)
class Unit:
    """One removable channel: every place it lives. Removing it removes all of them."""

    members: tuple[Member, ...]
    reason: str | None = None  # why it cannot be removed; None when it can

    @property
    def prunable(self) -> bool:
        return self.reason is None


@dataclass
class ChannelGroup:
    """Channels with the same coupling pattern, e.g. the 16 channels of a ResNet stage's
    residual stream: channel ``i`` of the group is ``units[i]``."""

    name: str
    units: list[Unit]
    layers: tuple[tuple[str, str], ...]  # (module, kind) pairs every unit touches

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return all(u.prunable for u in self.units)

    @property
    def reason(self) -> str | None:
        return next((u.reason for u in self.units if u.reason), None)

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"not prunable: {self.reason}"
        return f"ChannelGroup({self.name!r}, size={self.size}, {len(self.layers)} layer roles, {state})"


@dataclass
class ChannelGraph:
    """The traced model and its channel groups."""

    gm: torch.fx.GraphModule
    groups: list[ChannelGroup]
    grouped_convs: dict[str, GroupedConv] = field(default_factory=dict)
    _index: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict, repr=False)

    def locate(self, module: str, kind: str, index: int) -> tuple[ChannelGroup, int] | None:
        """The group and position of channel ``index`` of ``module`` in role ``kind``."""
        hit = self._index.get((module, kind, index))
        return None if hit is None else (self.groups[hit[0]], hit[1])

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def summary(self) -> str:
        lines = [f"{len(self.groups)} channel groups, {len(self.prunable_groups)} prunable"]
        lines += [f"  {g!r}" for g in self.groups]
        return "\n".join(lines)


def build_graph(gm: torch.fx.GraphModule, state: State, model: nn.Module) -> ChannelGraph:
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    components: dict[int, list[int]] = defaultdict(list)
    for i in range(len(state.uf.parent)):
        components[state.uf.find(i)].append(i)
    units_by_key: dict[tuple, list[Unit]] = defaultdict(list)
    for ids in components.values():
        members = tuple(sorted((m for i in ids for m in state.members.get(i, ())),
                               key=lambda m: (order.get(m.module, 1 << 30), m.kind, m.index)))
        if not members:
            continue
        reason = next((state.stops[i] for i in ids if i in state.stops), None)
        if reason is None and not any(m.kind in PRODUCER_KINDS for m in members):
            reason = "no layer produces these channels"
        key = tuple(dict.fromkeys((m.module, m.kind) for m in members))
        units_by_key[key].append(Unit(members, reason))
    groups: list[ChannelGroup] = []
    for key, units in sorted(units_by_key.items(), key=lambda kv: _first_position(kv[1][0], order)):
        units.sort(key=lambda u: u.members[0].index)
        producer = next((m.module for m in units[0].members if m.kind in PRODUCER_KINDS), units[0].members[0].module)
        groups.append(ChannelGroup(producer, units, key))
    graph = ChannelGraph(gm, groups, dict(state.grouped))
    for gi, g in enumerate(groups):
        for ui, u in enumerate(g.units):
            for m in u.members:
                graph._index[(m.module, m.kind, m.index)] = (gi, ui)
    return graph


def _first_position(unit: Unit, order: dict[str, int]) -> tuple[int, int]:
    m = unit.members[0]
    return order.get(m.module, 1 << 30), m.index
