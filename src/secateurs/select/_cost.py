"""The cost model behind budget solving: MACs and params as functions of the channels removed
per layer role, so a candidate removal costs a few additions to evaluate, not a forward pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..graph._calls import LayerCalls
from ..graph.layers import LayerCost as _Layer


@dataclass
class CostModel:
    """MACs and params of a model as functions of the channels removed per layer role."""

    layers: dict[str, _Layer]
    macs: float  # of the model as measured
    params: float
    widths: dict[tuple[str, str], int] = field(default_factory=dict)  # producer roles' widths

    @classmethod
    def of(cls, model: nn.Module, example_inputs: torch.Tensor, calls: LayerCalls | None = None) -> CostModel:
        """The cost model of ``model`` as it is. ``calls``: its layer calls from a trace or a
        surgery's shape check (``ChannelGraph.calls``, ``graph.cut``), which give the same
        figures without running a forward; when missing or unusable, one forward of the
        first sample is run with hooks."""
        from ..measure import count_params
        from ..measure.macs import layer_figures

        if calls is not None and calls.usable:
            layers, per_layer = calls.figures(model)
            macs = sum(per_layer.values())
        else:
            layers, macs = layer_figures(model, example_inputs)  # one forward for both
        widths = {}
        for name, layer in layers.items():
            widths[(name, "bn" if layer.kind == "bn" else "out")] = layer.out_ch
        return cls(layers, float(macs), float(count_params(model)), widths)
