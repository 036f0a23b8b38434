"""What a training step minimises: the objective type, the default cross-entropy, the companions' names."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError

#: (model, inputs, targets, **companions) -> (loss, logits of the model). Fine-tuning methods
#: swap in their own; one that trains other networks with the model (mutual learning's peer)
#: receives them, DDP-wrapped when distributed, as keyword arguments.
Objective = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def cross_entropy(label_smoothing: float = 0.0) -> Objective:
    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return objective


def with_bn_l1(objective: Objective, strength: float) -> Objective:
    """``objective`` plus ``strength * sum |gamma|`` over the model's BatchNorm scales
    (network slimming's sparsity term; Liu et al., "Learning Efficient Convolutional Networks
    through Network Slimming", ICCV 2017, doi:10.1109/ICCV.2017.298). Added to the loss
    rather than to the gradients, so AMP's loss scaling and DDP's gradient averaging treat
    it like the rest of the loss; its gradient is ``strength * sign(gamma)``. Only the model
    is penalised, not a mutual-learning peer."""
    if strength == 0:
        return objective

    def penalised(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **companions: nn.Module):
        loss, logits = objective(model, x, y, **companions)
        scales = [m.weight for m in model.modules() if isinstance(m, _BatchNorm) and m.affine]
        if not scales:
            return loss, logits
        return loss + strength * torch.stack([w.abs().sum() for w in scales]).sum(), logits

    return penalised


def checked_companions(companions: dict[str, nn.Module] | None) -> dict[str, nn.Module]:
    """``companions`` as a new dict, refused when a name would shadow the objective's own arguments."""
    companions = dict(companions or {})
    clash = sorted(set(companions) & {"net", "x", "y"})
    if clash:
        raise ConfigError(
            f"companion name(s) {clash} would collide with the objective's own arguments "
            "(net, x, y); name them otherwise"
        )
    return companions
