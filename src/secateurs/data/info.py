"""What a dataset is (``DatasetInfo``) and the in-memory container of its images (``ImageDataset``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DatasetError


@dataclass(frozen=True)
class DatasetInfo:
    """Everything a model and a checkpoint need to know about a dataset, without its pixels.

    Attributes:
        name: registered dataset name (``"cifar10"``, ...).
        num_classes: size of the classifier output.
        in_channels: channels of the images the model sees (1 for Fashion-MNIST).
        image_size: side of the square images the model sees, after any padding/cropping.
        mean: per-channel mean of the train images scaled to [0, 1].
        std: per-channel standard deviation of the train images scaled to [0, 1].
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # Coerce so that an info rebuilt from JSON (lists) compares equal to the original.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"dataset {self.name!r}: mean {self.mean} and std {self.std} need one value "
                f"per channel ({self.in_channels})"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"dataset {self.name!r}: std {self.std} must be positive (a constant channel?)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in checkpoints so evaluation normalises exactly as training did."""
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so newer checkpoints still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ImageDataset:
    """A whole split held in memory as tensors, so batches are built by indexing, not by workers.

    Attributes:
        info: the dataset's :class:`DatasetInfo`.
        images: uint8 ``[N, C, H, W]`` on the CPU, with ``H == W == info.image_size``.
        labels: int64 ``[N]`` in ``[0, info.num_classes)``.
        split: ``"train"`` or ``"test"`` (or ``"val"`` for image folders).
        classes: class names by label, where the dataset has them (image folders), else None.
    """

    def __init__(
        self,
        info: DatasetInfo,
        images: torch.Tensor,
        labels: torch.Tensor,
        split: str,
        classes: list[str] | None = None,
    ) -> None:
        expected = (info.in_channels, info.image_size, info.image_size)
        if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise DatasetError(
                f"dataset {info.name!r} ({split}): images must be uint8 [N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}], got {images.dtype} {list(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise DatasetError(
                f"dataset {info.name!r} ({split}): labels must be int64 [{images.shape[0]}], "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
            raise DatasetError(
                f"dataset {info.name!r} ({split}): labels span [{int(labels.min())}, {int(labels.max())}], "
                f"outside [0, {info.num_classes})"
            )
        self.info = info
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.split = split
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """One raw sample ``(uint8 [C, H, W], label)``; for inspection, training uses :func:`make_loader`."""
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        i = self.info
        return (
            f"ImageDataset({i.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={list(self.images.shape[1:])}, classes={i.num_classes})"
        )


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 ``[N, C, H, W]`` images scaled to [0, 1].

    Accumulates sums in float64 over chunks so a large dataset never needs a float copy
    of itself. The std is floored at one grey level (1/255) so a constant channel cannot
    make normalisation divide by zero.
    """
    if images.shape[0] == 0:
        raise DatasetError("cannot compute mean/std of an empty set of images")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt().clamp_min(1.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())
