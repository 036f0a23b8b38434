"""A user's own data: any map-style Dataset of ``(image, label)`` or any DataLoader goes wherever
an in-memory ImageDataset goes (training, evaluation, calibration, pruning), with workers and
under torchrun, and gives the batches and results the in-memory path gives for the same samples."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch
from _commands import TORCHRUN, run_ok, subprocess_env
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from user_models import PatternDataset, tiny_resnet

import secateurs
from secateurs.data import DatasetInfo, ImageDataset, LoaderConfig, as_loader, make_loader
from secateurs.errors import ConfigError, DatasetError
from secateurs.pipeline.run import calibration_batches
from secateurs.train import TrainConfig, train

TESTS = Path(__file__).resolve().parent


class NormalisedPairs(Dataset):
    """The samples of an ImageDataset, normalised per sample with the loader's own float32 ops:
    what a user's Dataset over the same images would return."""

    def __init__(self, data: ImageDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        info = self.data.info
        shift = torch.tensor(info.mean).mul(255).view(-1, 1, 1)
        scale = torch.tensor(info.std).mul(255).reciprocal().view(-1, 1, 1)
        return self.data.images[i].float().sub_(shift).mul_(scale), int(self.data.labels[i])


@pytest.fixture
def images() -> ImageDataset:
    return secateurs.load_dataset("synthetic", "train", num_samples=100, num_classes=4, image_size=16)


def test_dataset_batches_come_in_order_on_the_device(images: ImageDataset) -> None:
    data = NormalisedPairs(images)
    batches = list(as_loader(data, LoaderConfig(batch_size=32, train=False)))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    expected = torch.stack([data[i][0] for i in range(100)])
    assert torch.equal(torch.cat([x for x, _ in batches]), expected)
    assert torch.cat([y for _, y in batches]).tolist() == images.labels.tolist()


def test_dataset_batches_equal_the_in_memory_ones(images: ImageDataset) -> None:
    """Same values; and with shuffling, the same order on every rank as the in-memory loader."""
    config = LoaderConfig(batch_size=16, train=False)
    for (xa, ya), (xb, yb) in zip(make_loader(images, config), as_loader(NormalisedPairs(images), config)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    shuffled = LoaderConfig(batch_size=10, train=True, augment=False, seed=3)
    for rank in (0, 1):
        a = [y for _, y in make_loader(images, shuffled, rank, 2)]
        b = [y for _, y in as_loader(NormalisedPairs(images), shuffled, rank, 2)]
        assert torch.equal(torch.cat(a), torch.cat(b))


def test_set_epoch_reshuffles_a_dataset_and_replays_an_epoch() -> None:
    loader = as_loader(PatternDataset(40), LoaderConfig(batch_size=40, train=True, seed=1))
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(next(iter(loader))[1])
    assert not torch.equal(orders[0], orders[1]) and torch.equal(orders[0], orders[2])


def test_evaluate_on_a_dataset_equals_evaluate_on_the_image_dataset(images: ImageDataset) -> None:
    model = tiny_resnet(num_classes=4).eval()
    reference = secateurs.evaluate(model, make_loader(images, LoaderConfig(batch_size=512, train=False)), 4)
    result = secateurs.evaluate(model, NormalisedPairs(images))
    assert result.samples == reference.samples == 100
    assert result.top1 == reference.top1 and result.loss == pytest.approx(reference.loss, rel=1e-6)
    as_loader_result = secateurs.evaluate(model, DataLoader(NormalisedPairs(images), batch_size=7))
    assert as_loader_result.top1 == reference.top1


def test_workers_give_the_same_fine_tuned_weights_as_none() -> None:
    config = dict(epochs=1, batch_size=16, lr=0.05, max_steps_per_epoch=2, progress=False, device="cpu")
    weights = []
    for workers in (0, 2):
        model = tiny_resnet()
        train(model, PatternDataset(64), None, TrainConfig(**config, num_workers=workers))
        weights.append(model.state_dict())
    untrained = tiny_resnet().state_dict()
    assert not torch.equal(weights[0]["conv1.weight"], untrained["conv1.weight"])  # it did train
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_a_user_dataloader_with_workers_trains_like_the_dataset() -> None:
    """A DataLoader built as secateurs builds one (DistributedSampler, same seed) gives the same steps."""
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, max_steps_per_epoch=3, progress=False, device="cpu")
    a, b = tiny_resnet(), tiny_resnet()
    train(a, PatternDataset(64), None, config)
    data = PatternDataset(64)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=config.seed)
    train(b, DataLoader(data, batch_size=16, sampler=sampler, num_workers=2), None, config)
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name


