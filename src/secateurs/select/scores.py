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
    out: dict[int, torch.Tensor] = {}
    for gi, group in enumerate(graph.groups):
        if not group.prunable or not any(role in scores for role in group.layers):
            continue
        out[gi] = _group_scores(group, scores)
    return out


def _group_scores(group: ChannelGroup, scores: LayerScores) -> torch.Tensor:
    values = torch.zeros(group.size, dtype=torch.float64)
    for ui, unit in enumerate(group.units):
        hits = [float(scores[(m.module, m.kind)][m.index]) for m in unit.members if (m.module, m.kind) in scores]
        values[ui] = sum(hits) / len(hits) if hits else float("inf")
    return values
