"""The budget solver's running totals: MACs and params while units are removed step by step."""

from __future__ import annotations

from collections import Counter, defaultdict

from ._cost import CostModel, _Layer


class _Tracker:
    """Running totals while units are removed one step at a time."""

    def __init__(self, cost: CostModel, floors: dict[tuple[str, str], int]) -> None:
        self.cost, self.floors = cost, floors
        self.removed: Counter = Counter()
        self.total = {"macs": cost.macs, "params": cost.params}
        # Each layer's (MACs, params) at its current removals, so a step costs one
        # evaluation per layer it touches instead of two.
        self.current: dict[str, tuple[float, float]] = {}
        self._prepared: dict[int, tuple[Counter, list]] = {}

    def fits(self, counts: Counter) -> bool:
        for role, n in counts.items():
            if role in self.floors and self.cost.widths[role] - self.removed[role] - n < self.floors[role]:
                return False
        return True

    def apply(self, counts: Counter, sign: int = 1) -> None:
        removed, current, total = self.removed, self.current, self.total
        for name, layer, in_role, out_role, changes in self._by_layer(counts):
            before = current.get(name)
            if before is None:
                before = layer.cost(removed[in_role], removed[out_role])
            for role, n in changes:
                removed[role] += sign * n
            after = current[name] = layer.cost(removed[in_role], removed[out_role])
            total["macs"] += after[0] - before[0]
            total["params"] += after[1] - before[1]

    def _by_layer(self, counts: Counter) -> list[tuple[str, _Layer, tuple, tuple, list]]:
        """``counts`` by layer of the cost model, in order of first appearance: the layer,
        the roles its cost reads, and its changes. Steps share their counts (a group's
        single-unit steps all hold one), so this is worked out once per counts object."""
        hit = self._prepared.get(id(counts))
        if hit is not None and hit[0] is counts:
            return hit[1]
        by_module: dict[str, list[tuple[tuple[str, str], int]]] = defaultdict(list)
        for role, n in counts.items():
            by_module[role[0]].append((role, n))
        out = []
        for name, changes in by_module.items():
            layer = self.cost.layers.get(name)
            if layer is not None:
                out.append((name, layer, (name, "in"), (name, "bn" if layer.kind == "bn" else "out"), changes))
        self._prepared[id(counts)] = (counts, out)
        return out
