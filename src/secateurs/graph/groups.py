"""Channel groups: what :func:`trace` finds, and how a request maps onto it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import repeat

import torch
import torch.fx
import torch.nn as nn

from ._state import GroupedConv, Member, State
from ._unionfind import components

PRODUCER_KINDS = ("out", "bn")


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
    residual stream: channel ``i`` of the group is ``units[i]``. Any subset of the units of
    a prunable group can be removed on its own, as long as it leaves every layer at least
    one channel and every grouped conv it touches equal groups."""

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
    # (module, kind) -> the unit root of each channel index; root -> (group, position).
    _roots: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _at: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def locate(self, module: str, kind: str, index: int) -> tuple[ChannelGroup, int] | None:
        """The group and position of channel ``index`` of ``module`` in role ``kind``."""
        roots = self._roots.get((module, kind))
        if roots is None or not 0 <= index < len(roots):
            return None
        gi, ui = self._at[int(roots[index])]
        return self.groups[gi], ui

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def summary(self) -> str:
        lines = [f"{len(self.groups)} channel groups, {len(self.prunable_groups)} prunable"]
        lines += [f"  {g!r}" for g in self.groups]
        return "\n".join(lines)


def build_graph(gm: torch.fx.GraphModule, state: State, model: nn.Module) -> ChannelGraph:
    """Resolve the recorded ties into units, and units with one pattern into groups."""
    root = components(state.count, state.ties)
    why = _first_stop(root, state)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    slots = sorted(state.slots.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1]))
    members: dict[int, list[Member]] = defaultdict(list)
    roots: dict[tuple[str, str], torch.Tensor] = {}
    for (module, kind), ids in slots:  # in model order, so every unit's members come out sorted
        roots[(module, kind)] = r = root.index_select(0, ids)
        for rr, m in zip(r.tolist(), map(Member, repeat(module), repeat(kind), range(len(ids)))):
            members[rr].append(m)
    by_key: dict[tuple, list[tuple[int, Unit]]] = defaultdict(list)
    for rr, mems in members.items():
        k = int(why[rr])
        reason = state.stops[k][1] if k < len(state.stops) else None
        if reason is None and not any(m.kind in PRODUCER_KINDS for m in mems):
            reason = "no layer produces these channels"
        straddles = _straddles(mems, state.grouped) if state.grouped else None
        key = tuple(dict.fromkeys(m[:2] for m in mems))
        # Straddling units form a group of their own, so that the rest stays prunable.
        by_key[key + (("straddles", ""),) if straddles else key].append((rr, Unit(tuple(mems), reason or straddles)))
    groups: list[ChannelGroup] = []
    at: dict[int, tuple[int, int]] = {}
    for key, entries in sorted(by_key.items(), key=lambda kv: _first_position(kv[1][0][1], order)):
        entries.sort(key=lambda e: e[1].members[0].index)
        units = [u for _, u in entries]
        key = tuple(k for k in key if k[0] != "straddles")
        units = _unbalanced(units, key, state.grouped) or _all_or_nothing(units, state) or units
        producer = next((m.module for m in units[0].members if m.kind in PRODUCER_KINDS), units[0].members[0].module)
        at.update((rr, (len(groups), ui)) for ui, (rr, _) in enumerate(entries))
        groups.append(ChannelGroup(producer, units, key))
    return ChannelGraph(gm, groups, dict(state.grouped), roots, at)


def _first_stop(root: torch.Tensor, state: State) -> torch.Tensor:
    """Per root, the index of the first stop recorded on its unit (``len(stops)``: none)."""
    first = torch.full_like(root, len(state.stops))
    if state.stops:
        where = torch.cat([root.index_select(0, ids.reshape(-1)) for ids, _ in state.stops])
        which = torch.cat([torch.full((ids.numel(),), k) for k, (ids, _) in enumerate(state.stops)])
        first.scatter_reduce_(0, where, which, reduce="amin")
    return first


def _straddles(members: list[Member], grouped: dict[str, GroupedConv]) -> str | None:
    """Why a unit cannot be removed: it holds unequal numbers of channels in two or more
    groups of a grouped conv (e.g. a ShuffleNetV1 shuffle position whose ``g`` channels
    straddle the boundary of two conv groups), so removing it on its own, or with units
    that each sit in one group, can never leave the conv's groups equal. None when it can."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for m in members:
        gc = grouped.get(m.module)
        if gc is not None and m.kind in ("in", "out"):
            counts[(m.module, m.kind)][gc.group_of(m.kind, m.index)] += 1
    for (module, kind), per_group in counts.items():
        gc = grouped[module]
        if len(per_group) > 1 and not (len(per_group) == gc.groups and len(set(per_group.values())) == 1):
            side = "input" if kind == "in" else "output"
            return (
                f"these channels fall in {len(per_group)} of the {gc.groups} groups of grouped conv {module!r} "
                f"({dict(sorted(per_group.items()))} {side} channels by conv group), so no removal keeps its "
                "groups equal"
            )
    return None


def _unbalanced(units: list[Unit], key: tuple, grouped: dict[str, GroupedConv]) -> list[Unit] | None:
    """The units marked not prunable if no removal from them alone keeps a grouped conv's groups equal.

    A removal must take equally many channels from every group of a grouped conv. When
    this channel group has channels in only some of those groups (in ShuffleNetV1 a stream
    is the pooled input followed by the branch output, and the pooled part may sit inside
    one conv group), no removal from it alone can do that. When it has channels in every
    group, even unevenly, removals of equal counts per conv group are exact; the surgery
    checks each request for that.
    """
    if not all(u.prunable for u in units):
        return None
    for module, kind in key:
        gc = grouped.get(module)
        if gc is None or kind not in ("in", "out"):
            continue
        counts = [0] * gc.groups
        for u in units:
            for m in u.members:
                if m.module == module and m.kind == kind:
                    counts[gc.group_of(kind, m.index)] += 1
        if min(counts) == 0:
            side = "input" if kind == "in" else "output"
            width = gc.in_channels if kind == "in" else gc.out_channels
            reason = (
                f"grouped conv {module!r} ({gc.groups} groups of {width // gc.groups} {side} channels) holds "
                f"{counts} of these channels per group: no removal from them alone keeps its groups equal"
            )
            return [Unit(u.members, reason) for u in units]
    return None


def _all_or_nothing(units: list[Unit], state: State) -> list[Unit] | None:
    """The one unit of a group marked not prunable if it holds every channel of a producer:
    its only removal would empty that layer (ShuffleNetV2 streams whose shuffles and chunks
    tie all their channels together end so)."""
    if len(units) != 1 or not units[0].prunable:
        return None
    held = Counter(m[:2] for m in units[0].members if m.kind in PRODUCER_KINDS)
    full = next((role for role, n in held.items() if n == state.slots[role].numel()), None)
    if full is None:
        return None
    reason = (
        f"shuffles, equal chunks or adds tie all {held[full]} channels of {full[0]!r} into one unit: removing "
        "it would empty the layer"
    )
    return [Unit(units[0].members, reason)]


def _first_position(unit: Unit, order: dict[str, int]) -> tuple[int, int]:
    m = unit.members[0]
    return order.get(m.module, 1 << 30), m.index
