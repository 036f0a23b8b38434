"""``imagefolder`` streamed from disk gives the batches the in-memory mode gives: same order
with shuffling off, same values, whether decoded in the main process or in workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from secateurs.data import FolderDataset, ImageDataset, LoaderConfig, as_loader, load_dataset
from secateurs.data.imagefolder import resize_crop
from secateurs.errors import DatasetError

CLASSES = ("ant", "bee", "cat", "dog")


def write_images(root: Path, per_class: int, seed: int = 0) -> None:
    """Random RGB/grey images of mixed sizes and aspect ratios, half JPEG and half PNG."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", per_class // 4)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(12, 40, size=2)
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c % 3] //= 2  # a class-dependent tint
                image = Image.fromarray(pixels)
                if i % 7 == 3:
                    image = image.convert("L")  # greyscale files are converted to RGB
                image.save(folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    write_images(root, per_class=80)  # 320 train and 80 val images
    return root


@pytest.mark.parametrize("split, workers", [("train", 0), ("train", 2), ("test", 2)])
def test_streamed_batches_equal_the_in_memory_ones(folder: Path, split: str, workers: int) -> None:
    streamed = load_dataset("imagefolder", split, folder, image_size=16)
    memory = load_dataset("imagefolder", split, folder, image_size=16, in_memory=True)
    assert isinstance(streamed, FolderDataset) and isinstance(memory, ImageDataset)
    assert streamed.info == memory.info and len(streamed) == len(memory) == (320 if split == "train" else 80)
    config = LoaderConfig(batch_size=64, train=False, num_workers=workers)
    pairs = list(zip(as_loader(streamed, config), as_loader(memory, config), strict=True))
    for (xs, ys), (xm, ym) in pairs:
        assert torch.equal(ys, ym) and torch.equal(xs, xm)
    assert sum(len(y) for (_, y), _ in pairs) == len(memory)


def test_streamed_dataset_keeps_paths_not_pixels(folder: Path) -> None:
    streamed = load_dataset("imagefolder", "train", folder, image_size=16)
    assert not any(
        isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 4 for v in vars(streamed).values()
    )
    assert streamed.path(0) == folder / "train" / "ant" / "000.png"
    x, y = streamed[len(streamed) - 1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 3


def test_stream_follows_a_replaced_normalisation(folder: Path) -> None:
    """Evaluation normalises as the checkpoint was trained: replacing ``info`` must take effect."""
    import dataclasses

    streamed = load_dataset("imagefolder", "test", folder, image_size=16)
    raw = resize_crop(torch.from_numpy(np.array(Image.open(streamed.path(0)).convert("RGB"))).permute(2, 0, 1), 16)
    streamed.info = dataclasses.replace(streamed.info, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
    assert torch.equal(streamed[0][0], raw.float())


def test_resize_crop_matches_pil_bilinear_within_one_level() -> None:
    """The torch transform against PIL's antialiased bilinear resize, on a smooth image, then the centre crop."""
    yy, xx = np.mgrid[0:60, 0:90]
    pixels = np.stack([(xx * 2.8) % 256, (yy * 4.1) % 256, (xx + yy) * 1.7 % 256], -1).astype(np.uint8)
    ours = resize_crop(torch.from_numpy(pixels).permute(2, 0, 1), 20)
    pil = np.asarray(Image.fromarray(pixels).resize((30, 20), Image.Resampling.BILINEAR)).astype(int)
    reference = torch.from_numpy(pil[:, 5:25]).permute(2, 0, 1)
    assert ours.shape == (3, 20, 20)
    assert (ours.int() - reference).abs().max() <= 1


def test_an_undecodable_file_is_named_when_streamed(tmp_path: Path) -> None:
    write_images(tmp_path, per_class=4)
    bad = tmp_path / "val" / "bee" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    streamed = load_dataset("imagefolder", "test", tmp_path, image_size=8)
    index = next(i for i in range(len(streamed)) if streamed.path(i) == bad)
    with pytest.raises(DatasetError, match=str(bad)):
        streamed[index]
