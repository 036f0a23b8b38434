"""A user's architecture factory named ``package.module:function``, as ``--arch`` takes it.

A checkpoint never names code to run: loading a model that is not in the zoo needs its
factory from the caller, who imports it (the Python API) or names it (the CLI). The
factory builds the unpruned network; the checkpoint's layer shapes narrow it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..errors import ConfigError

Factory = Callable[..., nn.Module]


def import_factory(spec: str) -> Factory:
    """The callable ``spec`` names (``module:function``, the module importable from the
    current directory or ``PYTHONPATH``), e.g. ``torchvision.models:resnet18``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"--arch {spec!r}: expected MODULE:FUNCTION such as torchvision.models:resnet18 or mymodels:build_net"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # as `python -m` would: a module beside the user is found
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"--arch {spec!r}: cannot import {module_name!r} ({e}); run from the folder that holds "
            "it, or add that folder to PYTHONPATH"
        ) from e
    except Exception as e:  # the module's own code failed: say so in one line, with its error
        raise ConfigError(
            f"--arch {spec!r}: importing {module_name!r} raised {type(e).__name__}: {e}; fix or "
            "install that module (python -c 'import " + module_name + "' shows the traceback)"
        ) from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--arch {spec!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--arch {spec!r}: {attr!r} is a {type(target).__name__}, not a function or class")
    return target


def build_from_factory(factory: str | Factory, options: dict[str, Any] | None = None) -> nn.Module:
    """Call the factory (a ``module:function`` string or the callable) with ``options`` as keywords."""
    fn = import_factory(factory) if isinstance(factory, str) else factory
    name = factory if isinstance(factory, str) else getattr(fn, "__qualname__", repr(fn))
    try:
        model = fn(**(options or {}))
    except TypeError as e:
        raise ConfigError(f"architecture {name!r} refused the options {options or {}}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"architecture {name!r} returned a {type(model).__name__}, not an nn.Module")
    return model


@dataclass(frozen=True)
class ArchSpec:
    """``--arch`` and its ``--arch-option`` values, resolved once by the CLI and passed down.

    Attributes:
        factory: ``"module:function"``.
        options: keyword arguments for the factory.
    """

    factory: str
    options: dict[str, Any] = field(default_factory=dict)

    def load(self, path: str | os.PathLike) -> nn.Module:
        """The checkpoint at ``path`` rebuilt on this architecture (see :func:`secateurs.load`)."""
        from .checkpoint import load

        return load(path, arch=self.factory, arch_options=self.options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: recorded in a pruned model's metadata and a run's config.json."""
        return {"factory": self.factory, "options": dict(self.options)}


def load_model(path: str | os.PathLike, arch: ArchSpec | None = None) -> nn.Module:
    """A checkpoint's model: a zoo model rebuilds itself; any other needs its ``arch``."""
    from .checkpoint import load

    return load(path) if arch is None else arch.load(path)
