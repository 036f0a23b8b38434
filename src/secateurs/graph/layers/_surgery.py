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
        self._keep: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def keep(self, n: int, remove: Sequence[int]) -> torch.Tensor:
        """:func:`keep_indices`, made once per surgery for each width and removal: a unit's
        channels leave a producer, its BN and its consumers, which all ask for the same."""
        key = (n, tuple(remove))
        keep = self._keep.get(key)
        if keep is None:
            keep = self._keep[key] = keep_indices(n, remove)
        return keep

    def set(self, module: nn.Module, name: str, value: Any) -> None:
        params, attrs = module._parameters, module.__dict__
        if name in attrs and not isinstance(value, (torch.Tensor, nn.Module)) and _plain_attribute(module, name):
            # A width or a flag: where Module.__setattr__ would end up, without its checks.
            self._entries.append((module, name, attrs[name]))
            object.__setattr__(module, name, value)
            return
        if name in params:
            old = params[name]
            if isinstance(value, torch.Tensor):
                value = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else True)
        else:
            old = getattr(module, name)
        self._entries.append((module, name, old))
        setattr(module, name, value)

    def undo(self) -> None:
        for module, name, old in reversed(self._entries):
            setattr(module, name, old)
        self._entries.clear()


def _plain_attribute(module: nn.Module, name: str) -> bool:
    """Not also a parameter, buffer or submodule name (a module built by hand may hold both)."""
    return name not in module._parameters and name not in module._buffers and name not in module._modules


def keep_indices(n: int, remove: Sequence[int]) -> torch.Tensor:
    """The indices of ``range(n)`` that are not in ``remove`` (negative ones count from the
    end; out of range raises ``IndexError``). Set operations on Python ints, then one tensor:
    for the few hundred channels of a layer, a third of what a mask's four tensor ops cost."""
    if remove:
        low, high = min(remove), max(remove)
        if low < -n or high >= n:
            raise IndexError(f"index {low if low < -n else high} is out of range for {n} channels")
        if low < 0:
            remove = [i % n for i in remove]
    return torch.tensor(sorted(set(range(n)).difference(remove)), dtype=torch.long)


def narrow(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    # index_select makes a new tensor: the narrowed layer shares no storage with the old one.
    return t.detach().index_select(dim, keep if keep.device == t.device else keep.to(t.device))


def narrow_param(j: Journal, m: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    """Narrow the parameter or buffer ``name`` of ``m`` along ``dim`` (skipped when it is None)."""
    t = getattr(m, name)
    if t is not None:
        j.set(m, name, narrow(t, dim, keep))
