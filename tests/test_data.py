"""Tests of secateurs.data: the file parsers against files written here in the exact
on-disk formats, the real Fashion-MNIST when installed, and the batch loader against
per-sample reference implementations."""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from secateurs.data import (
    DatasetInfo,
    ImageDataset,
    LoaderConfig,
    list_datasets,
    load_dataset,
    make_loader,
)
from secateurs.data._idx import read_idx
from secateurs.data.augment import crop_flip, draw_crop_flip, pad_images
from secateurs.errors import ConfigError, DatasetError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX / Fashion-MNIST files


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """Write ``arr`` (uint8) in the IDX format: 00 00 08 ndim, big-endian uint32 dims, data."""
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_fashion(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, (n,), dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_read_idx_round_trips(tmp_path: Path, gz: bool) -> None:
    arr = RNG.integers(0, 256, (4, 3, 5), dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a-idx3-ubyte", arr, gz)), arr)


def _bad_magic(raw: bytes) -> bytes:
    return b"\x01\x02" + raw[2:]


def _truncated(raw: bytes) -> bytes:
    return raw[:-7]


def _padded(raw: bytes) -> bytes:
    return raw + b"\x00"


def _bad_type(raw: bytes) -> bytes:
    return raw[:2] + b"\x42" + raw[3:]


@pytest.mark.parametrize("corrupt", [_bad_magic, _truncated, _padded, _bad_type])
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_read_idx_rejects_malformed_file_naming_path(tmp_path: Path, corrupt, gz: bool) -> None:
    arr = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    raw = corrupt(bytes([0, 0, 8, 3]) + struct.pack(">3I", *arr.shape) + arr.tobytes())
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetError, match=str(path)):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path: Path) -> None:
    arr = RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", arr, gz=True)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=f"{path}.*truncated"):
        read_idx(path)


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_fashion_mnist_pads_idx_images_to_32(tmp_path: Path, gz: bool, split: str) -> None:
    images, labels = write_fashion(tmp_path, gz=gz)["train" if split == "train" else "t10k"]
    ds = load_dataset("fashion-mnist", split, data_dir=tmp_path)
    assert ds.images.shape == (len(images), 1, 32, 32) and ds.split == split
    assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(images))
    assert ds.images.sum() == ds.images[:, :, 2:30, 2:30].sum()  # border is zero
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))


def test_fashion_mnist_rejects_label_out_of_range(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    path = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10], np.uint8), gz=True)
    with pytest.raises(DatasetError, match=f"{path}.*label 10 out of range"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_rejects_count_mismatch(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), gz=True)
    with pytest.raises(DatasetError, match="4 labels.*5 images"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_directory_says_how_to_install(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=missing)
    assert str(missing) in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)


def test_fashion_mnist_missing_file_names_it(tmp_path: Path) -> None:
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=str(tmp_path / "t10k-labels-idx1-ubyte.gz")):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


