"""Seeded random images that a small CNN can learn in a few steps, for tests and smoke runs.

Each class has a smooth random pattern (an upsampled 4x4 grid per channel); a sample is
its class pattern plus pixel noise. Smooth patterns survive random crops and flips, so the
loss falls with augmentation on, and nothing touches the disk.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._registry import register_dataset
from .info import DatasetInfo, ImageDataset, channel_stats

_SPLIT_STREAM = {"train": 1, "test": 2}  # test samples are new draws around the same patterns


def _patterns(num_classes: int, in_channels: int, image_size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, in_channels, 4, 4, generator=g) * 160 + 48
    return F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)


def _samples(patterns: torch.Tensor, num_samples: int, seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1000003 + stream)
    labels = torch.randint(0, patterns.shape[0], (num_samples,), generator=g)
    noise = torch.randn((num_samples, *patterns.shape[1:]), generator=g) * 40
    images = (patterns[labels] + noise).round().clamp(0, 255).to(torch.uint8)
    return images, labels


@register_dataset("synthetic")
def synthetic(
    split: str,
    data_dir: Path | None,
    num_samples: int = 512,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    seed: int = 0,
) -> ImageDataset:
    """Generate a split; ``data_dir`` is ignored. Same arguments, same tensors, on every machine."""
    for key, value in (
        ("num_samples", num_samples),
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("image_size", image_size),
    ):
        if value < 1:
            raise ConfigError(f"synthetic: {key} must be positive, got {value}")
    patterns = _patterns(num_classes, in_channels, image_size, seed)
    images, labels = _samples(patterns, num_samples, seed, _SPLIT_STREAM[split])
    # Normalise with the train split's statistics, as for the real datasets.
    train_images = images if split == "train" else _samples(patterns, num_samples, seed, _SPLIT_STREAM["train"])[0]
    mean, std = channel_stats(train_images)
    info = DatasetInfo("synthetic", num_classes, in_channels, image_size, mean, std)
    return ImageDataset(info, images, labels, split)
