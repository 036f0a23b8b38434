"""The command line end to end on a tiny model and synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _commands import train_argv

from secateurs.cli import main
from secateurs.io import load

#: 128 samples (2 steps of 64 an epoch) instead of the default 512: the run's files and what
#: reads them do not depend on its length.
SMALL = ["--dataset-option", "num_samples=128"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_argv("test_mobilenet_v2", out, "--dataset", "synthetic", *SMALL, epochs=2)) == 0
    return out


def test_train_writes_a_run(run_dir):
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["metrics.jsonl", "model.safetensors", "run.json", "state.safetensors"]
    assert json.loads((run_dir / "run.json").read_text())["model"] == "test_mobilenet_v2"


def test_eval_reads_the_checkpoint(run_dir, capsys):
    assert main(["eval", "--from", str(run_dir / "model.safetensors"), "--dataset", "synthetic", *SMALL, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] > 0 and 0 <= result["top1"] <= 100 and "top5" not in result
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["top1"] == pytest.approx(last["test_top1"])


def test_measure_reads_the_checkpoint(run_dir, capsys):
    assert (
        main(
            [
                "measure",
                "--from",
                str(run_dir / "model.safetensors"),
                "--json",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--batch-sizes",
                "1,2",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    from secateurs.measure import count_macs, count_params

    model = load(run_dir / "model.safetensors")
    assert result["params"] == count_params(model)
    assert result["macs"] == count_macs(model, (3, 32, 32))
    assert result["latency"] is not None


def test_export_onnx_matches(run_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--from", str(run_dir / "model.safetensors"), "--format", "onnx", "--out", str(out)]) == 0
    import onnxruntime as ort

    model = load(run_dir / "model.safetensors").eval()
    x = torch.randn(3, 3, 32, 32)
    got = ort.InferenceSession(str(out)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_resume_of_a_finished_run_adds_nothing(run_dir):
    before = (run_dir / "metrics.jsonl").read_text()
    assert main(["train", "--resume", "--out", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--model", "resnet5", "--dataset", "synthetic", "--out", "{tmp}/x"], "unknown model 'resnet5'"),
        (["train", "--model", "test_resnet", "--dataset", "cifar11", "--out", "{tmp}/x"], "unknown dataset 'cifar11'"),
        (["eval", "--from", "{tmp}/missing.safetensors"], "missing.safetensors"),
        (["export", "--from", "{ckpt}", "--format", "tflite", "--out", "{tmp}/m"], "tflite"),
        (["train", "--resume", "--out", "{tmp}/never"], "never finished an epoch"),
        (["train", "--resume", "--out", "{ckpt_dir}", "--lr", "0.5"], "differ from it"),
        (["demo", "--out", "{ckpt_dir}"], "is not a demo run"),
    ],
)
def test_bad_input_is_one_clear_line(argv, needle, run_dir, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, ckpt=run_dir / "model.safetensors", ckpt_dir=run_dir) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_refused_train_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "test_resnet", "--dataset", "synthetic", "--batch-size", "0", "--out", str(out)])
    assert code == 2 and "batch_size must be positive" in capsys.readouterr().err
    assert not out.exists()


def test_dataset_options_reach_the_dataset_and_the_run_file(tmp_path):
    out = tmp_path / "run"
    options = ["--dataset-option", "num_samples=64", "--dataset-option", "num_classes=3"]
    assert main(train_argv("test_vgg", out, "--dataset", "synthetic", *options, batch_size=32)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["dataset_options"] == {"num_samples": 64, "num_classes": 3}
    assert load(out / "model.safetensors").classifier[-1].out_features == 3