@pytest.fixture(scope="module")
def real_fashion() -> dict[str, ImageDataset]:
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} absent: `apt-get install dataset-fashion-mnist` to run the real-data checks")
    return {split: load_dataset("fashion-mnist", split) for split in ("train", "test")}


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist_shapes_labels_and_border(real_fashion: dict[str, ImageDataset], split: str, n: int) -> None:
    ds = real_fashion[split]
    assert ds.images.shape == (n, 1, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert ds.labels.unique().tolist() == list(range(10))
    border = ds.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert not border.any()


def test_real_fashion_mnist_mean_std_constants(real_fashion: dict[str, ImageDataset]) -> None:
    """Recomputed exactly from the histogram of the padded train pixels."""
    counts = torch.bincount(real_fashion["train"].images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * values).sum() / counts.sum()
    std = ((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt()
    info = real_fashion["train"].info
    assert info.mean[0] == pytest.approx(mean.item(), abs=1e-3)
    assert info.std[0] == pytest.approx(std.item(), abs=1e-3)


# ---------------------------------------------------------------- CIFAR files


def cifar_bytes(image: np.ndarray) -> bytes:
    """The 3072 bytes of one CIFAR image: red plane, green plane, blue plane, each row-major."""
    return b"".join(image[c].tobytes(order="C") for c in range(3))


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as in the original CIFAR batches (written by
    Python 2 cPickle, protocol 2), which therefore name no global but numpy's."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dump_py2(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    raw = buf.getvalue()
    # Python 2 numpy named the module numpy.core.multiarray; GLOBAL args are plain lines.
    fixed = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in fixed and b"_codecs" not in fixed
    return fixed


PICKLERS = {"python2-original": dump_py2, "python3-protocol2": lambda obj: pickle.dumps(obj, protocol=2)}


def make_cifar(n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    fine = RNG.integers(0, num_classes, (n,))
    coarse = RNG.integers(0, 20, (n,))
    return images, fine, coarse


def write_cifar(root: Path, variant: str, fmt: str, pickler: str = "python2-original") -> dict[str, tuple]:
    """Write tiny train/test files of ``variant`` in ``fmt`` under ``root``; returns the truth."""
    num_classes = 10 if variant == "cifar10" else 100
    truth = {}
    if variant == "cifar10":
        folder = root / ("cifar-10-batches-bin" if fmt == "binary" else "cifar-10-batches-py")
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    else:
        folder = root / ("cifar-100-binary" if fmt == "binary" else "cifar-100-python")
        files = {"train": ["train"], "test": ["test"]}
    folder.mkdir(parents=True)
    for split, names in files.items():
        parts = []
        for name in names:
            images, fine, coarse = make_cifar(3, num_classes)
            parts.append((images, fine))
            if fmt == "binary":
                labels = [bytes([f]) if variant == "cifar10" else bytes([c, f]) for f, c in zip(fine, coarse)]
                data = b"".join(lab + cifar_bytes(img) for lab, img in zip(labels, images))
                (folder / f"{name}.bin").write_bytes(data)
            else:
                flat = np.stack([np.frombuffer(cifar_bytes(img), np.uint8) for img in images])
                batch = {
                    b"batch_label": b"training batch",
                    b"data": flat,
                    b"filenames": [b"img_%d.png" % i for i in range(len(images))],
                }
                if variant == "cifar10":
                    batch[b"labels"] = [int(f) for f in fine]
                else:
                    batch[b"fine_labels"] = [int(f) for f in fine]
                    batch[b"coarse_labels"] = [int(c) for c in coarse]
                (folder / name).write_bytes(PICKLERS[pickler](batch))
        truth[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return truth


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["binary", "python"])
@pytest.mark.parametrize("point_at", ["parent", "batches-folder"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_formats_round_trip(tmp_path: Path, variant: str, fmt: str, point_at: str, split: str) -> None:
    images, labels = write_cifar(tmp_path, variant, fmt)[split]
    data_dir = tmp_path if point_at == "parent" else next(tmp_path.iterdir())
    ds = load_dataset(variant, split, data_dir=data_dir)
    assert ds.info.num_classes == (10 if variant == "cifar10" else 100)
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))


@pytest.mark.parametrize("pickler", sorted(PICKLERS))
def test_cifar_python_batches_from_either_python(tmp_path: Path, pickler: str) -> None:
    truth = write_cifar(tmp_path, "cifar10", "python", pickler)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(truth["test"][0]))


def test_cifar_python_refuses_malicious_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_cifar(tmp_path, "cifar10", "python")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DatasetError, match=f"{path}.*refused.*system"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar_python_refuses_codecs_beyond_latin1(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", "python")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVbase64\ntR.")  # protocol 0: encode('abc', 'base64')
    with pytest.raises(DatasetError, match=f"{path}.*base64"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar_binary_rejects_wrong_record_size(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar100", "binary")
    path = tmp_path / "cifar-100-binary" / "test.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DatasetError, match=f"{path}.*3074-byte records"):
        load_dataset("cifar100", "test", data_dir=tmp_path)


def test_cifar_rejects_label_out_of_range(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", "binary")
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 10
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=f"{path}.*label 10 out of range"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar_missing_files_give_download_url(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{tmp_path}.*https://www.cs.toronto.edu/~kriz/cifar.html"):
        load_dataset("cifar10", data_dir=tmp_path)


# ---------------------------------------------------------------- image folders

COLOURS = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}


def write_folder(root: Path, splits: tuple[str, ...] = ("train", "val")) -> None:
    for split in splits:
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i, size in enumerate([(40, 30), (30, 50)]):  # non-square: exercises resize + crop
                Image.new("RGB", size, colour).save(root / split / name / f"{i}.png")


def test_imagefolder_decodes_resizes_and_labels_by_sorted_class(tmp_path: Path) -> None:
    write_folder(tmp_path)
    train = load_dataset("imagefolder", "train", data_dir=tmp_path, image_size=16, in_memory=True)
    assert train.images.shape == (6, 3, 16, 16) and train.classes == ["ant", "bee", "cat"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for image, label in zip(train.images, train.labels):
        expected = torch.tensor(COLOURS[train.classes[label]], dtype=torch.uint8)
        assert torch.equal(image, expected.view(3, 1, 1).expand(3, 16, 16))
    assert train.info.mean == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-6)
    test = load_dataset("imagefolder", "test", data_dir=tmp_path, image_size=16)  # falls back to val/
    assert test.info == train.info and len(test) == 6


def test_imagefolder_refuses_too_large_for_memory(tmp_path: Path) -> None:
    write_folder(tmp_path, ("train",))
    with pytest.raises(DatasetError, match="max_memory_gb"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=4096, in_memory=True, max_memory_gb=0.1)


def test_imagefolder_names_undecodable_file(tmp_path: Path) -> None:
    write_folder(tmp_path, ("train",))
    bad = tmp_path / "train" / "bee" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=str(bad)):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=8)


# ---------------------------------------------------------------- registry and info


def test_registry_lists_datasets_and_rejects_unknown_names() -> None:
    assert {"fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"} <= set(list_datasets())
    with pytest.raises(ConfigError, match="cifar10"):
        load_dataset("cifar-10")
    with pytest.raises(ConfigError, match="no split 'validation'"):
        load_dataset("synthetic", "validation")
    with pytest.raises(ConfigError, match="num_sample"):
        load_dataset("synthetic", num_sample=3)


def test_dataset_info_json_round_trip() -> None:
    info = load_dataset("synthetic", num_samples=16).info
    assert DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


# ---------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def synth() -> ImageDataset:
    return load_dataset("synthetic", num_samples=512, num_classes=10, in_channels=3, image_size=32)


def normalise(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (images.double() / 255 - mean) / std


def test_eval_loader_is_sequential_normalised_and_complete(synth: ImageDataset) -> None:
    loader = make_loader(synth, LoaderConfig(batch_size=100, train=False))
    batches = list(loader)
    assert len(loader) == len(batches) == 6 and loader.num_samples == 512
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (512, 3, 32, 32)
    assert torch.equal(y, synth.labels)
    torch.testing.assert_close(x.double(), normalise(synth.images, synth.info), atol=1e-5, rtol=0)


def test_train_loader_shuffles_every_sample_once(synth: ImageDataset) -> None:
    loader = make_loader(synth, LoaderConfig(batch_size=64, augment=False))
    x = torch.cat([b[0] for b in loader]).double()
    mean = torch.tensor(synth.info.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(synth.info.std, dtype=torch.float64).view(1, -1, 1, 1)
    pixels = (x * std + mean).mul(255).round().to(torch.uint8).flatten(1)  # undo the normalisation
    original = synth.images.flatten(1)
    assert pixels.shape == original.shape and not torch.equal(pixels, original)
    assert torch.equal(torch.unique(pixels, dim=0), torch.unique(original, dim=0))


def test_crop_flip_gather_equals_per_sample_reference(synth: ImageDataset) -> None:
    padding, size = 4, 32
    params = draw_crop_flip(len(synth), padding, True, seed=7, epoch=2)
    index = torch.randperm(len(synth), generator=torch.Generator().manual_seed(0))[:64]
    got = crop_flip(pad_images(synth.images, padding), index, params, size)
    for out, i in zip(got, index.tolist()):
        t, l = int(params.top[i]), int(params.left[i])
        ref = F.pad(synth.images[i], (padding,) * 4)[:, t : t + size, l : l + size]
        assert torch.equal(out, ref.flip(-1) if params.flip[i] else ref)
    assert params.flip[index].any() and not params.flip[index].all()


def test_train_batch_equals_reference_augmentation(synth: ImageDataset) -> None:
    config = LoaderConfig(batch_size=32, seed=5)
    loader = make_loader(synth, config)
    loader.set_epoch(3)
    x, _ = next(iter(loader))
    sampler = torch.utils.data.distributed.DistributedSampler(range(len(synth)), 1, 0, seed=5)
    sampler.set_epoch(3)
    index = list(sampler)[:32]
    params = draw_crop_flip(len(synth), config.crop_padding, True, seed=5, epoch=3)
    refs = []
    for i in index:
        t, l = int(params.top[i]), int(params.left[i])
        crop = F.pad(synth.images[i], (4, 4, 4, 4))[:, t : t + 32, l : l + 32]
        refs.append(crop.flip(-1) if params.flip[i] else crop)
    torch.testing.assert_close(x.double(), normalise(torch.stack(refs), synth.info), atol=1e-5, rtol=0)


def test_same_seed_and_epoch_replay_and_new_epoch_differs(synth: ImageDataset) -> None:
    def epoch_batches(epoch: int) -> list[torch.Tensor]:
        loader = make_loader(synth, LoaderConfig(batch_size=128, seed=3))  # a fresh loader, as after resume
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    first, again, other = epoch_batches(1), epoch_batches(1), epoch_batches(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_two_ranks_split_each_global_batch_of_one_process(synth: ImageDataset, train: bool) -> None:
    """Rank r takes positions r::2 of the global order, so at every step the two half batches
    together are exactly the single-process batch (augmentation included)."""

    def batches(batch_size: int, rank: int, world_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_loader(synth, LoaderConfig(batch_size=batch_size, train=train, seed=11), rank, world_size)
        loader.set_epoch(4)
        return list(loader)

    single, rank0, rank1 = batches(64, 0, 1), batches(32, 0, 2), batches(32, 1, 2)
    assert len(single) == len(rank0) == len(rank1) == 8
    for (x, y), (x0, y0), (x1, y1) in zip(single, rank0, rank1):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_drop_last_and_batch_count() -> None:
    ds = load_dataset("synthetic", num_samples=100)
    assert [len(x) for x, _ in make_loader(ds, LoaderConfig(batch_size=32))] == [32, 32, 32, 4]
    loader = make_loader(ds, LoaderConfig(batch_size=32, drop_last=True))
    assert len(loader) == 3 and [len(x) for x, _ in loader] == [32, 32, 32]
    assert make_loader(ds, LoaderConfig(batch_size=32), rank=1, world_size=3).num_samples == math.ceil(100 / 3)


def test_loader_rejects_bad_rank_and_batch_size(synth: ImageDataset) -> None:
    with pytest.raises(ConfigError, match="rank 2"):
        make_loader(synth, LoaderConfig(), rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch_size"):
        LoaderConfig(batch_size=0)


def test_synthetic_is_learnable_through_augmenting_loader() -> None:
    torch.manual_seed(0)
    ds = load_dataset("synthetic", num_samples=256, image_size=16)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = make_loader(ds, LoaderConfig(batch_size=64, crop_padding=2))
    losses = []
    for epoch in range(8):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4  # ~2.3 -> ~0.7 in 32 steps
