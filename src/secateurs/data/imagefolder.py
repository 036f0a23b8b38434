"""ImageNet-style folders (``<root>/<split>/<class>/<image>``), streamed from disk or held in memory.

Every image is decoded with PIL and resized with torch ops (shorter side to ``image_size``,
bilinear with antialiasing, then a centre crop to a square), the same function in both modes:

* streamed (the default): a torch ``Dataset`` that decodes one image per ``__getitem__``, in
  DataLoader workers when ``num_workers`` is set. It keeps only the relative paths (one
  byte buffer, which forked workers share without copying) and the labels, so memory does
  not grow with the images: ImageNet's 1.28 M fit.
* ``in_memory=True``: the whole split decoded once into uint8, for the in-memory fast path
  (no decoding during training), for folders that fit in ``max_memory_gb``.

Both give the same samples, normalised with the same mean/std (from at most
:data:`STATS_IMAGES` train images), so a run can switch modes without changing its numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from ._registry import register_dataset
from .info import DatasetInfo, ImageDataset

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


def resize_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[C, H, W]`` to uint8 ``[C, size, size]``: shorter side to ``size``, centre crop.

    Torch ops rather than PIL's so the transform is the same code wherever it runs (a
    worker, the main process, a GPU if one day the decode moves there).
    """
    _, h, w = image.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        image = x[0].round_().clamp_(0, 255).to(torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[:, top : top + size, left : left + size].contiguous()


def _decode(path: Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale, never below size
            pixels = np.array(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"imagefolder: cannot decode {path} ({e}); delete or replace the file") from e
    return resize_crop(torch.from_numpy(pixels).permute(2, 0, 1), size)


def _decode_all(paths: list[Path], size: int) -> torch.Tensor:
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def work(i: int) -> None:
        out[i] = _decode(paths[i], size)

    # PIL and torch release the GIL while decoding and resizing, so threads scale without pickling.
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(work, range(len(paths))))
    return out


def _stats_subset(n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, num=min(n, STATS_IMAGES)).round().astype(np.int64))


def _folder_stats(
    count: int, decode: Callable[[np.ndarray], torch.Tensor], chunk: int = 256
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the evenly spaced stats subset, decoded ``chunk`` images at a time.

    Both modes call this with the same chunks, so their float64 sums, hence their
    normalisation, agree to the last bit; and a streamed folder never holds more than one
    chunk of decoded images.
    """
    subset = _stats_subset(count)
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for start in range(0, len(subset), chunk):
        x = decode(subset[start : start + chunk]).to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / pixels
    std = (total_sq / pixels - mean.square()).clamp_min(0.0).sqrt().clamp_min(1.0)  # as channel_stats
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


class FolderDataset(Dataset):
    """A split read from disk one image at a time; samples are ``(float32 [3, S, S], label)``.

    Samples are normalised with ``info.mean/std`` by the same float32 ops, in the same
    order, as :class:`~.loader.BatchLoader` applies to the in-memory images, so both give
    identical batches. ``info`` may be replaced (evaluation normalises as the checkpoint
    was trained): it is read at every sample. No random augmentation: give the training
    set an in-memory folder, or a Dataset of your own with its augmentation, to have one.

    Attributes:
        info: the dataset's :class:`DatasetInfo`.
        root: the split folder.
        labels: int64 ``[N]``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        classes: class names by label.
    """

    def __init__(
        self, info: DatasetInfo, root: Path, paths: list[Path], labels: list[int], split: str, classes: list[str]
    ) -> None:
        self.info = info
        self.root = root
        # Fixed-width bytes in one numpy buffer: a list of str would be copied page by page
        # into every forked worker as its reference counts are touched.
        self._paths = np.array([os.fsencode(p.relative_to(root)) for p in paths])
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.split = split
        self.classes = classes

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> Path:
        return self.root / os.fsdecode(self._paths[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = _decode(self.path(i), self.info.image_size)
        shift = torch.tensor(self.info.mean).mul(255).view(-1, 1, 1)
        scale = torch.tensor(self.info.std).mul(255).reciprocal().view(-1, 1, 1)
        return image.float().sub_(shift).mul_(scale), int(self.labels[i])

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}, n={len(self)}, size={self.info.image_size}, classes={len(self.classes)})"


@register_dataset("imagefolder", splits=("train", "val", "test"))
def imagefolder(
    split: str, data_dir: Path | None, image_size: int = 224, in_memory: bool = False, max_memory_gb: float = 8.0
) -> FolderDataset | ImageDataset:
    """Read ``<data_dir>/<split>/<class>/*`` (``test`` falls back to ``val``), classes sorted by name.

    Args:
        image_size: side of the square images the model sees.
        in_memory: decode the whole split once into memory (fast training, no augmentation
            lost) instead of streaming it from disk; for folders that fit.
        max_memory_gb: with ``in_memory``, refuse folders whose decoded images would need more
            memory (GiB) than this.
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
    if in_memory:
        need_gb = len(paths) * 3 * image_size**2 / 2**30
        if need_gb > max_memory_gb:
            raise DatasetError(
                f"imagefolder: {len(paths)} images under {folder} at {image_size}x{image_size} need "
                f"{need_gb:.1f} GiB in memory, above max_memory_gb={max_memory_gb}; stream it instead (drop "
                "in_memory), lower image_size, or raise max_memory_gb if the machine has the memory"
            )
        images = _decode_all(paths, image_size)
    stats_paths = paths if train_folder is None or folder == train_folder else _scan(train_folder, classes)[0]
    if in_memory and stats_paths is paths:
        mean, std = _folder_stats(len(paths), lambda idx: images[torch.from_numpy(idx)])
    else:
        mean, std = _folder_stats(len(stats_paths), lambda idx: _decode_all([stats_paths[i] for i in idx], image_size))
    info = DatasetInfo("imagefolder", len(classes), 3, image_size, mean, std)
    if in_memory:
        return ImageDataset(info, images, torch.tensor(labels, dtype=torch.int64), split, classes)
    return FolderDataset(info, folder, paths, labels, split, classes)
