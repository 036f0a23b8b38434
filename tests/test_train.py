"""Training: the loss falls, resume is exact, torchrun with 2 processes matches 1 process."""

from __future__ import annotations

import json

import pytest
import torch
from _commands import TORCHRUN, run_ok

from secateurs.cli import main
from secateurs.errors import ConfigError
from secateurs.io import load
from secateurs.models import create_model
from secateurs.train import MODEL_FILE, STATE_FILE, TrainConfig, train

FAST = dict(batch_size=64, lr=0.05, progress=False, eval_batch_size=256)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("test_resnet", num_classes=4, in_channels=3)


def test_loss_falls_and_metrics_are_written(tmp_path, synthetic_data):
    model = _model()
    result = train(model, *synthetic_data, TrainConfig(epochs=3, **FAST), run_dir=tmp_path)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    assert {"train_loss", "train_top1", "test_loss", "test_top1", "lr", "epoch_time_s"} <= set(lines[0])
    restored = load(tmp_path / MODEL_FILE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "model.safetensors", "state.safetensors"]
    for (name, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), name


class Killed(Exception):
    pass


def test_resume_continues_a_killed_run_exactly(tmp_path, synthetic_data):
    config = TrainConfig(epochs=3, **FAST)
    full = _model()
    train(full, *synthetic_data, config, run_dir=tmp_path / "full")

    steps = {"n": 0}

    def kill_in_epoch_3(model):
        steps["n"] += 1
        if steps["n"] == 9:  # 4 steps per epoch: the first step of epoch 3
            raise Killed()

    with pytest.raises(Killed):
        train(_model(), *synthetic_data, config, run_dir=tmp_path / "cut", after_step=kill_in_epoch_3)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    resumed = _model(seed=123)  # a different init: everything must come from the state file
    train(resumed, *synthetic_data, config, run_dir=tmp_path / "cut", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    full_hist = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    cut_hist = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [
        {k: v for k, v in json.loads(l).items() if "time" not in k and "per_s" not in k} for l in lines
    ]
    assert strip(full_hist) == strip(cut_hist)


def test_resume_refuses_a_changed_configuration(tmp_path, synthetic_data):
    train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        train(_model(), *synthetic_data, TrainConfig(epochs=1, **{**FAST, "lr": 0.2}), run_dir=tmp_path, resume=True)


def test_existing_run_is_not_overwritten(tmp_path, synthetic_data):
    train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST), run_dir=tmp_path)
    before = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST), run_dir=tmp_path)
    assert (tmp_path / STATE_FILE).read_bytes() == before


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": -1.0}, {"schedule": "cosin"}, {"label_smoothing": 1.0}])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_unknown_config_key_is_named():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.slow
def test_a_second_rank_starting_late_does_not_refuse_rank_0s_run_json(tmp_path, monkeypatch):
    """Ranks start unsynchronised: rank 1 may find the run.json rank 0 wrote a moment ago.

    The disk is rank 0's to judge, so rank 1 goes on to training; rank 0 itself, or a
    single process, still refuses a folder that holds another run's files.
    """
    import sys

    from secateurs.commands.train import train_command

    train_pkg = sys.modules["secateurs.train"]  # the package; ``secateurs.train`` the attribute is the function

    started = []
    monkeypatch.setattr(train_pkg, "train", lambda *a, **k: started.append(k["run_dir"]))
    kw = dict(resume=False, model="test_resnet", dataset="synthetic", data_dir=None, overrides={"epochs": 1})
    train_command(tmp_path, **kw)  # rank 0 (a single process): claims the folder, writes run.json
    assert (tmp_path / "run.json").is_file() and started == [tmp_path]

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    train_command(tmp_path, **kw)  # rank 1, late: the run.json is its own run's
    assert started == [tmp_path, tmp_path]

    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="run.json.*already exists"):
        train_command(tmp_path, **kw)


def test_torchrun_two_processes_match_one_process(tmp_path, one_thread):
    """Global batch 64: 2 ranks x 32 with batch-norm statistics over the global batch vs 1 x 64."""
    args = [
        "train",
        "--model",
        "test_resnet",
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--no-progress",
        "--no-augment",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0  # one process, one thread: this one, as each rank

    run_ok([*TORCHRUN, "-m", "secateurs.cli", *args, "--out", str(tmp_path / "two")])
    a, b = load(tmp_path / "one" / MODEL_FILE), load(tmp_path / "two" / MODEL_FILE)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x.double(), y.double(), rtol=1e-3, atol=1e-5), (name, (x - y).abs().max())
    m1 = [json.loads(l) for l in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in m2] == [2, 2]
    assert m1[-1]["train_loss"] == pytest.approx(m2[-1]["train_loss"], rel=1e-4)
