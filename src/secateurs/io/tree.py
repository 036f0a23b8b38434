"""Nested state (optimizer, RNG, counters) in a safetensors file instead of a pickle.

Tensors become safetensors entries; everything around them (dicts, lists, tuples,
numbers, strings) becomes a JSON skeleton pointing at those entries. Used for the
trainer's resume state, which holds more than a model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from . import _safefile

KIND = "tree"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        # JSON objects only have string keys; optimizer state is keyed by ints.
        return {"__items__": [[k, _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot store {type(obj).__name__} in a state file (only tensors, dict, list, tuple, "
        "numbers, strings and None)"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        raise CheckpointError(f"unexpected object in a state file: keys {sorted(obj)}")
    return obj


def save_tree(path: str | os.PathLike, tree: Any) -> Path:
    """Write a nested structure of tensors and plain values atomically."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(tree, tensors)
    return _safefile.write(path, tensors, {"kind": KIND, "tree": skeleton})


def load_tree(path: str | os.PathLike) -> Any:
    """Read what :func:`save_tree` wrote (verified, no code executed)."""
    tensors, header = _safefile.read(path)
    if header.get("kind") != KIND:
        raise CheckpointError(f"{str(path)!r} holds a {header.get('kind')!r} file, not a state file")
    return _decode(header["tree"], tensors)
