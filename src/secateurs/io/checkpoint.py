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
from ._factory import Factory, build_from_factory
from ._layer_specs import apply_layer_specs, apply_tensor_shapes, layer_specs

KIND = "model"
MODEL_FILE = "model.safetensors"  # the model of a train or prune run directory


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


def resolve(path: str | os.PathLike) -> Path:
    """The checkpoint ``path`` names: the file itself, or the model of a run directory.

    Every command that reads a model takes either, since ``train`` and ``prune`` print and
    users pass the run directory they were given.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    raise CheckpointError(
        f"{str(path)!r} is a directory without a {MODEL_FILE}; pass a checkpoint file, or the "
        "run directory of a train or prune run"
    )


def _read(path: str | os.PathLike):
    path = resolve(path)
    tensors, header = _safefile.read(path)
    if header.get("kind") != KIND:
        raise CheckpointError(
            f"{str(path)!r} holds a {header.get('kind')!r} file, not a model checkpoint; "
            "pass the model.safetensors of a run directory"
        )
    return tensors, header


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    strict: bool = True,
    *,
    arch: str | Factory | None = None,
    arch_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Rebuild a model from a checkpoint written by :func:`save`, without unpickling anything.

    A model not built by :func:`secateurs.create_model` (a torchvision or user network) comes
    back from its architecture factory: the factory builds the unpruned network, every layer
    the checkpoint records at another shape (pruned convs, norms, linears; loose parameters)
    is replaced at the recorded shape, then the weights go in.

    Args:
        path: the checkpoint.
        model: a freshly built instance of the architecture. Layers the checkpoint narrowed
            are replaced in it; it is modified in place and returned.
        strict: require that the checkpoint and the model have exactly the same keys.
        arch: instead of ``model``, the factory that builds it: a callable, or its name
            ``"module:function"`` (as ``--arch`` takes it).
        arch_options: keyword arguments for ``arch``.
    """
    from ..models import ARCH_ATTR, create_model

    tensors, header = _read(path)
    arch_record = header.get("arch")
    if model is not None and arch is not None:
        raise CheckpointError("give the architecture once: model=... or arch=..., not both")
    if arch is not None:
        model = build_from_factory(arch, arch_options)
    if model is None:
        if not arch_record:
            factory = header.get("meta", {}).get("architecture", {}).get("factory")
            hint = f" (it was pruned from --arch {factory})" if factory else ""
            raise CheckpointError(
                f"{str(path)!r} was saved from a model not built by secateurs.create_model, so its "
                f"architecture is unknown{hint}; pass its factory, load(path, arch=build_net), or a fresh instance, "
                "load(path, model=MyNet()); on the command line, --arch MODULE:FUNCTION"
            )
        model = create_model(arch_record["name"], **arch_record.get("kwargs", {}))
    elif arch_record and not hasattr(model, ARCH_ATTR):
        setattr(model, ARCH_ATTR, arch_record)
    apply_layer_specs(model, header.get("layers", {}))
    apply_tensor_shapes(model, tensors)
    try:
        model.load_state_dict(tensors, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{str(path)!r} does not fit the model: {' '.join(str(e).split())}") from e
    return model
