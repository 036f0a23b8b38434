"""What every layer type's surgery uses: a journal of replaced attributes, and narrowing.

A ``prune`` function gets the module and the channel indices to remove per role (``out``,
``in``, ``bn``) and narrows the module in place through a :class:`Journal`, so that a
failure half-way can put every attribute back.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def keep_indices(n: int, remove: Sequence[int]) -> torch.Tensor:
    """The indices of ``range(n)`` that are not in ``remove``."""
    keep = torch.ones(n, dtype=torch.bool).index_fill_(0, torch.as_tensor(list(remove), dtype=torch.long), False)
    return keep.nonzero().flatten()


def narrow(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    # index_select makes a new tensor: the narrowed layer shares no storage with the old one.
    return t.detach().index_select(dim, keep.to(t.device))


def narrow_param(j: Journal, m: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Narrow the parameter or buffer ``name`` of ``m`` along ``dim`` (skipped when it is None)."""
    t = getattr(m, name)
    if t is not None:
        j.set(m, name, narrow(t, dim, keep))
