"""What the commands that read a checkpoint share: the input shape to run it at, and the
dataset to run it on."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError


def input_shape(ckpt: Path, given: Sequence[int] | None) -> tuple[int, ...]:
    """``given`` (``--input-shape C,H,W``), else the shape the checkpoint records."""
    from ..io import read_meta

    if given:
        if len(given) != 3:
            raise ConfigError(f"--input-shape must be C,H,W (three integers), got {list(given)}")
        return tuple(given)
    shape = read_meta(ckpt).get("input_shape")
    if not shape:
        raise ConfigError(f"{str(ckpt)!r} records no input shape; pass --input-shape C,H,W")
    return tuple(shape)


def checkpoint_dataset(
    ckpt: Path,
    meta: dict[str, Any],
    dataset: str | None,
    split: str,
    data_dir: str | None,
    dataset_options: dict[str, Any] | None = None,
):
    """``(name, split data)`` for a checkpoint: its own dataset unless one is given, checked
    against the shapes it was trained for and normalised as during its training."""
    from ..data import load_dataset

    dataset = dataset or meta.get("dataset", {}).get("name")
    if dataset is None:
        raise ConfigError(f"{str(ckpt)!r} records no dataset; pass --dataset")
    data = load_dataset(dataset, split, data_dir, **(dataset_options or {}))
    want = meta.get("dataset", {})
    for key in ("num_classes", "in_channels", "image_size"):
        if key in want and want[key] != getattr(data.info, key):
            raise CheckpointError(
                f"{str(ckpt)!r} was trained for {key}={want[key]}, but dataset {dataset!r} has "
                f"{getattr(data.info, key)}"
            )
    norm = meta.get("normalisation")
    if norm:  # the model expects the inputs normalised as during its training
        data.info = dataclasses.replace(data.info, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    return dataset, data
