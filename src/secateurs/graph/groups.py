"""Channel groups: what :func:`trace` finds, and how a request maps onto it."""

from __future__ import annotations

import contextlib
import gc
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from ._state import GroupedConv, Member

if TYPE_CHECKING:
    from ._calls import LayerCalls

PRODUCER_KINDS = ("out", "bn")


class Unit:
    """One removable channel: every place it lives. Removing it removes all of them.

    A trace makes one per channel (tens of thousands for a MobileNet), so the members are
    read off the trace's arrays on first use, not built up front (see :class:`_Layout`).
    """

    __slots__ = ("_members", "_lazy", "reason")

    def __init__(self, members: tuple[Member, ...] | None, reason: str | None = None, lazy: Any = None) -> None:
        self._members = members
        self._lazy = lazy  # (layout, unit number) when members is None
        self.reason = reason  # why it cannot be removed; None when it can

    @property
    def members(self) -> tuple[Member, ...]:
        members = self._members
        if members is None:
            layout, u = self._lazy
            members = self._members = layout.members(u)
        return members

    @property
    def prunable(self) -> bool:
        return self.reason is None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Unit):
            return NotImplemented
        return self.reason == other.reason and self.members == other.members

    def __hash__(self) -> int:
        return hash((self.members, self.reason))

    def __repr__(self) -> str:
        return f"Unit(members={self.members!r}, reason={self.reason!r})"


