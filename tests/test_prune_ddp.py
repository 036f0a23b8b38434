"""Pruning under torchrun: every rank prunes the same channels, fine-tuning runs on the
global batch, only rank 0 writes -- and the result matches one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from secateurs.io import load

DATA = ["--dataset", "synthetic", "--dataset-option", "num_samples=256", "--dataset-option", "num_classes=4"]
RECIPE = """\
method: {method}
macs_reduction: 0.4
rounds: 2
finetune: {finetune}
finetune_epochs: 2
latency: false
finetune_train: {{batch_size: 64, lr: 0.05, augment: false, progress: false}}
"""


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("method, finetune", [("feature-l1", "tft"), ("fcs", "mlft")])
def test_torchrun_prune_matches_one_process(tmp_path, method, finetune):
    """mlft trains a peer next to the pruned model: both are DDP-wrapped and BN-synced."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "secateurs.cli"]
    _run(
        [
            *cli,
            "train",
            "--model",
            "test_resnet",
            *DATA,
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--no-progress",
            "--out",
            str(tmp_path / "base"),
        ],
        env,
    )
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(method=method, finetune=finetune))
    args = [
        "prune",
        "--from",
        str(tmp_path / "base" / "model.safetensors"),
        "--recipe",
        str(tmp_path / "recipe.yaml"),
        *DATA,
    ]
    _run([*cli, *args, "--out", str(tmp_path / "one")], env)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "secateurs.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env,
    )
    a, b = load(tmp_path / "one" / "model.safetensors"), load(tmp_path / "two" / "model.safetensors")
    sa, sb = a.state_dict(), b.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}  # same channels cut
    for name, x in sa.items():
        assert torch.allclose(x.double(), sb[name].double(), rtol=1e-3, atol=1e-5), (name, (x - sb[name]).abs().max())
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["channels_after"] == m2["channels_after"]
    assert m1["after"]["macs"] == m2["after"]["macs"] < m1["before"]["macs"]
    history = [json.loads(l) for l in (tmp_path / "two" / "finetune-2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in history] == [2]
