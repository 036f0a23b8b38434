"""CIFAR-10 and CIFAR-100 in either official on-disk format (binary or pickled "python version").

Each image is 3072 bytes: the red plane (1024 bytes, 32 rows of 32), then green, then
blue, which is exactly uint8 ``[3, 32, 32]`` in row-major order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from ._registry import register_dataset
from ._safe_pickle import load_restricted
from .info import DatasetInfo, ImageDataset

_PIXELS = 3 * 32 * 32
_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its files in each format."""

    info: DatasetInfo
    bin_folder: str
    bin_files: dict[str, tuple[str, ...]]
    label_bytes: int  # CIFAR-100 records start with coarse + fine label; we use the last (fine)
    py_folder: str
    py_files: dict[str, tuple[str, ...]]
    py_label_key: bytes
    archive: str


# Mean and population std per channel over all pixels of the 50000 train images scaled to
# [0, 1] (not the mean of per-image stds, 0.2023/0.1994/0.2010, quoted in many repos).
_CIFAR10 = _Layout(
    info=DatasetInfo(
        name="cifar10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        mean=(0.49139968, 0.48215841, 0.44653091),
        std=(0.24703223, 0.24348513, 0.26158784),
    ),
    bin_folder="cifar-10-batches-bin",
    bin_files={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    label_bytes=1,
    py_folder="cifar-10-batches-py",
    py_files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    py_label_key=b"labels",
    archive="cifar-10-binary.tar.gz or cifar-10-python.tar.gz",
)
_CIFAR100 = _Layout(
    info=DatasetInfo(
        name="cifar100",
        num_classes=100,
        in_channels=3,
        image_size=32,
        mean=(0.50707516, 0.48654887, 0.44091784),
        std=(0.26733429, 0.25643846, 0.27615047),
    ),
    bin_folder="cifar-100-binary",
    bin_files={"train": ("train.bin",), "test": ("test.bin",)},
    label_bytes=2,
    py_folder="cifar-100-python",
    py_files={"train": ("train",), "test": ("test",)},
    py_label_key=b"fine_labels",
    archive="cifar-100-binary.tar.gz or cifar-100-python.tar.gz",
)


def _locate(layout: _Layout, split: str, data_dir: Path | None) -> tuple[str, list[Path]]:
    """Pick the format and files; ``data_dir`` may be the parent of the batches folder or the folder itself."""
    name = layout.info.name
    how = (
        f"download {layout.archive} from {_URL}, extract it, and pass the folder that contains "
        f"{layout.bin_folder}/ or {layout.py_folder}/ (or that folder itself) as --data-dir / data_dir="
    )
    if data_dir is None:
        raise DatasetError(f"{name} has no default location; {how}")
    if not data_dir.is_dir():
        raise DatasetError(f"{name} directory {data_dir} does not exist; {how}")
    # Binary first: it is faster to read and involves no unpickling.
    formats = (
        ("binary", layout.bin_folder, layout.bin_files[split]),
        ("python", layout.py_folder, layout.py_files[split]),
    )
    for fmt, folder, files in formats:
        for base in (data_dir / folder, data_dir):
            paths = [base / f for f in files]
            if all(p.is_file() for p in paths):
                return fmt, paths
    for fmt, folder, files in formats:
        base = data_dir / folder
        if base.is_dir():
            missing = [str(base / f) for f in files if not (base / f).is_file()]
            raise DatasetError(
                f"{name} ({fmt} format): missing {', '.join(missing)}; the extraction is incomplete, {how}"
            )
    expected = ", ".join(layout.bin_files[split] + layout.py_files[split])
    raise DatasetError(f"{name} {split} files not found in {data_dir} (looked for {expected}); {how}")


def _read_binary(path: Path, label_bytes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + _PIXELS
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DatasetError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte records "
            f"({label_bytes} label byte(s) + {_PIXELS} pixels); the file is truncated or of another "
            f"CIFAR variant, download it again from {_URL}"
        )
    rows = raw.reshape(-1, record)
    labels = rows[:, label_bytes - 1].astype(np.int64)
    _check_labels(path, labels, num_classes)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _read_python(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch: Any = load_restricted(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path}: expected a dict with keys b'data' and {label_key!r}, got {keys}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: b'data' must be a uint8 array [N, {_PIXELS}], got {got}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: {label_key!r} is not a list of integers ({e})") from e
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    _check_labels(path, labels, num_classes)
    return data.reshape(-1, 3, 32, 32), labels


def _check_labels(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.max()) if labels.max() >= num_classes else int(labels.min())
        raise DatasetError(f"{path}: label {bad} out of range [0, {num_classes}); wrong dataset or corrupt file")


def _load(layout: _Layout, split: str, data_dir: Path | None) -> ImageDataset:
    fmt, paths = _locate(layout, split, data_dir)
    n = layout.info.num_classes
    if fmt == "binary":
        parts = [_read_binary(p, layout.label_bytes, n) for p in paths]
    else:
        parts = [_read_python(p, layout.py_label_key, n) for p in paths]
    images = np.concatenate([p[0] for p in parts])  # also makes the arrays writable and contiguous
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset(layout.info, torch.from_numpy(images), torch.from_numpy(labels), split)


@register_dataset("cifar10")
def cifar10(split: str, data_dir: Path | None) -> ImageDataset:
    """CIFAR-10: 50000 train / 10000 test images of 32x32 RGB in 10 classes."""
    return _load(_CIFAR10, split, data_dir)


@register_dataset("cifar100")
def cifar100(split: str, data_dir: Path | None) -> ImageDataset:
    """CIFAR-100 with its 100 fine labels: 50000 train / 10000 test images of 32x32 RGB."""
    return _load(_CIFAR100, split, data_dir)
