"""Budget solving: which units to remove so that MACs (or params) fall by a target.

:class:`CostModel` predicts a model's MACs and params from how many channels each layer
role has lost, layer by layer, so a candidate removal costs a few additions to evaluate
instead of a forward pass. The solvers then walk units in score order:

* ``global``: one ranking over every group's (normalised) unit scores, lowest first;
* ``layer``: the same fraction of every group (rounded down to whole steps), found by
  bisection.

Both keep every producer layer at ``min_keep_fraction`` of its original width (and at
least one channel), and remove from a group that feeds a grouped conv one channel per
conv group at a time, which keeps the conv's groups equal. With ``round_to=N`` a group's
removals come in steps after each of which every layer it narrows has a width that is a
multiple of N (hardware runs such widths faster); a layer the plan leaves alone keeps its
width, whatever it is.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..graph import ChannelGraph, ChannelGroup, Unit
from ._cost import CostModel
from ._tracker import _Tracker

METRICS = ("macs", "params")
#: How far past the goal the global solver may land before it looks for a cheaper last step.
SLACK = 0.005
SCOPES = ("global", "layer")


@dataclass
class Plan:
    units: list[Unit]
    predicted: dict[str, float]  # macs / params after removal, as the cost model predicts
    reached: bool
    note: str | None = None


def _member_counts(units: Sequence[Unit]) -> Counter:
    return Counter((m.module, m.kind) for u in units for m in u.members)


#: One removal: its score, its units, and how many channels it takes from each layer role.
Step = tuple[float, list[Unit], Counter]


def _steps(group: ChannelGroup, scores: torch.Tensor, graph: ChannelGraph) -> list[Step]:
    """The group's removals in order: one unit at a time, or one per conv group when the
    group feeds a grouped conv (so its groups stay equal)."""
    grouped = [
        (module, kind, graph.grouped_convs[module])
        for module, kind in group.layers
        if module in graph.grouped_convs and kind in ("in", "out")
    ]
    if not grouped:  # one unit per step, in score order (a stable sort, as below)
        order = torch.sort(scores, stable=True).indices.tolist()
        units, values = group.units, scores.tolist()
        if group.one_per_role:  # every step takes one channel of each role: count once, share
            one = Counter(dict.fromkeys(group.layers, 1))
            return [(values[i], [units[i]], one) for i in order]
        return [(values[i], [units[i]], _member_counts([units[i]])) for i in order]
    parts: dict[tuple, list[int]] = defaultdict(list)
    for ui, unit in enumerate(group.units):
        key = tuple(
            sorted(
                {
                    (mod, gc.group_of(kind, m.index))
                    for mod, kind, gc in grouped
                    for m in unit.members
                    if m.module == mod and m.kind == kind
                }
            )
        )
        parts[key].append(ui)
    for idx in parts.values():
        idx.sort(key=lambda i: float(scores[i]))
    steps = []
    for k in range(min(len(v) for v in parts.values())):
        picked = [v[k] for v in parts.values()]
        units = [group.units[i] for i in picked]
        steps.append((sum(float(scores[i]) for i in picked) / len(picked), units, _member_counts(units)))
    return steps


def _rounded(steps: list[Step], widths: dict[tuple[str, str], int], round_to: int) -> list[Step]:
    """``steps`` merged so that each ends where every producer layer they narrow has a width
    that is a multiple of ``round_to``; the merged step scores the mean of its parts. Steps
    past the last such point are dropped (that group cannot reach a multiple)."""
    if round_to == 1:
        return steps
    merged: list[Step] = []
    pending: list[Step] = []
    removed: Counter = Counter()
    for step in steps:
        pending.append(step)
        removed.update(step[2])
        if all((widths[role] - n) % round_to == 0 for role, n in removed.items() if role in widths):
            units = [u for _, step_units, _ in pending for u in step_units]
            merged.append((sum(s for s, _, _ in pending) / len(pending), units, _member_counts(units)))
            pending = []
    return merged


def removal_steps(
    graph: ChannelGraph,
    group: ChannelGroup,
    scores: torch.Tensor,
    widths: dict[tuple[str, str], int],
    round_to: int = 1,
) -> list[Step]:
    """The group's removals in the order the solvers take them, lowest score first: one unit
    at a time (one per conv group for a group feeding a grouped conv), merged so that each ends
    at widths that are multiples of ``round_to``; ``widths``: the current producer widths."""
    return _rounded(_steps(group, scores, graph), widths, round_to)


def floors_for(widths: dict[tuple[str, str], int], min_keep_fraction: float) -> dict[tuple[str, str], int]:
    """Per producer role, the fewest channels it may keep."""
    return {role: max(1, math.ceil(min_keep_fraction * w)) for role, w in widths.items()}


def check_round_to(round_to: object) -> None:
    """A ConfigError unless ``round_to`` is a positive integer."""
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError(f"round_to must be a positive integer (1: any width; 8: multiples of 8), got {round_to!r}")


def solve(
    graph: ChannelGraph,
    unit_scores: dict[int, torch.Tensor],
    cost: CostModel,
    target: float,
    metric: str = "macs",
    scope: str = "global",
    floors: dict[tuple[str, str], int] | None = None,
    reference: float | None = None,
    max_score: float = math.inf,
    slack: float = SLACK,
    round_to: int = 1,
) -> Plan:
    """Pick units so that ``metric`` falls to ``(1 - target) * reference``.

    Args:
        unit_scores: ``{group index: score per unit}``; low scores go first.
        cost: the current model's :class:`CostModel`.
        target: the reduction wanted, relative to ``reference`` (default: the current model's value).
        floors: fewest channels per producer role (default: 1 each).
        max_score: removals scoring above it are never taken (a threshold on the scores).
        slack: in global scope, how far past the goal (a fraction of ``reference``) the last
            removal may land before a cheaper, later-ranked one is looked for.
        round_to: every layer the plan narrows ends with a width that is a multiple of it.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {SCOPES}, got {scope!r}")
    check_round_to(round_to)
    reference = reference if reference is not None else getattr(cost, metric)
    goal = (1.0 - target) * reference
    floors = floors if floors is not None else floors_for(cost.widths, 0.0)
    steps = {
        gi: _rounded([st for st in _steps(graph.groups[gi], s, graph) if st[0] <= max_score], cost.widths, round_to)
        for gi, s in unit_scores.items()
    }
    if scope == "global":
        chosen, tracker = _greedy(steps, cost, floors, metric, goal, slack=slack * reference)
    else:
        chosen, tracker = _per_layer(steps, cost, floors, metric, goal)
    reached = tracker.total[metric] <= goal + 1e-9
    note = None
    if not reached:
        got = 1 - tracker.total[metric] / reference
        note = f"reached a {metric} reduction of {100 * got:.1f}% instead of {100 * target:.1f}%: "
        if not any(steps.values()):
            stuck = [g.reason for g in graph.groups if not g.prunable]
            note += (
                f"no channel group can be pruned ({len(graph.groups)} groups, every one kept by the engine, e.g. "
                f"{stuck[0] if stuck else 'no scores'})"
            )
        else:
            note += (
                "every prunable channel group is at its floor (min_keep_fraction) or fully used; lower the "
                "target or the floor"
            )
    return Plan(chosen, dict(tracker.total), reached, note)


def _greedy(steps: dict[int, list], cost: CostModel, floors: dict, metric: str, goal: float, slack: float = 0.0):
    """Lowest scores first until ``goal``.

    The step that crosses the goal may overshoot it by a lot (a ResNet-56 residual channel
    is about 1% of its MACs). If it overshoots by more than ``slack``, it is set aside and
    the next steps in score order are tried, so that a cheaper one finishes the job; if
    none can, the set-aside step that overshoots least is taken. Only the removals from
    the crossing point on can thus differ from the strict score order.
    """
    tracker = _Tracker(cost, floors)
    heap = [(s[0][0], gi, 0) for gi, s in steps.items() if s]
    heapq.heapify(heap)
    chosen: list[Unit] = []
    aside: list[tuple[float, list[Unit], Counter]] = []
    while heap and tracker.total[metric] > goal:
        _, gi, k = heapq.heappop(heap)
        _, units, counts = steps[gi][k]
        if not tracker.fits(counts):
            continue  # this group is at a floor; later steps of it would remove more
        tracker.apply(counts)
        if tracker.total[metric] < goal - slack:  # crosses the goal by too much: try cheaper steps first
            aside.append((tracker.total[metric], units, counts))
            tracker.apply(counts, sign=-1)
            continue
        chosen += units
        if k + 1 < len(steps[gi]):
            heapq.heappush(heap, (steps[gi][k + 1][0], gi, k + 1))
    if tracker.total[metric] > goal and aside:
        _, units, counts = max(aside, key=lambda a: a[0])  # the one that overshoots least
        tracker.apply(counts)
        chosen += units
    return chosen, tracker


def _per_layer(steps: dict[int, list], cost: CostModel, floors: dict, metric: str, goal: float):
    """The smallest common fraction of every group that reaches ``goal``, by bisection. Whole
    steps make that fraction coarse (one more channel of every group at once), so the plan
    is the largest fraction that stays short of the goal, topped up one group at a time in
    score order -- each group ends within one step of the common fraction."""

    def take(ratio: float):
        tracker = _Tracker(cost, floors)
        chosen: list[Unit] = []
        taken: dict[int, int] = {}
        for gi, s in steps.items():
            n = math.floor(ratio * len(s))
            taken[gi] = 0
            for _, units, counts in s[:n]:
                if not tracker.fits(counts):
                    break
                tracker.apply(counts)
                chosen += units
                taken[gi] += 1
        return chosen, tracker, taken

    lo, hi = 0.0, 1.0
    best = take(hi)
    if best[1].total[metric] > goal:
        return best[:2]
    for _ in range(40):
        mid = (lo + hi) / 2
        if take(mid)[1].total[metric] <= goal:
            hi = mid
        else:
            lo = mid
    chosen, tracker, taken = take(lo)
    # Top up: each group's next step, lowest score first, until the goal is met.
    nxt = sorted((steps[gi][k][0], gi) for gi, k in taken.items() if k < len(steps[gi]))
    for _, gi in nxt:
        if tracker.total[metric] <= goal:
            break
        _, units, counts = steps[gi][taken[gi]]
        if tracker.fits(counts):
            tracker.apply(counts)
            chosen += units
    if tracker.total[metric] > goal:  # cannot happen unless floors bite: the bisection's answer
        return take(hi)[:2]
    return chosen, tracker
