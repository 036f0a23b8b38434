"""``copy_model``: ``copy.deepcopy`` of a model, several times faster for plain modules.

``copy.deepcopy`` of a network walks every module's ``__dict__`` through the generic
reduce protocol: for a ResNet-56 that is a third of a whole no-data prune. Most models
are plain: built-in module classes and their subclasses, parameters, buffers that own
their storage, and attributes of a few built-in types. For those, :func:`copy_model`
builds what deepcopy builds (new parameters and buffers, tying and shared modules kept,
hooks and attributes copied alike) directly. At the first thing it does not know to be
plain (a custom ``__deepcopy__``, ``__reduce__`` or ``__getstate__``, ``__slots__``, a
tensor subclass, a buffer with ``.grad`` or sharing storage, an attribute of another
type) it drops its work and returns ``copy.deepcopy(model)``: never a different copy,
only a slower one. ``tests/test_copy.py`` holds it to deepcopy on every zoo model.
"""

from __future__ import annotations

import copy
import copyreg
import types
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

#: What deepcopy returns as is (``copy._deepcopy_atomic``), by exact type; torch.dtype
#: reduces to its name, which deepcopy also returns as is.
_ATOMS = frozenset(
    {type(None), int, float, bool, complex, bytes, str, type, range, types.FunctionType, types.BuiltinFunctionType}
) | {torch.dtype}


class _NotPlain(Exception):
    """Something deepcopy handles in a way this module does not reproduce."""


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, built directly when every part of it is plain."""
    try:
        return _Copier().module(model)
    except _NotPlain:
        return copy.deepcopy(model)


class _Copier:
    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}  # id of the original -> its copy, as deepcopy's memo
        self.storages: set[int] = set()  # storages of the plain tensors copied so far

    def value(self, v: Any) -> Any:
        kind = type(v)
        if kind in _ATOMS:
            return v
        hit = self.memo.get(id(v))
        if hit is not None:
            return hit
        if isinstance(v, nn.Module):
            return self.module(v)
        if kind is nn.Parameter:  # its own __deepcopy__ (a clone of the data), as deepcopy calls it
            return self._keep(v, v.__deepcopy__(self.memo))
        if kind is torch.Tensor:
            return self._keep(v, self._tensor(v))
        if kind is list:
            out: Any = self._keep(v, [])
            out.extend(self.value(x) for x in v)
            return out
        if kind is dict or kind is OrderedDict:
            out = self._keep(v, kind())
            for k, x in v.items():
                if type(k) not in _ATOMS:
                    raise _NotPlain
                out[k] = self.value(x)
            return out
        if kind is set:
            if any(type(x) not in _ATOMS for x in v):
                raise _NotPlain
            return self._keep(v, set(v))
        if kind is tuple:
            items = [self.value(x) for x in v]
            # deepcopy gives back the tuple itself when no element changed
            return v if all(a is b for a, b in zip(items, v)) else self._keep(v, tuple(items))
        raise _NotPlain

    def _keep(self, original: Any, copied: Any) -> Any:
        self.memo[id(original)] = copied
        return copied

    def module(self, m: nn.Module) -> nn.Module:
        hit = self.memo.get(id(m))
        if hit is not None:
            return hit
        cls = type(m)
        if not _plain_class(cls) or "__deepcopy__" in m.__dict__ or _holds(m, "__deepcopy__"):
            raise _NotPlain
        new = self._keep(m, cls.__new__(cls))
        # deepcopy: state = m.__getstate__() (Module's: __dict__ without the compiled call),
        # copied, then handed to the new module's __setstate__.
        state = m.__getstate__()
        if type(state) is not dict:
            raise _NotPlain
        new.__setstate__({k: self.value(v) for k, v in state.items()})
        return new

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Tensor.__deepcopy__ of a buffer that owns its whole storage: a clone."""
        if (
            not t.is_leaf
            or t.grad is not None
            or t.layout is not torch.strided
            or t.device.type not in ("cpu", "cuda")
            or t.is_quantized
            or t.is_conj()
            or t.is_neg()
            or t.__dict__
            or t.storage_offset() != 0
            or not t.is_contiguous()
        ):
            raise _NotPlain
        storage = t.untyped_storage()
        if storage.nbytes() != t.numel() * t.element_size() or storage.data_ptr() in self.storages:
            raise _NotPlain  # a view, or storage shared with another tensor: deepcopy keeps it shared
        if t.numel():
            self.storages.add(storage.data_ptr())
        with torch.no_grad():
            out = t.clone()
        return out.requires_grad_() if t.requires_grad else out


def _plain_class(cls: type) -> bool:
    """Copied by deepcopy through Module's own ``__getstate__``, nothing custom on the way
    (a class's own ``__setstate__``, e.g. Conv2d's, is called alike on the copied state)."""
    return (
        cls not in copyreg.dispatch_table
        and getattr(cls, "__deepcopy__", None) is None
        and cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and cls.__getstate__ is nn.Module.__getstate__
        and getattr(cls, "__getnewargs_ex__", None) is None
        and getattr(cls, "__getnewargs__", None) is None
        and not copyreg._slotnames(cls)
    )


def _holds(m: nn.Module, name: str) -> bool:
    """Whether ``getattr(m, name)`` would find a parameter, buffer or submodule."""
    return name in m._parameters or name in m._buffers or name in m._modules
