"""From layer scores to unit scores: what the budget solver ranks.

A unit (one removable channel) lives in several layers -- a ResNet stage's residual
channel is an output of every conv that adds into the stream. Its score is the mean of
its members' scores, each layer's scores first divided by their mean so that layers of
different scale rank together (as l1-capped does, Kumar et al., Appl. Intell. 2021). A
method that ranks raw scores across layers on purpose (bn-scale, random, probability)
registers with ``normalise=False``.
"""

from __future__ import annotations

import torch

from ..graph import ChannelGraph, ChannelGroup

#: ``(module name, kind)`` -> one score per channel of that role; ``kind`` is ``out``
#: (a Conv/Linear's filters) or ``bn`` (a BatchNorm's channels).
LayerScores = dict[tuple[str, str], torch.Tensor]
#: Index of a group in ``graph.groups`` -> one score per unit, for criteria defined on whole
#: units (``fcs`` compares a unit's feature maps with its group-mates').
UnitScores = dict[int, torch.Tensor]


def normalise(scores: LayerScores) -> LayerScores:
    tiny = torch.finfo(torch.float32).tiny
    return {k: v.float() / v.float().abs().mean().clamp_min(tiny) for k, v in scores.items()}


def unit_scores(graph: ChannelGraph, scores: LayerScores, normalise_layers: bool = True) -> dict[int, torch.Tensor]:
    """``{group index: one score per unit}`` for every prunable group some score reaches."""
    scores = normalise(scores) if normalise_layers else {k: v.float() for k, v in scores.items()}
    wanted = [
        gi for gi, group in enumerate(graph.groups) if group.prunable and any(role in scores for role in group.layers)
    ]
    gathered = _gathered(graph, scores, wanted)
    if gathered is not None:
        return gathered
    return {gi: _group_scores(graph.groups[gi], scores) for gi in wanted}


def _gathered(graph: ChannelGraph, scores: LayerScores, wanted: list[int]) -> dict[int, torch.Tensor] | None:
    """:func:`_group_scores` of the ``wanted`` groups, every group at once: each scored role's
    values are added onto their units (float64, in the order the trace lists roles, which is
    the order of every unit's members, so the sums are the same to the last bit). None when
    the graph does not know where some scored channel sits (then the plain loop does it)."""
    sizes = [g.size for g in graph.groups]
    start = torch.zeros(len(sizes) + 1, dtype=torch.long)
    start[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.long), 0)
    sums = torch.zeros(int(start[-1]), dtype=torch.float64)
    hits = torch.zeros(int(start[-1]), dtype=torch.long)
    roles = {role for gi in wanted for role in graph.groups[gi].layers if role in scores}
    for role in graph.roles():
        if role not in roles:
            continue
        where = graph.positions(*role)
        values = scores[role]
        if where is None or values.numel() != where[0].numel():
            return None
        unit = start.index_select(0, where[0]) + where[1]
        sums.index_add_(0, unit, values.to(torch.float64))
        hits.index_add_(0, unit, torch.ones_like(unit))
    if len(roles) != sum(1 for role in graph.roles() if role in roles):
        return None
    mean = torch.where(hits > 0, sums / hits.clamp_min(1), torch.full_like(sums, float("inf")))
    return {gi: mean[int(start[gi]) : int(start[gi + 1])].clone() for gi in wanted}


def _group_scores(group: ChannelGroup, scores: LayerScores) -> torch.Tensor:
    values = torch.zeros(group.size, dtype=torch.float64)
    for ui, unit in enumerate(group.units):
        hits = [float(scores[(m.module, m.kind)][m.index]) for m in unit.members if (m.module, m.kind) in scores]
        values[ui] = sum(hits) / len(hits) if hits else float("inf")
    return values
