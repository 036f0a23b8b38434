"""``save`` / ``load``: a model as safetensors weights plus JSON metadata, never pickle.

The header holds the architecture (registry name and arguments), every layer's
constructor arguments (so a physically pruned model is rebuilt at its pruned widths) and
the caller's metadata (normalisation, training recipe, metrics, ...).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._version import __version__
from ..errors import CheckpointError
from . import _safefile
from ._layer_specs import apply_layer_specs, layer_specs

KIND = "model"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (or the model)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def save(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: any module; zoo models also record their architecture, so that
            :func:`load` can rebuild them without the original object.
        path: destination, conventionally ``*.safetensors``.
        meta: JSON-able metadata stored alongside (normalisation, recipe, metrics, ...).
    """
    from ..models._registry import ARCH_ATTR

    model = unwrap(model)
    header = {
        "kind": KIND,
        "secateurs_version": __version__,
        "arch": getattr(model, ARCH_ATTR, None),
        "layers": layer_specs(model),
        "meta": meta or {},
    }
    return _safefile.write(path, model.state_dict(), header)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The verified header of a model checkpoint (``arch``, ``layers``, ``meta``)."""
    return _read(path)[1]


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata passed to :func:`save`."""
    return read_header(path)["meta"]


def _read(path: str | os.PathLike):
    tensors, header = _safefile.read(path)
    if header.get("kind") != KIND:
        raise CheckpointError(f"{str(path)!r} holds a {header.get('kind')!r} file, not a model checkpoint; "
                              "pass the model.safetensors of a run directory")
    return tensors, header


def load(path: str | os.PathLike, model: nn.Module | None = None, strict: bool = True) -> nn.Module:
    """Rebuild a model from a checkpoint written by :func:`save`.

    Args:
        path: the checkpoint.
        model: a freshly built instance of the architecture, required for models not
            built by :func:`secateurs.create_model`. Layers the checkpoint narrowed are
            replaced in it; it is modified in place and returned.
        strict: require that the checkpoint and the model have exactly the same keys.
    """
    from ..models import ARCH_ATTR, create_model

    tensors, header = _read(path)
    arch = header.get("arch")
    if model is None:
        if not arch:
            raise CheckpointError(
                f"{str(path)!r} was saved from a model not built by secateurs.create_model, so its "
                "architecture is unknown; pass a fresh instance: load(path, model=MyNet())")
        model = create_model(arch["name"], **arch.get("kwargs", {}))
    elif arch and not hasattr(model, ARCH_ATTR):
        setattr(model, ARCH_ATTR, arch)
    apply_layer_specs(model, header.get("layers", {}))
    try:
        model.load_state_dict(tensors, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{str(path)!r} does not fit the model: {' '.join(str(e).split())}") from e
    return model
