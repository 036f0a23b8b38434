"""Physical surgery per layer type: one function per type, in one table.

Each function gets the module and the channel indices to remove per role (``out``, ``in``,
``bn``) and narrows the module in place through a :class:`Journal`, so that a failure
half-way can put every attribute back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn


class Journal:
    """Records every attribute a surgery replaces, to undo it all on failure."""

    def __init__(self) -> None:
        self._entries: list[tuple[nn.Module, str, Any]] = []

    def set(self, module: nn.Module, name: str, value: Any) -> None:
        self._entries.append((module, name, getattr(module, name)))
        if isinstance(value, torch.Tensor) and name in module._parameters:
            old = module._parameters[name]
            value = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
        setattr(module, name, value)

    def undo(self) -> None:
        for module, name, old in reversed(self._entries):
            setattr(module, name, old)
        self._entries.clear()


def _keep(n: int, remove: Sequence[int]) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool).index_fill_(0, torch.as_tensor(list(remove), dtype=torch.long), False)
    return keep.nonzero().flatten()


def _narrow(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    # index_select makes a new tensor: the narrowed layer shares no storage with the old one.
    return t.detach().index_select(dim, keep.to(t.device))


def _narrow_param(j: Journal, m: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    t = getattr(m, name)
    if t is not None:
        j.set(m, name, _narrow(t, dim, keep))


def prune_conv(j: Journal, m: nn.Module, rm: dict[str, list[int]]) -> None:
    out_rm, in_rm = rm.get("out", []), rm.get("in", [])
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    w = m.weight
    if out_rm:  # rows first: the column pass below then copies the smaller tensor
        keep = _keep(cout, out_rm)
        w = _narrow(w, 0, keep)
        _narrow_param(j, m, "bias", 0, keep)
    if in_rm and g == 1:
        w = _narrow(w, 1, _keep(cin, in_rm))
    elif in_rm and g < cin:  # grouped: each group loses the same number of inputs (checked)
        per_in, per_out = cin // g, (cout - len(out_rm)) // g
        blocks = []
        for k in range(g):
            cols = _keep(per_in, [i - k * per_in for i in in_rm if k * per_in <= i < (k + 1) * per_in])
            blocks.append(_narrow(w[k * per_out : (k + 1) * per_out], 1, cols))
        w = torch.cat(blocks)
    # depthwise (g == cin): the weight has one input column; dropping outputs drops the groups
    if w is not m.weight:
        j.set(m, "weight", w)
    new_in = cin - len(in_rm)
    if g > 1 and g == cin:
        j.set(m, "groups", new_in)
    j.set(m, "in_channels", new_in)
    j.set(m, "out_channels", cout - len(out_rm))


def prune_linear(j: Journal, m: nn.Linear, rm: dict[str, list[int]]) -> None:
    if rm.get("in"):
        _narrow_param(j, m, "weight", 1, _keep(m.in_features, rm["in"]))
        j.set(m, "in_features", m.in_features - len(rm["in"]))
    if rm.get("out"):
        keep = _keep(m.out_features, rm["out"])
        _narrow_param(j, m, "weight", 0, keep)
        _narrow_param(j, m, "bias", 0, keep)
        j.set(m, "out_features", m.out_features - len(rm["out"]))


def prune_batchnorm(j: Journal, m: nn.Module, rm: dict[str, list[int]]) -> None:
    keep = _keep(m.num_features, rm.get("bn", []))
    for name in ("weight", "bias", "running_mean", "running_var"):
        _narrow_param(j, m, name, 0, keep)
    j.set(m, "num_features", len(keep))


Surgeon = Callable[[Journal, nn.Module, dict[str, list[int]]], None]

SURGEONS: dict[type, Surgeon] = {
    nn.Conv1d: prune_conv,
    nn.Conv2d: prune_conv,
    nn.Conv3d: prune_conv,
    nn.Linear: prune_linear,
    nn.BatchNorm1d: prune_batchnorm,
    nn.BatchNorm2d: prune_batchnorm,
    nn.BatchNorm3d: prune_batchnorm,
}


def surgeon_for(m: nn.Module) -> Surgeon | None:
    return next((SURGEONS[c] for c in type(m).__mro__ if c in SURGEONS), None)
