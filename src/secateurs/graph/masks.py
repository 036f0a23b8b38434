"""Kernel masks (for hnsi, see docs/methods.md): hold pruned kernels at exactly zero during training.

A mask is one boolean per kernel ``weight[j, i]`` of a conv, shape ``weight.shape[:2]``
(out, in/groups), True where the kernel is kept. It lives on the conv as the
non-persistent buffer ``kernel_mask``: it follows ``.to(device)``, stays out of
checkpoints (the zeros in the weights are the lasting record) and is what
``count_macs(sparse=True)`` counts. :func:`~secateurs.graph.materialize.materialize`
turns the sparsity into physical shrinkage.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import PruningError
from .layers import has_kernels

MASK = "kernel_mask"
_HOOKS = "_kernel_mask_hooks"  # on the conv: (forward pre-hook handle, (weight ref, gradient hook handle))


def _spread(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` [out, in] viewed as [out, in, 1, ...] to broadcast over ``like``'s kernel dims."""
    return mask.view(*mask.shape, *[1] * (like.dim() - 2))


def _zero(t: torch.Tensor, mask: torch.Tensor) -> None:
    t.masked_fill_(~_spread(mask.to(t.device), t), 0)


def _grad_hook(conv: nn.Module):
    # Reads the buffer at call time, so the mask follows the conv across devices. masked_fill,
    # not a multiply: 0 * inf is nan. With the gradient exactly zero, SGD's weight decay (of a
    # zero weight), momentum and nesterov terms stay zero too, so the weight never moves.
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(~_spread(getattr(conv, MASK), grad), 0)

    return hook


def _hold(conv: nn.Module, args: Any = None) -> None:
    """Forward pre-hook: make sure the conv's current weight has the gradient hook.

    A plain function, so that ``copy.deepcopy`` of a masked model keeps it, and the copy's
    new weight (tensor hooks are not copied) gets its hook at its first forward.
    """
    w = conv.weight
    if not isinstance(w, nn.Parameter) or not w.requires_grad:
        return  # a traced or frozen weight: no gradient to mask
    pre, grad = conv.__dict__[_HOOKS]
    if grad is not None and grad[0]() is w:
        return
    if grad is not None:
        grad[1].remove()
    conv.__dict__[_HOOKS] = (pre, (weakref.ref(w), w.register_hook(_grad_hook(conv))))


def _take_off(conv: nn.Module) -> None:
    pre, grad = conv.__dict__.pop(_HOOKS, (None, None))
    for handle in (pre, grad and grad[1]):
        if handle is not None:
            handle.remove()
    conv._buffers.pop(MASK, None)


def _check(
    model: nn.Module, masks: Mapping[str, torch.Tensor], fresh: bool
) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every mask against its layer, before anything is changed."""
    modules = dict(model.named_modules())
    checked = {}
    for name, mask in masks.items():
        conv = modules.get(name)
        if conv is None:
            convs = [n for n, m in modules.items() if has_kernels(m)]
            close = difflib.get_close_matches(name, convs, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else f"; its convs are {convs}"
            raise PruningError(f"the model has no module {name!r}{hint}")
        if not has_kernels(conv):
            raise PruningError(f"{name!r} is a {type(conv).__name__}; kernel masks go on Conv1d/2d/3d layers")
        want = tuple(conv.weight.shape[:2])
        if want[1] == 1:
            what = "a depthwise conv" if conv.groups > 1 else "a conv with one input channel"
            raise PruningError(
                f"{name!r} ({tuple(conv.weight.shape)}) is {what}: each filter has a single kernel, "
                "so masking kernels would be filter pruning; leave it to channel pruning"
            )
        got = (
            f"a {mask.dtype} tensor of shape {tuple(mask.shape)}"
            if isinstance(mask, torch.Tensor)
            else f"a {type(mask).__name__}"
        )
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != want:
            raise PruningError(
                f"the mask for {name!r} is {got}, but its weight {tuple(conv.weight.shape)} needs a "
                f"bool tensor of shape {want} (out, in/groups)"
            )
        if fresh and MASK in conv._buffers:
            raise PruningError(
                f"{name!r} already holds a kernel_mask; call remove() on the KernelMasks that set it "
                "before applying new masks"
            )
        checked[name] = (conv, mask.detach().to(conv.weight.device).clone())
    return checked


class KernelMasks:
    """Masks held on a model's convs (buffer + gradient hook each); :meth:`remove` takes them off."""

    def __init__(self, convs: dict[str, nn.Module]) -> None:
        self.convs = convs

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(conv, MASK) for name, conv in self.convs.items()}

    def enforce(self, model: nn.Module | None = None) -> None:
        """Zero the masked weights again; fits ``train(..., after_step=masks.enforce)``.

        The gradient hooks already keep them at zero; this also covers optimizers that move
        weights without a gradient, or weights replaced behind the hooks' back.
        """
        with torch.no_grad():
            for conv in self.convs.values():
                _zero(conv.weight, getattr(conv, MASK))

    def remove(self) -> None:
        """Take hooks and buffers off; the weights keep their zeros."""
        for conv in self.convs.values():
            _take_off(conv)
        self.convs = {}


def apply_kernel_masks(
    model: nn.Module, masks: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None
) -> KernelMasks:
    """Zero the masked kernels and keep them exactly zero through training.

    Args:
        model: the network; changed in place.
        masks: ``{conv_name: bool tensor [out, in/groups]}``, True where a kernel is kept.
        optimizer: an optimizer already stepping ``model``: its state at the masked
            positions (momentum, Adam moments) is zeroed too, or it would move them again.

    Raises:
        PruningError: an unknown layer, a non-conv or depthwise conv, a wrong mask shape or
            dtype, a conv already masked; the model and optimizer are unchanged.
    """
    checked = _check(model, masks, fresh=True)
    with torch.no_grad():
        for conv, mask in checked.values():
            conv.register_buffer(MASK, mask, persistent=False)
            w = conv.weight
            _zero(w, mask)
            if w.grad is not None:
                _zero(w.grad, mask)
            conv.__dict__[_HOOKS] = (conv.register_forward_pre_hook(_hold), None)
            _hold(conv)
            state = optimizer.state.get(w, {}) if optimizer is not None else {}
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.shape == w.shape:
                    _zero(v, mask)
    return KernelMasks({name: conv for name, (conv, _) in checked.items()})
