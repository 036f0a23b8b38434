"""Multiply-accumulate counts of convolutions and linear layers, dense or kernel-sparse.

Counting happens in forward hooks, so it sees the real output sizes whatever the
architecture does between layers (strides, pooling, reshapes, layers called twice).
Each layer type's count is its ``LayerType.macs`` (``secateurs.graph.layers``); layers
without one (BatchNorm, activations, pooling, additions) count zero: they are cheap next
to the convolutions and depend on the runtime's fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from ..graph._calls import LayerCalls
from ..graph.layers import LayerCost, has_kernels, layer_type, nonzero_kernels, working_kernels
from ._common import eval_mode, forward_errors_as_config, model_device_dtype, sample_shape

__all__ = ["count_macs", "counter_for", "kernels_per_layer", "layer_costs", "layer_figures", "nonzero_kernels"]

#: ``fn(module, inputs, output, sparse) -> MACs`` of one call of a layer.
MacsFn = Callable[[nn.Module, tuple, torch.Tensor, bool], int]


def kernels_per_layer(model: nn.Module) -> dict[str, int]:
    """Kernels that do any work in each conv, by module name (see :func:`working_kernels`):
    what a kernel-pruning run records per layer, before and after, for its report."""
    return {name: working_kernels(m) for name, m in model.named_modules() if has_kernels(m)}


def counter_for(module: nn.Module) -> MacsFn | None:
    """The counting function of ``module``'s layer type (``LayerType.macs``), or None."""
    layer = layer_type(module)
    return None if layer is None else layer.macs


def layer_costs(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, LayerCost]:
    """Each layer's :class:`LayerCost` (``LayerType.cost``) by module name, from one forward
    of the first sample in eval mode: the budget solver's cost model. Layers the forward
    does not reach have no entry."""
    return layer_figures(model, example_inputs)[0]


def layer_figures(model: nn.Module, example_inputs: torch.Tensor) -> tuple[dict[str, LayerCost], int]:
    """:func:`layer_costs` and the dense :func:`count_macs` of the first sample, from the same
    forward: the cost model needs both, and the forward is most of their cost."""
    x = example_inputs[:1]
    with forward_errors_as_config(tuple(x.shape[1:])):
        costs, macs = recorded_forward(model, x).figures(model)
    return costs, sum(macs.values())


def recorded_forward(model: nn.Module, x: torch.Tensor) -> LayerCalls:
    """One forward of ``x`` in eval mode (modes restored) with every layer that has a MACs
    count or a cost (``LayerType.macs``/``.cost``) recorded by a hook: the same record a
    trace makes from shapes alone (``ChannelGraph.calls``), here of whatever the forward runs."""
    calls = LayerCalls()
    hooks = []
    for name, m in model.named_modules():
        layer = layer_type(m)
        if layer is not None and (layer.cost is not None or layer.macs is not None):
            hooks.append(m.register_forward_hook(lambda m, args, out, name=name: calls.add(name, args, out)))
    try:
        with eval_mode(model), torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    calls.batch = int(x.shape[0])
    return calls


def count_macs(
    model: nn.Module,
    input_shape: Sequence[int],
    sparse: bool = False,
    per_layer: bool = False,
) -> int | tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward of one sample.

    Args:
        model: the network; it is run once in eval mode and its modes are restored.
        input_shape: one sample, e.g. ``(3, 32, 32)``; a leading batch dim of 1 is accepted.
        sparse: count only kernels that are non-zero (or set in a ``kernel_mask``), the
            work left once kernel-level pruning is exploited; linear layers count non-zero weights.
        per_layer: also return the MACs of each layer by module name, in call order.

    Returns:
        The total, or ``(total, {name: macs})`` when ``per_layer``.

    Raises:
        ConfigError: ``input_shape`` is malformed or does not fit the model.
    """
    shape = sample_shape(model, input_shape)
    device, dtype = model_device_dtype(model)
    with forward_errors_as_config(shape):
        layers = recorded_forward(model, torch.zeros((1, *shape), device=device, dtype=dtype)).figures(model, sparse)[1]
    total = sum(layers.values())
    return (total, layers) if per_layer else total
