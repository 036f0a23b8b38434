"""Fashion-MNIST from its four IDX files, zero-padded to 32x32 so CIFAR-sized models apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ._idx import read_idx
from ._registry import register_dataset
from .info import DatasetInfo, ImageDataset

#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
PAD = 2  # 28 + 2 * 2 = 32, the input size of the CIFAR model families

# Mean and population std of the 60000 train images after zero-padding to 32x32 and
# scaling to [0, 1]: float64 mean/std over all 60000*32*32 pixels of the real files
# (the unpadded 28x28 values would be 0.2860 / 0.3530).
INFO = DatasetInfo(
    name="fashion-mnist",
    num_classes=10,
    in_channels=1,
    image_size=28 + 2 * PAD,
    mean=(0.21900,),
    std=(0.33181,),
)

_FILES = {"train": "train", "test": "t10k"}
_HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist` (files go to "
    f"{DEFAULT_DIR}), or download the four files from "
    "https://github.com/zalandoresearch/fashion-mnist and pass their folder as --data-dir / data_dir="
)


def _find(folder: Path, stem: str) -> Path:
    # The gzipped names of the distribution, the names gunzip gives, and the dotted names
    # of some mirrors (``train-images.idx3-ubyte``).
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"Fashion-MNIST file {folder / (stem + '.gz')} (or {stem}) not found; {_HOW_TO_GET}")


@register_dataset("fashion-mnist")
def fashion_mnist(split: str, data_dir: Path | None) -> ImageDataset:
    """Load a split (train: 60000, test: 10000) as uint8 ``[N, 1, 32, 32]`` with a zero border."""
    folder = data_dir if data_dir is not None else DEFAULT_DIR
    if not folder.is_dir():
        raise DatasetError(f"Fashion-MNIST directory {folder} does not exist; {_HOW_TO_GET}")
    prefix = _FILES[split]
    image_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(image_path, expect_ndim=3)
    labels = read_idx(label_path, expect_ndim=1)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{image_path}: expected uint8 images of 28x28, got {images.dtype} {images.shape[1:]}")
    if labels.dtype != np.uint8:
        raise DatasetError(f"{label_path}: expected uint8 labels, got {labels.dtype}")
    if len(labels) != len(images):
        raise DatasetError(
            f"{label_path} holds {len(labels)} labels but {image_path} holds {len(images)} images; "
            "the files come from different downloads, fetch both again"
        )
    if len(labels) and int(labels.max()) >= INFO.num_classes:
        raise DatasetError(f"{label_path}: label {int(labels.max())} out of range [0, {INFO.num_classes})")
    padded = np.zeros((len(images), 1, INFO.image_size, INFO.image_size), dtype=np.uint8)
    padded[:, 0, PAD:-PAD, PAD:-PAD] = images
    return ImageDataset(INFO, torch.from_numpy(padded), torch.from_numpy(labels.astype(np.int64)), split)
