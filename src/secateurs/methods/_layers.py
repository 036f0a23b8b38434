"""Which layers a criterion scores: the producers of prunable channel groups."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

from ..graph import ChannelGraph
from ..graph.layers import role_of
from ..graph.layers.kinds import BATCHNORMS as NORMS

__all__ = ["NORMS", "batchnorms", "filters", "producer_roles"]


def producer_roles(graph: ChannelGraph, kind: str) -> list[str]:
    """Module names holding channels of role ``kind`` in some prunable group, in model order."""
    seen: dict[str, None] = {}
    for g in graph.prunable_groups:
        for module, k in g.layers:
            if k == kind:
                seen[module] = None
    return list(seen)


def filters(model: nn.Module, graph: ChannelGraph) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, weight as [out, -1])`` of every producer (layer role ``out``: Conv, Linear)
    whose filters are prunable."""
    modules = dict(model.named_modules())
    for name in producer_roles(graph, "out"):
        m = modules[name]
        if role_of(m) == "out":
            yield name, m.weight.detach().reshape(m.weight.shape[0], -1).float()


def batchnorms(model: nn.Module, graph: ChannelGraph) -> Iterator[tuple[str, nn.Module]]:
    modules = dict(model.named_modules())
    for name in producer_roles(graph, "bn"):
        if role_of(modules[name]) == "bn":
            yield name, modules[name]