class _Layout:
    """Every unit's members as flat arrays, units numbered group by group: unit ``u`` holds
    ``(roles[slot[k]], index[k])`` for ``k`` in ``starts[u]:starts[u + 1]``."""

    __slots__ = ("roles", "slot", "index", "starts", "_units")

    def __init__(self, roles: list[tuple[str, str]], slot: torch.Tensor, index: torch.Tensor, starts: torch.Tensor):
        self.roles, self.slot, self.index, self.starts = roles, slot, index, starts
        self._units: list[tuple[Member, ...]] | None = None

    def members(self, u: int) -> tuple[Member, ...]:
        if self._units is None:
            # All at once, collector paused: made one unit at a time, the tens of thousands of
            # members would set off full collections that cost 100x the members themselves.
            with gc_paused():
                modules = [m for m, _ in self.roles]
                kinds = [k for _, k in self.roles]
                slot = self.slot.tolist()
                flat = list(
                    map(Member, map(modules.__getitem__, slot), map(kinds.__getitem__, slot), self.index.tolist())
                )
                starts = self.starts.tolist()
                self._units = [tuple(flat[a:b]) for a, b in zip(starts, starts[1:])]
        return self._units[u]

    def removals(self, numbers: list[int]) -> dict[str, dict[str, list[int]]]:
        """What removing units ``numbers`` (in this order) removes, by module and role: the
        order of first appearance, as walking their members would give, indices sorted."""
        u = torch.tensor(numbers, dtype=torch.long)
        a, b = self.starts.index_select(0, u), self.starts.index_select(0, u + 1)
        n = b - a
        pos = torch.repeat_interleave(a - (torch.cumsum(n, 0) - n), n) + torch.arange(int(n.sum()))
        slot, index = self.slot.index_select(0, pos), self.index.index_select(0, pos)
        n_slots = len(self.roles)
        # Within a unit members go by slot, so (unit's place in the request, slot) orders them.
        seen = torch.repeat_interleave(torch.arange(len(numbers)), n) * n_slots + slot
        first = torch.full((n_slots,), seen.numel() * n_slots, dtype=torch.long).scatter_reduce_(
            0, slot, seen, reduce="amin"
        )
        width = int(index.max()) + 1 if index.numel() else 1
        pairs = _sorted_distinct(slot * width + index, n_slots * width)  # by slot, then index
        p_slot, counts = torch.unique_consecutive(pairs // width, return_counts=True)
        p_index = (pairs % width).tolist()
        by_slot: dict[int, list[int]] = {}
        at = 0
        for sl, n in zip(p_slot.tolist(), counts.tolist()):
            by_slot[sl] = p_index[at : at + n]
            at += n
        plan: dict[str, dict[str, list[int]]] = {}
        for sl in sorted(by_slot, key=first.tolist().__getitem__):
            module, kind = self.roles[sl]
            plan.setdefault(module, {})[kind] = by_slot[sl]
        return plan


def _sorted_distinct(values: torch.Tensor, bound: int) -> torch.Tensor:
    """``torch.unique(values)`` for integers in ``[0, bound)``: a mask read back in order,
    when the bound is small enough, costs a fifth of sorting tens of thousands of values."""
    if bound > 1 << 24:
        return torch.unique(values)
    return torch.zeros(bound, dtype=torch.bool).index_fill_(0, values, True).nonzero().flatten()


_LAZY, _FIRST, _SECOND = operator.attrgetter("_lazy"), operator.itemgetter(0), operator.itemgetter(1)


def removals(units: Sequence[Unit]) -> dict[str, dict[str, list[int]]]:
    """``{module: {kind: sorted indices}}`` that removing ``units`` removes, modules and kinds in
    the order walking the units' members meets them."""
    lazy = list(map(_LAZY, units))  # map and getters, not a loop: thousands of units
    if None not in lazy:
        layouts = set(map(_FIRST, lazy))
        if len(layouts) == 1:  # all read off one trace's arrays
            return layouts.pop().removals(list(map(_SECOND, lazy)))
    plan: dict[str, dict[str, set[int]]] = {}
    for u in units:
        for mem in u.members:
            plan.setdefault(mem.module, {}).setdefault(mem.kind, set()).add(mem.index)
    return {name: {k: sorted(v) for k, v in kinds.items()} for name, kinds in plan.items()}


class ChannelGroup:
    """Channels with the same coupling pattern, e.g. the 16 channels of a ResNet stage's
    residual stream: channel ``i`` of the group is ``units[i]``. Any subset of the units of
    a prunable group can be removed on its own, as long as it leaves every layer at least
    one channel and every grouped conv it touches equal groups."""

    def __init__(
        self,
        name: str,
        units: list[Unit] | None,
        layers: tuple[tuple[str, str], ...],
        lazy: tuple[_Layout, int, list[str | None]] | None = None,
    ) -> None:
        self.name = name
        self.layers = layers  # (module, kind) pairs every unit touches
        self._units = units
        self._lazy = lazy  # (layout, first unit number, reason of each unit) when units is None

    @property
    def units(self) -> list[Unit]:
        units = self._units
        if units is None:
            layout, first, reasons = self._lazy
            with gc_paused():  # thousands of objects at once: see _Layout.members
                units = self._units = [Unit(None, r, (layout, first + i)) for i, r in enumerate(reasons)]
        return units

    @property
    def size(self) -> int:
        return len(self._lazy[2]) if self._units is None else len(self._units)

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def one_per_role(self) -> bool:
        """Whether every unit has exactly one member in each role of ``layers`` (every unit
        touches each of them, so equal totals mean one each): removing ``n`` units then
        removes ``n`` channels from every role. Read off the trace's arrays, members unbuilt."""
        if self._lazy is not None:  # built from the layout (the units may be built by now, members not)
            layout, first, reasons = self._lazy
            total = int(layout.starts[first + len(reasons)] - layout.starts[first])
        else:
            total = sum(len(u.members) for u in self._units)
        return total == self.size * len(self.layers)

    @property
    def reason(self) -> str | None:
        reasons = self._lazy[2] if self._units is None else (u.reason for u in self._units)
        return next((r for r in reasons if r), None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelGroup):
            return NotImplemented
        return (self.name, self.layers, self.units) == (other.name, other.layers, other.units)

    __hash__ = None  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"not prunable: {self.reason}"
        return f"ChannelGroup({self.name!r}, size={self.size}, {len(self.layers)} layer roles, {state})"


@dataclass
class ChannelGraph:
    """The traced model and its channel groups."""

    #: The fx graph (owned by the traced model) or a GraphModule; see :attr:`gm`.
    traced: torch.fx.GraphModule | torch.fx.Graph
    groups: list[ChannelGroup]
    grouped_convs: dict[str, GroupedConv] = field(default_factory=dict)
    # (module, kind) -> the unit root of each channel index; per root, its group and position.
    _roots: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _group_of: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long), repr=False)
    _pos_of: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long), repr=False)
    #: The counted layers' calls in the trace's meta run: the traced model's MACs and cost
    #: model without a forward (see ``_calls``); None for a graph not made by ``trace``.
    calls: LayerCalls | None = field(default=None, repr=False)

    @property
    def fx_graph(self) -> torch.fx.Graph:
        """The traced graph; node targets are the model's module names."""
        return self.traced if isinstance(self.traced, torch.fx.Graph) else self.traced.graph

    @property
    def gm(self) -> torch.fx.GraphModule:
        """The traced model as a GraphModule (holding the model's own submodules), made on
        first use: most callers need only :attr:`fx_graph`, and making it costs as much as
        the rest of the channel analysis of a small network."""
        if isinstance(self.traced, torch.fx.Graph):
            from .trace import graph_module  # trace imports this module

            self.traced = graph_module(self.traced)
        return self.traced

    def locate(self, module: str, kind: str, index: int) -> tuple[ChannelGroup, int] | None:
        """The group and position of channel ``index`` of ``module`` in role ``kind``."""
        roots = self._roots.get((module, kind))
        if roots is None or not 0 <= index < len(roots):
            return None
        r = int(roots[index])
        return self.groups[int(self._group_of[r])], int(self._pos_of[r])

    def roles(self) -> list[tuple[str, str]]:
        """Every ``(module, kind)`` the trace recorded, in model order: the order in which
        each unit lists its members."""
        return list(self._roots)

    def positions(self, module: str, kind: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per channel of ``module`` in role ``kind``: its group number and its position in
        the group (one tensor each), so per-channel values gather onto units in one pass;
        None when the trace recorded no such role."""
        roots = self._roots.get((module, kind))
        if roots is None:
            return None
        return self._group_of.index_select(0, roots), self._pos_of.index_select(0, roots)

    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def summary(self) -> str:
        lines = [f"{len(self.groups)} channel groups, {len(self.prunable_groups)} prunable"]
        lines += [f"  {g!r}" for g in self.groups]
        return "\n".join(lines)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Building tens of thousands of small members would set off several full collections,
    each scanning every live object (torch's included): 4x the cost of the build itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
