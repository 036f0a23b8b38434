"""Output a person reads: progress lines off a terminal, what a resumed or extended training run
says, the prune summary printed once after a readable configuration, probability's reasons."""

from __future__ import annotations

import io
import json
import logging
import math
import time

import pytest
import torch
from _commands import DATA, prune_argv

from secateurs import _progress, prune
from secateurs.cli import main
from secateurs.errors import ConfigError
from secateurs.models import create_model
from secateurs.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(batch_size=64, lr=0.05, eval_batch_size=256)  # 256 samples: 4 steps per epoch


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("test_resnet", num_classes=4, in_channels=3)


def test_line_form_prints_during_a_long_loop():
    out = io.StringIO()  # not a terminal
    bar = _progress.progress(total=40, desc="work", stream=out, interval_s=0.05, quiet_s=0.0)
    for _ in range(40):
        time.sleep(0.01)
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4  # 0.4 s of work, a line per 0.05 s or per tenth
    assert all(line.startswith("work: ") and "/40 (" in line and "elapsed" in line for line in lines)
    counts = [int(line.split()[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 40


def test_line_form_stays_silent_in_a_short_loop():
    out = io.StringIO()
    bar = _progress.progress(total=100, desc="quick", stream=out)  # default: silent for 5 s
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_training_prints_lines_within_an_epoch_off_a_terminal(tmp_path, synthetic_data, capsys, monkeypatch):
    monkeypatch.setattr(_progress, "LINE_INTERVAL_S", 0.0)
    monkeypatch.setattr(_progress, "QUIET_S", 0.0)
    train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST, progress=True), run_dir=tmp_path)
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "epoch 1/1: 1/4 (25%)" in err and "epoch 1/1: 4/4 (100%)" in err
    assert "evaluating: " in err


class Killed(Exception):
    pass


def test_resume_says_where_it_resumes_and_a_finished_run_says_so(tmp_path, synthetic_data, capsys):
    config = TrainConfig(epochs=2, **FAST, progress=True)
    steps = {"n": 0}

    def kill_in_epoch_2(model):
        steps["n"] += 1
        if steps["n"] == 5:
            raise Killed()

    with pytest.raises(Killed):
        train(_model(), *synthetic_data, config, run_dir=tmp_path, after_step=kill_in_epoch_2)
    capsys.readouterr()
    train(_model(), *synthetic_data, config, run_dir=tmp_path, resume=True)
    assert f"resuming {tmp_path} after epoch 1 of 2" in capsys.readouterr().out
    result = train(_model(), *synthetic_data, config, run_dir=tmp_path, resume=True)
    assert f"{tmp_path} finished all 2 epochs already; nothing to do" in capsys.readouterr().out
    assert len(result.history) == 2


def test_a_finished_run_is_extended_on_the_longer_schedule(tmp_path, synthetic_data, capsys):
    """Extending 1 -> 2 epochs: the cosine schedule is recomputed for 2 epochs and followed from
    the saved step (the documented warm restart)."""
    train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST, progress=True), run_dir=tmp_path)
    capsys.readouterr()
    result = train(
        _model(), *synthetic_data, TrainConfig(epochs=2, **FAST, progress=True), run_dir=tmp_path, resume=True
    )
    assert f"extending {tmp_path} from 1 to 2 epochs, after epoch 1" in capsys.readouterr().out
    assert [r["epoch"] for r in result.history] == [1, 2]
    last_step, total = 7, 8  # the lr recorded is the one of the epoch's last step
    assert result.history[1]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * last_step / total)))
    with pytest.raises(ConfigError, match="the run has 2 epochs"):
        train(_model(), *synthetic_data, TrainConfig(epochs=1, **FAST, progress=True), run_dir=tmp_path, resume=True)


