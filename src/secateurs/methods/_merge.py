"""Keeping a removed channel's contribution through the kept channel that carries its map.

fcs removes a channel ``c`` because a kept bin-mate ``k`` (its *partner*) has a
cosine-similar feature map. When ``F_c ~ s * F_k`` (``s`` the least-squares scale, from
the Gram matrix fcs has already accumulated), every layer that reads the channel can read
``c``'s share through ``k`` instead: ``W[:, k] += s * W[:, c]`` before ``c``'s column goes
with the cut. The output is unchanged when ``F_c = s * F_k`` exactly, and otherwise changes
by ``W[:, c] * (F_c - s * F_k)``, the part of ``c`` its partner does not carry; plain removal
changes it by all of ``W[:, c] * F_c``. This is neuron merging (Kim, Kim, Park & Jeon,
"Neuron Merging: Compensating for Pruned Neurons", NeurIPS 2020,
doi:10.48550/arXiv.2010.13160) restricted to the partner fcs already chose.

Only where every reader is a dense ``nn.Conv2d`` (groups = 1) or an ``nn.Linear``: a
depthwise or grouped conv keeps each input channel apart, so nothing can carry one
channel's input into another's, and those channels are removed as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..graph import ChannelGraph, Unit


@dataclass(frozen=True)
class MergeEdit:
    """``module.weight[:, target] += scale * module.weight[:, source]``."""

    module: str
    source: int
    target: int
    scale: float


def reader_columns(unit: Unit, modules: dict[str, nn.Module]) -> dict[str, list[int]] | None:
    """The unit's input columns in each layer that reads it (sorted: a channel flattened into
    a Linear is several columns), or None when a reader is not a dense conv or a Linear."""
    cols: dict[str, list[int]] = {}
    for m in unit.members:
        if m.kind != "in":
            continue
        layer = modules[m.module]
        if not (type(layer) is nn.Linear or (type(layer) is nn.Conv2d and layer.groups == 1)):
            return None
        cols.setdefault(m.module, []).append(m.index)
    return {k: sorted(v) for k, v in cols.items()}


def merge_edits(
    graph: ChannelGraph,
    removed: Sequence[Unit],
    scores: dict[int, torch.Tensor],
    partners: dict[int, torch.Tensor],
    modules: dict[str, nn.Module],
) -> tuple[list[MergeEdit], int, int]:
    """The edits that fold each removed unit into its partner, in each group's removal order
    (so a partner removed later passes on what it received), with the number of units merged
    and the number that had a partner but readers no edit can serve.

    ``partners[gi]``: ``[2, n]``, each unit's partner position (-1: none) and scale."""
    where = {id(u): (gi, pos) for gi in scores for pos, u in enumerate(graph.groups[gi].units)}
    by_group: dict[int, list[int]] = {}
    for u in removed:
        gi, pos = where[id(u)]
        by_group.setdefault(gi, []).append(pos)
    edits: list[MergeEdit] = []
    merged = unmergeable = 0
    for gi, positions in sorted(by_group.items()):
        units = graph.groups[gi].units
        for pos in sorted(positions, key=lambda p: float(scores[gi][p])):  # the removal order
            k, s = int(partners[gi][0, pos]), float(partners[gi][1, pos])
            if k < 0:
                continue
            mine, theirs = reader_columns(units[pos], modules), reader_columns(units[k], modules)
            if (
                mine is None
                or theirs is None
                or {m: len(c) for m, c in mine.items()} != {m: len(c) for m, c in theirs.items()}
            ):
                unmergeable += 1
                continue
            edits += [MergeEdit(m, i, j, s) for m, cols in mine.items() for i, j in zip(cols, theirs[m], strict=True)]
            merged += 1
    return edits, merged, unmergeable


@contextmanager
def merged_into_partners(model: nn.Module, edits: Sequence[MergeEdit]) -> Iterator[None]:
    """Apply ``edits`` to ``model``'s weights; put the weights back if the body raises (the
    cut was refused), so a refused round leaves the model as it was."""
    modules = dict(model.named_modules())
    saved = {name: modules[name].weight.detach().clone() for name in {e.module for e in edits}}
    with torch.no_grad():
        for e in edits:
            w = modules[e.module].weight
            w[:, e.target] += e.scale * w[:, e.source]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for name, w in saved.items():
                modules[name].weight.copy_(w)
        raise
