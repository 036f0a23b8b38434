"""Pruning under torchrun: every rank prunes the same channels, fine-tuning runs on the
global batch, only rank 0 writes -- and the result matches one process."""

from __future__ import annotations

import json

import pytest
import torch
from _commands import DDP_DATA, TORCHRUN, run_ok

from secateurs.cli import main
from secateurs.io import load

pytestmark = pytest.mark.usefixtures("one_thread")  # as each rank: OMP_NUM_THREADS=1

RECIPE = """\
method: {method}
macs_reduction: 0.4
rounds: 2
finetune: {finetune}
finetune_epochs: 2
latency: false
finetune_train: {{batch_size: 64, lr: 0.05, augment: false, progress: false}}
{extra}"""


@pytest.mark.parametrize(
    "method, finetune, extra",
    [("feature-l1", "tft", ""), ("fcs", "mlft", "method_options: {merge: true}\n")],
)
def test_torchrun_prune_matches_one_process(trained_checkpoint_4_classes, tmp_path, method, finetune, extra):
    """mlft trains a peer next to the pruned model: both are DDP-wrapped and BN-synced. fcs's
    merge edits the readers' weights from each rank's own Gram matrices, so the ranks must
    take rank 0's partners and scales, like its scores."""
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(method=method, finetune=finetune, extra=extra))
    args = ["prune", "--from", str(trained_checkpoint_4_classes), "--recipe", str(tmp_path / "recipe.yaml"), *DDP_DATA]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0  # one process: this one (a subprocess costs its start)
    run_ok([*TORCHRUN, "-m", "secateurs.cli", *args, "--out", str(tmp_path / "two")])
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


def test_a_late_rank_leaves_the_folder_to_rank_0(trained_checkpoint_4_classes, tmp_path, monkeypatch, capsys):
    """Rank 1 may start after rank 0 has begun writing ``--out``; rank 0 alone judges the disk.

    Rank 0 (or one process) still refuses the folder of an earlier run, and the late rank
    goes on to the pruning run (replaced here by a recorder: the command, not the run).
    """
    from secateurs.commands import prune_run

    out = tmp_path / "run"
    out.mkdir()
    (out / "log.txt").write_text("rank 0 began\n")
    started = []
    monkeypatch.setattr(prune_run, "prune_command", lambda *a, **k: started.append(a[1]))
    args = ["prune", "--from", str(trained_checkpoint_4_classes), "--out", str(out), "--macs-reduction", "0.3"]
    args += ["--dataset", "synthetic"]
    assert main(args) == 2
    assert "log.txt' already exists" in capsys.readouterr().err
    assert started == []

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(args) == 0  # past every check, into the (recorded) run; only rank 0 prints a summary
    assert started == [out]