def test_cli_train_extends_and_ends_with_the_model_path(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "test_resnet", "--dataset", "synthetic", *DATA, "--batch-size", "64", "--out", str(out)]
    assert main([*args, "--epochs", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"model: {out / 'model.safetensors'}")
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 0
    assert "extending" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["train"]["epochs"] == 2
    assert main(["train", "--resume", "--out", str(out)]) == 0  # the extension is the run's own now
    assert "finished all 2 epochs already" in capsys.readouterr().out
    assert main(["train", "--resume", "--out", str(out), "--epochs", "1"]) == 2
    assert "not shortened" in capsys.readouterr().err


def test_prune_prints_a_readable_configuration_and_the_summary_once(trained_checkpoint, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "pruned"
    argv = prune_argv(
        trained_checkpoint, out, "--finetune", "none", "--no-latency", "--seed", "3", *DATA, method="l1", macs=0.3
    )
    assert main(argv) == 0
    captured = capsys.readouterr()
    both = captured.out + captured.err
    head = f"pruning {trained_checkpoint} with l1: macs reduction 30%, global scope, 1 round(s), no fine-tuning"
    assert head in captured.err and "  options: " in captured.err and "seed=3" in captured.err
    assert f"full configuration: {out / 'config.json'}" in captured.err and "{'method'" not in both
    first = "% (target 30.0%)\n  params "  # the summary's first line
    assert both.count(first) == 1  # the summary, once
    assert captured.out.rstrip().endswith(
        f"pruned model: {out / 'model.safetensors'} (report.md, metrics.json and log.txt beside it)"
    )
    assert (out / "report.md").is_file()
    assert (out / "log.txt").read_text().count(first) == 1  # the run's log keeps it too


def _shifted(beta: float):
    """test_resnet with every BN at gamma 1, beta ``beta``: P(y <= 0) = Phi(-beta) everywhere."""
    model = _model()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.constant_(m.bias, beta)
    return model


def test_probability_says_why_it_removed_nothing(caplog):
    caplog.set_level(logging.INFO, logger="secateurs")
    _, result = prune(_shifted(-1.0), "probability", input_shape=(3, 32, 32), latency=False)
    highest = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # Phi(1) = 0.8413
    assert result.rounds[0].channels_removed == 0
    note = next(n for n in result.notes if "no channel removed" in n)
    assert "reached P >= tau = 0.99" in note and f"the highest P is {highest:.4f}" in note and "--tau" in note
    assert "0 of " in caplog.text and f"highest P {highest:.4f}" in caplog.text
    assert "tau 0.99 (given)" in result.summary()


def test_probability_prints_the_solved_tau(caplog):
    caplog.set_level(logging.INFO, logger="secateurs")
    _, result = prune(_shifted(-1.0), "probability", macs_reduction=0.2, input_shape=(3, 32, 32), latency=False)
    tau = result.rounds[0].details["tau"]
    assert f"solved tau = {tau:.6g}" in caplog.text
    assert f"tau {tau:.6g} (solved for the target)" in result.summary()


def test_a_resumed_prune_says_where_it_resumes_and_does_not_cut_again(synthetic_data, tmp_path, monkeypatch, caplog):
    from secateurs.train import trainer

    options = dict(
        macs_reduction=0.5,
        rounds=2,
        finetune_epochs=2,
        latency=False,
        finetune_train={"batch_size": 64, "progress": False, "max_steps_per_epoch": 1},
    )
    real = trainer._write_epoch

    def dying(*args, **kwargs):  # dies in round 1, after its cut, at its first fine-tuning epoch
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(trainer, "_write_epoch", dying)
    with pytest.raises(Killed):
        prune(_model(), "l1", train_set=synthetic_data[0], test_set=synthetic_data[1], run_dir=tmp_path, **options)
    monkeypatch.setattr(trainer, "_write_epoch", real)
    caplog.clear()
    caplog.set_level(logging.INFO, logger="secateurs")
    _, report = prune(
        _model(),
        "l1",
        train_set=synthetic_data[0],
        test_set=synthetic_data[1],
        run_dir=tmp_path,
        resume=True,
        **options,
    )
    removed = report.rounds[0].channels_removed
    assert f"resuming {tmp_path} from round 1 of 2, after its cut, before its fine-tuning" in caplog.text
    assert f"round 1/2: cut before the interruption ({removed} channels), fine-tuning it now" in caplog.text
    assert "round 1/2: removed" not in caplog.text and "round 2/2: removed" in caplog.text
