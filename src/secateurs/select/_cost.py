"""The cost model behind budget solving: MACs and params as functions of the channels removed
per layer role, so a candidate removal costs a few additions to evaluate, not a forward pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..measure._common import eval_mode

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class _Layer:
    kind: str  # conv / linear / bn
    in_ch: int = 0
    out_ch: int = 0
    groups: int = 1
    depthwise: bool = False
    kernel: int = 1  # kernel elements per (in, out) pair
    positions: int = 0  # output positions per sample (per output feature for Linear)
    bias: bool = False

    def cost(self, r_in: int, r_out: int) -> tuple[float, float]:
        """(MACs, params) with ``r_in`` input and ``r_out`` output channels removed."""
        out = self.out_ch - r_out
        if self.kind == "bn":
            return 0.0, 2.0 * out
        if self.kind == "linear":
            w = out * (self.in_ch - r_in)
            return float(w * self.positions), float(w + (out if self.bias else 0))
        per_group_in = 1 if self.depthwise else (self.in_ch - r_in) / self.groups
        w = out * per_group_in * self.kernel
        return float(w * self.positions), float(w + (out if self.bias else 0))


@dataclass
class CostModel:
    """MACs and params of a model as functions of the channels removed per layer role."""

    layers: dict[str, _Layer]
    macs: float  # of the model as measured
    params: float
    widths: dict[tuple[str, str], int] = field(default_factory=dict)  # producer roles' widths

    @classmethod
    def of(cls, model: nn.Module, example_inputs: torch.Tensor) -> CostModel:
        from ..measure import count_macs, count_params

        layers: dict[str, _Layer] = {}
        hooks = []

        def hook(name: str):
            def fn(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                if isinstance(m, CONVS):
                    layers[name] = _Layer(
                        "conv",
                        m.in_channels,
                        m.out_channels,
                        m.groups,
                        m.groups == m.in_channels and m.groups > 1,
                        math.prod(m.kernel_size),
                        output[0, 0].numel(),
                        m.bias is not None,
                    )
                elif isinstance(m, nn.Linear):
                    layers[name] = _Layer(
                        "linear",
                        m.in_features,
                        m.out_features,
                        positions=output[0].numel() // m.out_features,
                        bias=m.bias is not None,
                    )
                elif m.affine:
                    layers[name] = _Layer("bn", out_ch=m.num_features)

            return fn

        for name, m in model.named_modules():
            if isinstance(m, (*CONVS, nn.Linear, *NORMS)):
                hooks.append(m.register_forward_hook(hook(name)))
        try:
            with eval_mode(model), torch.no_grad():
                model(example_inputs[:1])
        finally:
            for h in hooks:
                h.remove()
        shape = tuple(example_inputs.shape[1:])
        widths = {}
        for name, layer in layers.items():
            widths[(name, "bn" if layer.kind == "bn" else "out")] = layer.out_ch
        return cls(layers, float(count_macs(model, shape)), float(count_params(model)), widths)
