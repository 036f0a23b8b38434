"""Model registry: a three-line factory per variant, looked up by name (after timm)."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..errors import unknown_choice

ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, ModelFn] = {}

#: Attribute set on every model built by :func:`create_model`; checkpoints store it so
#: the architecture can be rebuilt without pickling the object.
ARCH_ATTR = "secateurs_arch"


def register_model(fn: ModelFn) -> ModelFn:
    """Register ``fn`` under its own ``__name__``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice ({_MODELS[name].__module__} and {fn.__module__})")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entrypoint(name: str) -> ModelFn:
    if name not in _MODELS:
        raise unknown_choice("model", name, _MODELS)
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model and record how it was built.

    Args:
        name: a registered name, see :func:`list_models`.
        **kwargs: passed to the factory (``num_classes``, ``in_channels``, ``stem``, ...).
    """
    fn = model_entrypoint(name)
    params = inspect.signature(fn).parameters
    accepts_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not accepts_var_kw:
        bad = sorted(set(kwargs) - set(params))
        if bad:
            from ..errors import ConfigError

            raise ConfigError(f"model {name!r} takes no argument(s) {bad}; it takes {sorted(params)}")
    model = fn(**kwargs)
    setattr(model, ARCH_ATTR, {"name": name, "kwargs": dict(kwargs)})
    return model
