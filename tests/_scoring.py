"""The solver tests' starting point: a model traced, scored by l1 unit by unit and costed, the
three inputs of :func:`secateurs.select.solve`."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

import secateurs
from secateurs.methods import ScoreContext, get_method
from secateurs.select import CostModel, unit_scores


def l1_scored(model: nn.Module, x: torch.Tensor):
    """``model``'s trace on ``x``, its l1 unit scores and its cost model."""
    graph = secateurs.trace(model, x)
    method = get_method("l1")
    scores = unit_scores(graph, method.score(ScoreContext(model, graph, method.make_options())))
    return graph, scores, CostModel.of(model, x)


@functools.cache
def scored_zoo_model(name: str, in_channels: int):
    """Zoo model ``name`` (seed 0, 10 classes, evaluation mode) on ``in_channels`` x 32 x 32, with
    :func:`l1_scored`'s trace, scores and cost model. Cached across tests: never modify it."""
    torch.manual_seed(0)
    model = secateurs.create_model(name, num_classes=10, in_channels=in_channels).eval()
    return (model, *l1_scored(model, torch.zeros(1, in_channels, 32, 32)))
