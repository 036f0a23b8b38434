"""Batches from a user's map-style ``Dataset`` or ``DataLoader``, delivered on the training device.

The in-memory :class:`~.loader.BatchLoader` is the fast path for data that fits in memory;
this is the general one. A dataset is batched with a :class:`DistributedSampler` (also for
one process), so, as with the fast path, the order of an epoch depends only on
``(seed, epoch)`` and rank ``r`` of ``w`` takes positions ``r, r + w, ...`` of it: worker
processes change where samples are decoded, never which samples a step sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from ..errors import ConfigError, DatasetError
from .info import DatasetInfo


def is_map_dataset(data: Any) -> bool:
    """Indexable with a length: what a DataLoader with a sampler can batch."""
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, DataLoader)


def dataset_info(data: Any) -> DatasetInfo | None:
    """The :class:`DatasetInfo` of a dataset, of a DataLoader's dataset, or of a Subset's base; None if absent."""
    for _ in range(8):  # a wrapper chain is short; a cycle must not hang
        if data is None:
            return None
        info = getattr(data, "info", None)
        if isinstance(info, DatasetInfo):
            return info
        data = getattr(data, "dataset", None)  # DataLoader.dataset, Subset.dataset
    return None


def _samplers(loader: DataLoader) -> list[Any]:
    return [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]


class TorchLoader:
    """Iterable of ``(x, y)`` on ``device`` from a DataLoader whose samples are ``(image_tensor, label)``.

    :meth:`set_epoch` reaches the loader's sampler when it has one (a DistributedSampler),
    so every epoch is shuffled afresh and a resumed epoch replays exactly.
    """

    def __init__(self, loader: DataLoader, device: str | torch.device = "cpu") -> None:
        self.loader = loader
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda" and bool(loader.pin_memory)

    @property
    def info(self) -> DatasetInfo | None:
        return dataset_info(self.loader)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        for sampler in _samplers(self.loader):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(int(epoch))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor)):
                kind = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                raise DatasetError(
                    f"the data loader yielded a {kind}; each sample must be (image_tensor, label), "
                    "e.g. return image, label from the dataset's __getitem__"
                )
            x, y = batch
            y = torch.as_tensor(y)
            yield x.to(self.device, non_blocking=self._pin), y.to(self.device, non_blocking=self._pin)


def check_loader(loader: DataLoader, world_size: int) -> None:
    """Under several processes a user's loader must split the data, or every rank sees all of it."""
    if world_size > 1 and not any(isinstance(s, DistributedSampler) for s in _samplers(loader)):
        raise ConfigError(
            f"with {world_size} processes, a DataLoader must shard the data: build it with "
            "sampler=DistributedSampler(dataset), or pass the Dataset itself and secateurs builds one"
        )


def dataset_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    seed: int,
    drop_last: bool,
    num_workers: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> TorchLoader:
    """A seeded, sharded DataLoader over ``dataset`` (workers decode; the main process moves batches)."""
    if len(dataset) == 0:
        raise ConfigError(f"the dataset {type(dataset).__name__} is empty; nothing to load")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=drop_last
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
    )
    return TorchLoader(loader, device)


def subset_of(data: Any, index: torch.Tensor, batch_size: int) -> Any:
    """The samples ``index`` of a map-style dataset, or of a DataLoader's dataset in batches of
    ``batch_size`` with the loader's workers and collate function."""
    if isinstance(data, DataLoader):
        base = data.dataset
        if not is_map_dataset(base):
            raise ConfigError(
                f"calibration draws a seeded subset, which needs a map-style dataset; the DataLoader's "
                f"dataset is a {type(base).__name__}: pass a Dataset with __getitem__ and __len__"
            )
        return DataLoader(
            Subset(base, index.tolist()),
            batch_size=batch_size,
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
        )
    return Subset(data, index.tolist())


def length_of(data: Any) -> int:
    """Number of samples of a dataset, or of a DataLoader's dataset."""
    base = data.dataset if isinstance(data, DataLoader) else data
    try:
        return len(base)
    except TypeError as e:
        raise ConfigError(f"{type(base).__name__} has no length; give a map-style Dataset (with __len__)") from e
