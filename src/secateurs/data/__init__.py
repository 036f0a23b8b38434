"""Datasets held in memory as uint8 tensors, and a tensor-only batch loader.

``load_dataset(name, split)`` looks the name up in a registry (``fashion-mnist``,
``cifar10``, ``cifar100``, ``imagefolder``, ``synthetic``); ``make_loader`` turns a split
into normalised, optionally augmented batches on the training device.
"""
from __future__ import annotations

# Importing the dataset modules registers them.
from . import cifar, fashion_mnist, imagefolder, synthetic  # noqa: F401
from ._registry import list_datasets, load_dataset, register_dataset
from .info import DatasetInfo, ImageDataset
from .loader import BatchLoader, LoaderConfig, make_loader

__all__ = [
    "BatchLoader",
    "DatasetInfo",
    "ImageDataset",
    "LoaderConfig",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "register_dataset",
]
