"""Datasets held in memory as uint8 tensors, a tensor-only batch loader, and the general path.

``load_dataset(name, split)`` looks the name up in a registry (``fashion-mnist``,
``cifar10``, ``cifar100``, ``imagefolder``, ``synthetic``); ``make_loader`` turns an
in-memory split into normalised, optionally augmented batches on the training device;
``as_loader`` does the same for anything the API accepts as data (an in-memory split, a
streamed image folder, a user's torch ``Dataset`` or ``DataLoader``).
"""

from __future__ import annotations

# Importing the dataset modules registers them.
from . import cifar, fashion_mnist, imagefolder, synthetic  # noqa: F401
from ._registry import list_datasets, load_dataset, register_dataset
from ._torch_loader import TorchLoader, dataset_info, is_map_dataset, length_of, subset_of
from .imagefolder import FolderDataset
from .info import DatasetInfo, ImageDataset
from .loader import BatchLoader, LoaderConfig, as_loader, make_loader

__all__ = [
    "BatchLoader",
    "DatasetInfo",
    "FolderDataset",
    "ImageDataset",
    "LoaderConfig",
    "TorchLoader",
    "as_loader",
    "dataset_info",
    "is_map_dataset",
    "length_of",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "register_dataset",
    "subset_of",
]
