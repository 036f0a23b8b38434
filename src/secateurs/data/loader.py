"""Batches straight from in-memory tensors: no DataLoader, no worker processes, no per-sample Python.

A batch is one index into the uint8 images (one gather when augmenting), one conversion to
float and one normalisation, so the data path costs a small fraction of a training step.
Data that does not fit in memory (a user's ``Dataset``, a streamed image folder) takes the
general path of :mod:`._torch_loader`; :func:`as_loader` chooses between the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..errors import ConfigError
from ._torch_loader import TorchLoader, check_loader, dataset_loader, is_map_dataset
from .augment import CropFlipParams, crop_flip, draw_crop_flip, pad_images
from .info import DatasetInfo, ImageDataset

#: On CUDA the whole uint8 dataset (padded) is kept on the GPU when it takes at most this
#: fraction of the free memory; otherwise batches are gathered on the CPU and copied.
RESIDENT_FRACTION = 0.25


@dataclass
class LoaderConfig:
    """How :func:`make_loader` batches a dataset.

    Attributes:
        batch_size: samples per batch on each rank (the global batch is ``batch_size * world_size``).
        train: shuffle and augment; False gives the samples in order, unaugmented.
        augment: random crop with zero padding plus horizontal flip (only when ``train``).
        crop_padding: zero pixels added on each side before the random crop.
        hflip: mirror half of the samples (only when augmenting).
        seed: seeds both the shuffle and the augmentation, together with the epoch.
        drop_last: drop the incomplete last batch, and the samples that do not divide evenly
            among ranks.
        device: where the batches are delivered.
        num_workers: worker processes decoding the samples of a torch ``Dataset`` (see
            :func:`as_loader`); the in-memory path has nothing to decode and ignores it.
    """

    batch_size: int = 128
    train: bool = True
    augment: bool = True
    crop_padding: int = 4
    hflip: bool = True
    seed: int = 0
    drop_last: bool = False
    device: str | torch.device = "cpu"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be non-negative, got {self.crop_padding}")


class _Indices:
    """Stands in for the dataset in DistributedSampler, which only needs ``len``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class BatchLoader:
    """Iterable of ``(x, y)``: float32 ``[B, C, S, S]`` normalised with ``info.mean/std``, int64 ``[B]``.

    Shuffling is :class:`DistributedSampler`'s (also for one process), so the global order
    of an epoch depends only on ``(seed, epoch)``, and rank ``r`` of ``w`` takes positions
    ``r, r + w, ...`` of it. Augmentation parameters are drawn per sample for the whole
    dataset (see :mod:`.augment`). Hence ``w`` ranks with batch ``B / w`` together see, at
    every step, exactly the augmented samples one process with batch ``B`` sees.

    Call :meth:`set_epoch` before each epoch, as with DistributedSampler: without it every
    epoch repeats epoch 0. In evaluation with several ranks and ``drop_last=False``, the
    sampler repeats a few samples so every rank has as many.
    """

    def __init__(self, dataset: ImageDataset, config: LoaderConfig, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        if len(dataset) == 0:
            raise ConfigError(f"dataset {dataset.info.name!r} ({dataset.split}) is empty; nothing to load")
        self.dataset = dataset
        self.config = config
        self.device = torch.device(config.device)
        self._augment = config.train and config.augment and (config.crop_padding > 0 or config.hflip)
        self._sampler = DistributedSampler(
            _Indices(len(dataset)),
            num_replicas=world_size,
            rank=rank,
            shuffle=config.train,
            seed=config.seed,
            drop_last=config.drop_last,
        )
        self._resident = self._fits_on_device()
        store = self.device if self._resident else torch.device("cpu")
        self._images = dataset.images.to(store)
        self._labels = dataset.labels.to(store)
        self._padded: torch.Tensor | None = None  # built at the first augmented batch
        info = dataset.info
        # x_norm = (x - 255 mean) / (255 std), as two in-place ops on the float batch.
        self._shift = torch.tensor(info.mean, device=self.device).mul(255).view(1, -1, 1, 1)
        self._scale = torch.tensor(info.std, device=self.device).mul(255).reciprocal().view(1, -1, 1, 1)
        self._epoch = 0
        self._ready_epoch: int | None = None
        self._order = torch.empty(0, dtype=torch.int64)
        self._params: CropFlipParams | None = None

    @property
    def info(self) -> DatasetInfo:
        return self.dataset.info

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before ``drop_last`` trims the last batch)."""
        return self._sampler.num_samples

    def __len__(self) -> int:
        n, b = self.num_samples, self.config.batch_size
        return n // b if self.config.drop_last else math.ceil(n / b)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle and augmentation of ``epoch``; an epoch can be replayed exactly."""
        self._epoch = int(epoch)

    def _fits_on_device(self) -> bool:
        if self.device.type == "cpu":
            return True
        if self.device.type != "cuda":
            return True  # other accelerators: no pinned path, keep everything there
        pad = self.config.crop_padding if self._augment else 0
        n, c, h, w = self.dataset.images.shape
        need = n * c * ((h + 2 * pad) * (w + 2 * pad) + h * w)  # images + padded copy
        free, _ = torch.cuda.mem_get_info(self.device)
        return need <= RESIDENT_FRACTION * free

    def _prepare_epoch(self) -> None:
        self._sampler.set_epoch(self._epoch)
        order = torch.tensor(list(iter(self._sampler)), dtype=torch.int64)
        self._order = order.to(self._images.device, non_blocking=True)
        if self._augment:
            params = draw_crop_flip(
                len(self.dataset), self.config.crop_padding, self.config.hflip, self.config.seed, self._epoch
            )
            self._params = params.to(self._images.device)
        self._ready_epoch = self._epoch

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        if not self._augment:
            return self._images.index_select(0, index)
        if self._padded is None:
            self._padded = pad_images(self._images, self.config.crop_padding)
        assert self._params is not None
        return crop_flip(self._padded, index, self._params, self.dataset.info.image_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._ready_epoch != self._epoch:
            self._prepare_epoch()
        order, b = self._order, self.config.batch_size
        pin = not self._resident and self.device.type == "cuda"
        for step in range(len(self)):
            index = order[step * b : (step + 1) * b]
            x, y = self._gather(index), self._labels.index_select(0, index)
            if not self._resident:  # uint8 travels: a quarter of the bytes of the float batch
                if pin:
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
            yield x.float().sub_(self._shift).mul_(self._scale), y


#: What :func:`as_loader` returns: iterables of ``(x, y)`` on the device, with ``set_epoch`` and ``len``.
Batches = Union["BatchLoader", TorchLoader]


def make_loader(dataset: ImageDataset, config: LoaderConfig, rank: int = 0, world_size: int = 1) -> BatchLoader:
    """Build the batch iterator of one rank.

    Args:
        dataset: an in-memory split from :func:`load_dataset`.
        config: batch size, shuffling, augmentation, seed, device.
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes sharing each global batch.
    """
    return BatchLoader(dataset, config, rank=rank, world_size=world_size)


def _user_loader(loader: DataLoader, device: str | torch.device, world_size: int) -> TorchLoader:
    check_loader(loader, world_size)
    return TorchLoader(loader, device)


#: What :func:`as_loader` accepts, tried in order: (what it is, how it becomes batches).
_SOURCES: list[tuple[Callable[[Any], bool], Callable[..., Batches]]] = [
    (lambda d: isinstance(d, (BatchLoader, TorchLoader)), lambda d, c, r, w: d),
    (lambda d: isinstance(d, ImageDataset), make_loader),
    (lambda d: isinstance(d, DataLoader), lambda d, c, r, w: _user_loader(d, c.device, w)),
    (
        is_map_dataset,
        lambda d, c, r, w: dataset_loader(
            d, c.batch_size, c.train, c.seed, c.drop_last, c.num_workers, torch.device(c.device), r, w
        ),
    ),
]


def as_loader(data: Any, config: LoaderConfig, rank: int = 0, world_size: int = 1) -> Batches:
    """The one place data becomes batches: every command that reads data goes through it.

    Args:
        data: an in-memory :class:`ImageDataset` (the fast path: ``config`` decides
            everything, augmentation included); any map-style ``Dataset`` whose samples are
            ``(image_tensor, label)``, already transformed and normalised (batched by a seeded
            DistributedSampler with ``config.num_workers`` workers); a ``DataLoader``, used as
            it is (its own batch size, order and workers; under several processes it must
            have a DistributedSampler); or a loader this function returned.
        config: batch size, shuffling, seed, device (and augmentation, for the fast path).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes sharing each global batch.

    Raises:
        ConfigError: ``data`` is none of those, or a DataLoader would not shard under torchrun.
    """
    for accepts, build in _SOURCES:
        if accepts(data):
            return build(data, config, rank, world_size)
    raise ConfigError(
        f"cannot read batches from a {type(data).__name__}: give an ImageDataset (load_dataset), a "
        "map-style torch Dataset whose samples are (image_tensor, label), or a DataLoader of them"
    )
