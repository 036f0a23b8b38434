"""Kernels that do any work in a layer with kernels (``LayerType.kernels``): what sparse MACs count."""

from __future__ import annotations

import torch
import torch.nn as nn

from ...errors import SecateursError


def nonzero_kernels(weight: torch.Tensor) -> torch.Tensor:
    """One boolean per kernel ``weight[j, i]`` (shape ``weight.shape[:2]``): True where any of its elements is non-zero."""
    return weight.detach().flatten(2).ne(0).any(-1)


def working_kernels(module: nn.Module) -> int:
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
