"""``copy_model`` (``src/secateurs/_copy.py``) must give exactly what ``copy.deepcopy`` gives:
the same module types, attributes, parameters and buffers (values, dtypes, layouts,
``requires_grad``), no storage shared with the original, and the same aliasing (a tied
weight or shared module is one object in the copy too). Plain models take its own path;
anything it does not reproduce goes to deepcopy itself, which the tests watch happen."""

from __future__ import annotations

import copy
import functools
import importlib
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

import secateurs

C = importlib.import_module("secateurs._copy")


def _same(orig: Any, a: Any, b: Any, pairs: dict[int, tuple[int, int]]) -> None:
    """``a`` (ours) and ``b`` (deepcopy's) copy ``orig`` alike, aliases included."""
    seen = pairs.get(id(orig))
    if seen is not None:  # met before on another path: both copies must reuse their object
        assert seen == (id(a), id(b))
        return
    pairs[id(orig)] = (id(a), id(b))
    assert type(a) is type(b)
    assert (a is orig) == (b is orig)
    if isinstance(orig, torch.Tensor):
        for t in (a, b):
            assert (t.dtype, t.shape, t.stride(), t.storage_offset(), t.device) == (
                orig.dtype,
                orig.shape,
                orig.stride(),
                orig.storage_offset(),
                orig.device,
            )
            assert t.requires_grad == orig.requires_grad and t.is_leaf
            assert torch.equal(t.detach(), orig.detach())
            assert not orig.numel() or t.untyped_storage().data_ptr() != orig.untyped_storage().data_ptr()
        assert (a.grad is None) == (b.grad is None)
        return
    if isinstance(orig, nn.Module):
        assert list(a.__dict__) == list(b.__dict__)
        for k in b.__dict__:
            _same(orig.__dict__.get(k, b.__dict__[k]), a.__dict__[k], b.__dict__[k], pairs)
        return
    if isinstance(orig, dict):
        assert list(a) == list(b) == list(orig)
        for k in orig:
            _same(orig[k], a[k], b[k], pairs)
        return
    if isinstance(orig, (list, tuple)):
        assert len(a) == len(b) == len(orig)
        for x, y, z in zip(orig, a, b):
            _same(x, y, z, pairs)
        return
    assert a == b


def _fast(model: nn.Module) -> nn.Module:
    """Our own path, no fallback allowed."""
    return C._Copier().module(model)


def _check(model: nn.Module, fast: bool = True) -> None:
    ours = _fast(model) if fast else C.copy_model(model)
    _same(model, ours, copy.deepcopy(model), {})


@pytest.mark.parametrize("name", secateurs.list_models())
def test_zoo_models_copy_as_deepcopy_does(name: str) -> None:
    torch.manual_seed(0)
    _check(secateurs.create_model(name).train())


class Tied(nn.Module):
    """Weight tying, a module under two names, hooks, attributes of every plain type."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.again = self.a
        self.up = nn.Upsample(scale_factor=2)  # its own __setstate__
        self.conv = nn.Conv2d(3, 3, 1)
        self.conv.weight = nn.Parameter(torch.randn(3, 3, 1, 1).transpose(0, 1))  # not contiguous
        self.conv.bias.requires_grad_(False)
        self.register_buffer("scale", torch.tensor(2.0, requires_grad=True))
        self.register_buffer("count", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("absent", None)
        shared = [1, 2.5, "x"]
        self.notes = {"list": shared, "tuple": (1, (2, None)), "set": {3, 4}, "dtype": torch.float16}
        self.same_list = shared
        self.fn = torch.relu
        self.a.register_forward_hook(_hook)
        self.b.register_forward_pre_hook(_hook)
        self.a.eval()


def _hook(*args: Any) -> None:
    return None


def test_tying_sharing_hooks_and_attributes_copy_as_deepcopy_does() -> None:
    model = Tied()
    model.a.weight.grad = torch.ones(4, 4)  # Parameter.__deepcopy__ drops it: so must we
    _check(model)
    ours = _fast(model)
    assert ours.b.weight is ours.a.weight and ours.again is ours.a and ours.same_list is ours.notes["list"]
    assert ours.a.weight.grad is None
    x = torch.randn(2, 4)
    assert torch.equal(ours.b(x), model.b(x))


class CustomDeepcopy(nn.Linear):
    def __deepcopy__(self, memo):
        return nn.Identity()


class CustomReduce(nn.Linear):
    def __reduce_ex__(self, protocol):
        return (nn.Identity, ())


class CustomGetstate(nn.Linear):
    def __getstate__(self):
        state = super().__getstate__()
        state["extra"] = 1
        return state


class Slotted(nn.Module):
    __slots__ = ("hidden",)


class SubParameter(nn.Parameter):
    pass


def _buffer(module: nn.Module, name: str, t: torch.Tensor) -> nn.Module:
    module.register_buffer(name, t)
    return module


def _with(**attrs: Any) -> nn.Module:
    m = nn.Linear(3, 3)
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def _views() -> nn.Module:
    base = torch.arange(6.0)
    m = _buffer(nn.Module(), "first", base[:3])
    return _buffer(m, "second", base[3:])


def _shared_storage() -> nn.Module:
    t = torch.arange(4.0)
    m = _buffer(nn.Module(), "x", t)
    return _buffer(m, "y", t.view(2, 2))


def _grad_buffer() -> nn.Module:
    t = torch.ones(3, requires_grad=True)
    t.grad = torch.ones(3)
    return _buffer(nn.Module(), "t", t)


def _parametrized() -> nn.Module:
    import torch.nn.utils.parametrize as P

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    m = nn.Linear(3, 3)
    P.register_parametrization(m, "weight", Double())
    return m


NOT_PLAIN = {
    "custom __deepcopy__": lambda: nn.Sequential(CustomDeepcopy(2, 2)),
    "custom __reduce_ex__": lambda: nn.Sequential(CustomReduce(2, 2)),
    "custom __getstate__": lambda: nn.Sequential(CustomGetstate(2, 2)),
    "__slots__": lambda: nn.Sequential(Slotted()),
    "parameter subclass": lambda: _with(scale=SubParameter(torch.ones(2))),
    "buffer with grad": _grad_buffer,
    "buffers sharing a storage": _shared_storage,
    "views of a larger storage": _views,
    "bound-method hook": lambda: (lambda m: m.register_forward_hook(m.extra_repr) and m)(nn.Linear(2, 2)),
    "partial attribute": lambda: _with(f=functools.partial(max, 1)),
    "numpy attribute": lambda: _with(table=np.arange(3)),
    "device attribute": lambda: _with(where=torch.device("cpu")),
    "module-type attribute": lambda: _with(kind=types.SimpleNamespace(a=1)),
    "non-str dict key": lambda: _with(table={(1, 2): 3, object: 1}),
    "parametrized": _parametrized,
    "ordered dict of objects": lambda: _with(table=OrderedDict(a=np.zeros(1))),
}


@pytest.mark.parametrize("case", list(NOT_PLAIN))
def test_what_is_not_plain_goes_to_deepcopy(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = NOT_PLAIN[case]()
    with pytest.raises(C._NotPlain):
        _fast(model)
    calls, results = [], []

    def deepcopy(m: nn.Module) -> nn.Module:
        calls.append(m)
        results.append(copy.deepcopy(m))
        return results[-1]

    monkeypatch.setattr(C, "copy", types.SimpleNamespace(deepcopy=deepcopy))
    assert C.copy_model(model) is results[0] and calls == [model]  # deepcopy's own copy, from the start
