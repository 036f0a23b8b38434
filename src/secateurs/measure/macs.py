"""Multiply-accumulate counts of convolutions and linear layers, dense or kernel-sparse.

Counting happens in forward hooks, so it sees the real output sizes whatever the
architecture does between layers (strides, pooling, reshapes, layers called twice).
Layers that are not in :data:`MACS_COUNTERS` (BatchNorm, activations, pooling, additions)
count zero: they are cheap next to the convolutions and depend on the runtime's fusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from ..errors import SecateursError
from ._common import eval_mode, forward_errors_as_config, model_device_dtype, sample_shape

#: ``fn(module, inputs, output, sparse) -> MACs`` of one call of a layer.
MacsFn = Callable[[nn.Module, tuple, torch.Tensor, bool], int]


def nonzero_kernels(weight: torch.Tensor) -> torch.Tensor:
    """One boolean per kernel ``weight[j, i]`` (shape ``weight.shape[:2]``): True where any of its elements is non-zero."""
    return weight.detach().flatten(2).ne(0).any(-1)


def _nonzero_kernels(module: nn.Module) -> int:
    """Kernels ``weight[j, i]`` that do any work: the ``kernel_mask`` if set, else non-zero ones.

    A pruning method that masks kernels in its forward leaves the weights themselves
    non-zero, so its boolean ``kernel_mask`` (shape ``weight.shape[:2]``) is the truth.
    """
    weight = module.weight
    mask = getattr(module, "kernel_mask", None)
    if mask is None:
        return int(nonzero_kernels(weight).sum())
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(weight.shape[:2]):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise SecateursError(
            f"kernel_mask has shape {got} but the weight {tuple(weight.shape)} needs "
            f"{tuple(weight.shape[:2])}; set it to one boolean per kernel or delete it"
        )
    return int(mask.ne(0).sum())


def kernels_per_layer(model: nn.Module) -> dict[str, int]:
    """Kernels that do any work in each conv, by module name (see :func:`_nonzero_kernels`):
    what a kernel-pruning run records per layer, before and after, for its report."""
    return {
        name: _nonzero_kernels(m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    }


def _conv(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    kernel = math.prod(module.kernel_size)
    if not sparse:
        return output.numel() * (module.in_channels // module.groups) * kernel
    out_spatial = output.numel() // module.out_channels
    return out_spatial * _nonzero_kernels(module) * kernel


def _conv_transpose(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    # Every input element is scattered through (C_out / groups) kernels; weight is [C_in, C_out/g, *k].
    kernel = math.prod(module.kernel_size)
    x = inputs[0]
    if not sparse:
        return x.numel() * (module.out_channels // module.groups) * kernel
    in_spatial = x.numel() // module.in_channels
    return in_spatial * _nonzero_kernels(module) * kernel


def _linear(module: nn.Module, inputs: tuple, output: torch.Tensor, sparse: bool) -> int:
    rows = output.numel() // module.out_features  # all leading dims; the batch is 1 here
    if not sparse:
        return rows * module.out_features * module.in_features
    return rows * int(module.weight.detach().ne(0).sum())


#: Layer type -> MACs-counting function; subclasses are found through their MRO, so a
#: masked ``Conv2d`` subclass is counted like a ``Conv2d``. Add a layer type here.
MACS_COUNTERS: dict[type[nn.Module], MacsFn] = {
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.ConvTranspose1d: _conv_transpose,
    nn.ConvTranspose2d: _conv_transpose,
    nn.ConvTranspose3d: _conv_transpose,
    nn.Linear: _linear,
}


def counter_for(module: nn.Module) -> MacsFn | None:
    """The counting function registered for ``module``'s type or its nearest base class."""
    for cls in type(module).__mro__:
        if cls in MACS_COUNTERS:
            return MACS_COUNTERS[cls]
    return None


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
    layers: dict[str, int] = {}

    def make_hook(name: str, fn: MacsFn) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            try:
                macs = fn(module, inputs, output, sparse)
            except SecateursError as e:
                raise type(e)(f"layer {name!r} ({type(module).__name__}): {e}") from e
            layers[name] = layers.get(name, 0) + macs

        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            fn = counter_for(module)
            if fn is not None:
                handles.append(module.register_forward_hook(make_hook(name, fn)))
        with eval_mode(model), torch.inference_mode():
            with forward_errors_as_config(shape):
                model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    total = sum(layers.values())
    return (total, layers) if per_layer else total
