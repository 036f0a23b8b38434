"""ImageNet-style folders (``<root>/<split>/<class>/<image>``) decoded once into memory.

Every image is decoded with PIL, resized so its shorter side is ``image_size`` and
centre-cropped to a square, then stored as uint8: training then costs no decoding at all.
That suits small and medium folders (a few GB at the chosen size); a folder that would need
more memory than ``max_memory_gb`` is refused with advice rather than swapping the machine.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ConfigError, DatasetError
from ._registry import register_dataset
from .info import DatasetInfo, ImageDataset, channel_stats

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
#: Mean/std come from at most this many train images, evenly spaced, so that the train and
#: the test split compute exactly the same normalisation without decoding the whole train set twice.
STATS_IMAGES = 2000
_LAYOUT = "expected <data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image>"


def _split_folder(root: Path, split: str) -> Path:
    names = {"train": ("train",), "val": ("val",), "test": ("test", "val")}[split]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DatasetError(f"imagefolder: no {' or '.join(str(root / n) for n in names)} folder; {_LAYOUT}")


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"imagefolder: {folder} has no class sub-folders; {_LAYOUT}")
    return classes


def _scan(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in index)
    if unknown:
        raise DatasetError(
            f"imagefolder: {folder} has class folder(s) {unknown[:5]} that the train split lacks; "
            "every split must use the train split's class names"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for c in classes:
        if not (folder / c).is_dir():
            continue
        files = sorted(p for p in (folder / c).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        paths += files
        labels += [index[c]] * len(files)
    if not paths:
        raise DatasetError(f"imagefolder: no images ({', '.join(sorted(EXTENSIONS))}) under {folder}; {_LAYOUT}")
    return paths, labels


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale, never below size
            img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"imagefolder: cannot decode {path} ({e}); delete or replace the file") from e


def _decode_all(paths: list[Path], size: int) -> np.ndarray:
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = _decode(paths[i], size)

    # PIL releases the GIL while decoding and resizing, so threads scale without pickling.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths))))
    return out


def _stats_subset(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, num=min(n, STATS_IMAGES)).round().astype(np.int64))


@register_dataset("imagefolder", splits=("train", "val", "test"))
def imagefolder(split: str, data_dir: Path | None, image_size: int = 224, max_memory_gb: float = 8.0) -> ImageDataset:
    """Load ``<data_dir>/<split>/<class>/*`` (``test`` falls back to ``val``), classes sorted by name.

    Args:
        image_size: side of the stored square images.
        max_memory_gb: refuse folders whose decoded images would need more memory (GiB) than this.
    """
    if data_dir is None:
        raise DatasetError(f"imagefolder needs --data-dir / data_dir=; {_LAYOUT}")
    if not data_dir.is_dir():
        raise DatasetError(f"imagefolder directory {data_dir} does not exist; {_LAYOUT}")
    if image_size < 1:
        raise ConfigError(f"imagefolder: image_size must be positive, got {image_size}")
    folder = _split_folder(data_dir, split)
    train_folder = data_dir / "train" if (data_dir / "train").is_dir() else None
    classes = _classes(train_folder or folder)
    paths, labels = _scan(folder, classes)

    need_gb = len(paths) * 3 * image_size**2 / 2**30
    if need_gb > max_memory_gb:
        raise DatasetError(
            f"imagefolder: {len(paths)} images under {folder} at {image_size}x{image_size} need "
            f"{need_gb:.1f} GiB in memory, above max_memory_gb={max_memory_gb}; lower image_size, use a "
            "subset of the folder, or raise max_memory_gb if the machine has the memory"
        )
    images = _decode_all(paths, image_size)

    if train_folder is None or folder == train_folder:
        stat_images = images[_stats_subset(len(images))]
    else:
        train_paths, _ = _scan(train_folder, classes)
        stat_images = _decode_all([train_paths[i] for i in _stats_subset(len(train_paths))], image_size)
    mean, std = channel_stats(torch.from_numpy(stat_images))
    info = DatasetInfo("imagefolder", len(classes), 3, image_size, mean, std)
    return ImageDataset(info, torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), split, classes)
