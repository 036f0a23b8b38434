"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch
from _commands import DDP_DATA, train_argv

from secateurs.cli import main
from secateurs.data import load_dataset


@pytest.fixture
def one_thread():
    """Small batches gain nothing from intra-op threads, and xdist workers share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic_data():
    """Train and test splits of 256 synthetic 3x32x32 images in 4 classes (4 steps of 64 an
    epoch)."""
    kw = dict(num_samples=256, num_classes=4, in_channels=3, image_size=32, seed=0)
    return load_dataset("synthetic", "train", **kw), load_dataset("synthetic", "test", **kw)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """``secateurs train`` of ``test_resnet`` for one epoch on 128 synthetic samples: the checkpoint
    the CLI tests prune. Trained once per session; the tests only read it."""
    out = tmp_path_factory.mktemp("trained") / "train"
    assert main(train_argv("test_resnet", out, "--dataset", "synthetic", "--dataset-option", "num_samples=128")) == 0
    return out / "model.safetensors"


@pytest.fixture(scope="session")
def trained_checkpoint_4_classes(tmp_path_factory):
    """``secateurs train`` of ``test_resnet`` for one epoch on the torchrun tests' data (256
    synthetic samples of 4 classes): the checkpoint they prune in one process and on two ranks.
    Trained once per session; the tests only read it."""
    out = tmp_path_factory.mktemp("trained-4") / "train"
    assert main(train_argv("test_resnet", out, *DDP_DATA)) == 0
    return out / "model.safetensors"
