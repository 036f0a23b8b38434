"""What hnsi's target is on (kernel-sparse MACs), the targets it refuses, and the note of a
materialised model that ends off the target its masks met."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..measure import count_macs


def sparse_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """The kernel-sparse MACs, what hnsi's target and achieved reduction are on."""
    return count_macs(model, shape, sparse=True)


def kernel_sparse_target(metric: str, scope: str) -> None:
    """hnsi aims at kernel-sparse MACs in its own scopes (groups, then layers)."""
    if metric != "macs" or scope != "global":
        raise ConfigError(
            "method 'hnsi' prunes kernels, and its target is on kernel-sparse MACs: give "
            "macs_reduction instead of params_reduction, and no scope (it has its own: groups, then "
            f"layers), got {metric} reduction and scope {scope!r}"
        )


def materialisation_note(achieved: float, target: float, masked: float) -> str:
    """Why the materialised model ends more than a point off the target the masks met."""
    return (
        f"achieved {100 * achieved:.2f}% kernel-sparse MACs reduction against a target of "
        f"{100 * target:.1f}% (the masked model: {100 * masked:.2f}%): finalizing "
        "removed the filters no kernel read any more and folded those left constant, with the "
        "kernels that produced or read them"
    )
