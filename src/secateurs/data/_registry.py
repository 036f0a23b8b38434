"""Dataset registry: one loader function per name, looked up by :func:`load_dataset`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, unknown_choice
from .info import ImageDataset

#: ``fn(split, data_dir, **kwargs)``; ``data_dir`` is ``None`` when the caller gave none.
DatasetFn = Callable[..., ImageDataset]


@dataclass(frozen=True)
class _Entry:
    fn: DatasetFn
    splits: tuple[str, ...]


_DATASETS: dict[str, _Entry] = {}


def register_dataset(name: str, splits: tuple[str, ...] = ("train", "test")) -> Callable[[DatasetFn], DatasetFn]:
    """Register a loader ``fn(split: str, data_dir: Path | None, **kwargs) -> ImageDataset``.

    Args:
        name: the name users pass to :func:`load_dataset` and ``--dataset``.
        splits: the split names the loader accepts; anything else is refused before it runs.
    """

    def decorator(fn: DatasetFn) -> DatasetFn:
        if name in _DATASETS:
            other = _DATASETS[name].fn.__module__
            raise ValueError(f"dataset {name!r} is registered twice ({other} and {fn.__module__})")
        _DATASETS[name] = _Entry(fn, tuple(splits))
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_DATASETS)


def load_dataset(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None, **kwargs: Any
) -> ImageDataset:
    """Load one split of a registered dataset into memory.

    Args:
        name: a registered name, see :func:`list_datasets`.
        split: ``"train"`` or ``"test"`` (image folders also take ``"val"``).
        data_dir: where the files are; ``None`` means the dataset's default location, if it has one.
        **kwargs: dataset-specific options (``image_size`` for ``imagefolder``, ``num_samples``
            for ``synthetic``, ...).

    Raises:
        ConfigError: unknown name, split or keyword argument.
        DatasetError: files missing or malformed; the message says where they were expected
            and how to get them.
    """
    if name not in _DATASETS:
        raise unknown_choice("dataset", name, _DATASETS)
    entry = _DATASETS[name]
    if split not in entry.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; valid splits: {', '.join(entry.splits)}")
    params = inspect.signature(entry.fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = sorted(set(kwargs) - set(params))
        if bad:
            options = sorted(set(params) - {"split", "data_dir"})
            raise ConfigError(f"dataset {name!r} takes no option(s) {bad}; it takes {options or 'none'}")
    return entry.fn(split, Path(data_dir).expanduser() if data_dir is not None else None, **kwargs)