def test_calibration_draws_the_seeded_subset_of_a_dataset() -> None:
    data = PatternDataset(50)
    batches = list(calibration_batches(data, 20, seed=5, device=torch.device("cpu"), batch_size=8)())
    index = torch.randperm(50, generator=torch.Generator().manual_seed(5))[:20]
    assert [len(x) for x in batches] == [8, 8, 4]
    assert torch.equal(torch.cat(batches), torch.stack([data[int(i)][0] for i in index]))
    via_loader = list(calibration_batches(DataLoader(data, batch_size=3), 20, 5, torch.device("cpu"), 8)())
    assert torch.equal(torch.cat(via_loader), torch.cat(batches))


def test_data_driven_pruning_takes_a_dataset() -> None:
    model = tiny_resnet()
    pruned, result = secateurs.prune(
        model,
        "feature-l1",
        macs_reduction=0.4,
        train_set=PatternDataset(64),
        input_shape=(3, 16, 16),
        finetune="none",
        calib_samples=32,
        latency=False,
        device="cpu",
    )
    assert abs(result.achieved - 0.4) < 0.02 and result.after["top1"] is None
    assert pruned(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_under_several_processes_a_dataloader_must_shard() -> None:
    data = PatternDataset(32)
    with pytest.raises(ConfigError, match="DistributedSampler"):
        as_loader(DataLoader(data, batch_size=8), LoaderConfig(), rank=0, world_size=2)
    sharded = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, num_replicas=2, rank=1))
    assert len(as_loader(sharded, LoaderConfig(), rank=1, world_size=2)) == 2


def test_bad_data_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="cannot read batches from a int.*map-style torch Dataset"):
        as_loader(3, LoaderConfig())

    class Triples(PatternDataset):
        def __getitem__(self, i: int):
            x, y = super().__getitem__(i)
            return x, y, i

    with pytest.raises(DatasetError, match=r"yielded a list of 3; each sample must be \(image_tensor, label\)"):
        next(iter(as_loader(Triples(8), LoaderConfig(batch_size=4))))


def test_prune_without_a_shape_names_what_to_pass() -> None:
    model = tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"input_shape=\(C, H, W\) or example_inputs"):
        secateurs.prune(model, "l1", macs_reduction=0.5, train_set=PatternDataset(16), finetune="none")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_dataset_with_info_gives_the_input_shape() -> None:
    class WithInfo(PatternDataset):
        info = DatasetInfo("patterns", 4, 3, 16, (0.0,) * 3, (1.0,) * 3)

    _, result = secateurs.prune(
        tiny_resnet(), "l1", macs_reduction=0.5, test_set=WithInfo(16), finetune="none", latency=False, device="cpu"
    )
    assert result.before["macs"] == secateurs.count_macs(tiny_resnet(), (3, 16, 16))


SCRIPT = """
import sys, torch
from secateurs.train import TrainConfig, train
from user_models import PatternDataset, tiny_resnet
model = tiny_resnet()
train(model, PatternDataset(64), None, TrainConfig(epochs=1, batch_size=16, lr=0.05, max_steps_per_epoch=3,
      progress=False, device="cpu", augment=False, num_workers=1))
if int(__import__("os").environ.get("RANK", 0)) == 0:
    from secateurs.io import save
    save(model, sys.argv[1])
"""


def test_torchrun_with_a_dataset_matches_one_process(tmp_path: Path, monkeypatch, one_thread) -> None:
    """Two ranks with a DistributedSampler each see half of every global batch one process sees."""
    (tmp_path / "run.py").write_text(SCRIPT)
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    run_ok([*TORCHRUN, str(tmp_path / "run.py"), str(tmp_path / "two.safetensors")], env)
    # One process: the same script run here, on one thread as each rank (a subprocess costs its start).
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "run.py"), str(tmp_path / "one.safetensors")])
    monkeypatch.delenv("RANK", raising=False)
    runpy.run_path(str(tmp_path / "run.py"), run_name="__main__")
    one = secateurs.load(tmp_path / "one.safetensors", arch=tiny_resnet).state_dict()
    two = secateurs.load(tmp_path / "two.safetensors", arch=tiny_resnet).state_dict()
    for name, value in one.items():
        assert torch.allclose(value.double(), two[name].double(), rtol=1e-4, atol=1e-6), name
