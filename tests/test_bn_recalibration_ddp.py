"""BN recalibration under torchrun: every rank ends with the same BN buffers, equal to one
process's over the same global batches, directly and through ``secateurs prune``."""

from __future__ import annotations

import json

import pytest
import torch
from _commands import DDP_DATA, TORCHRUN, run_ok

import secateurs
from secateurs.cli import main
from secateurs.train import recalibrate_bn

pytestmark = pytest.mark.usefixtures("one_thread")
STATS = ("running_mean", "running_var", "num_batches_tracked")


RANK_SCRIPT = """\
import sys
import torch
import secateurs
from secateurs.train import dist_info, recalibrate_bn
from secateurs.train.distributed import process_group

def model():
    torch.manual_seed(0)
    return secateurs.create_model("test_resnet", num_classes=4, in_channels=3)

def batches():  # uneven: 3 batches for rank 0, 2 for rank 1, and a short last one
    g = torch.Generator().manual_seed(7)
    return [torch.randn(n, 3, 16, 16, generator=g) * 2 + 0.5 for n in (16, 16, 16, 16, 9)]

if __name__ == "__main__":
    with process_group(torch.device("cpu")) as info:
        net = model()
        recalibrate_bn(net, [b for i, b in enumerate(batches()) if i % info.world_size == info.rank])
        torch.save(net.state_dict(), f"{sys.argv[1]}/rank{info.rank}.pt")
"""


def test_torchrun_ranks_end_identical_and_equal_to_one_process(tmp_path):
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    run_ok([*TORCHRUN, str(script), str(tmp_path)])
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    namespace: dict = {}
    exec(compile(RANK_SCRIPT, str(script), "exec"), namespace)  # the same model and batches, one process
    one = namespace["model"]()
    result = recalibrate_bn(one, namespace["batches"]())
    assert (result.batches, result.samples) == (5, 73)
    stats = [k for k in r0 if k.endswith(STATS)]
    assert stats
    for k, v in one.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k
        if k.endswith(("running_mean", "running_var")):
            assert torch.allclose(r0[k].double(), v.double(), rtol=1e-5, atol=1e-6), (k, (r0[k] - v).abs().max())
        else:
            assert torch.equal(r0[k], v), k  # weights untouched; num_batches_tracked counts all 5


def test_cli_flag_and_recipe_key_under_torchrun_match_one_process(trained_checkpoint_4_classes, tmp_path):
    """The pipeline gives each rank every other batch: the run equals one process's."""
    (tmp_path / "recipe.yaml").write_text(
        "method: l1\nmacs_reduction: 0.4\nfinetune: none\nlatency: false\nbn_recalibration: 3\n"
    )
    args = ["prune", "--from", str(trained_checkpoint_4_classes), "--recipe", str(tmp_path / "recipe.yaml"), *DDP_DATA]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    run_ok([*TORCHRUN, "-m", "secateurs.cli", *args, "--out", str(tmp_path / "two")])
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert json.loads((tmp_path / "one" / "config.json").read_text())["prune"]["bn_recalibration"] == 3
    for m in (m1, m2):
        r = m["rounds"][0]
        assert r["recalibration_batches"] == 2  # 256 samples: two batches of 128
        assert {"top1_after_cut", "top1_after_recalibration", "recalibration_s"} <= r.keys()
    assert m1["rounds"][0]["top1_after_recalibration"] == m2["rounds"][0]["top1_after_recalibration"]
    a = secateurs.load(tmp_path / "one" / "model.safetensors").state_dict()
    b = secateurs.load(tmp_path / "two" / "model.safetensors").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-5, atol=1e-6), k
    assert main([*args, "--bn-recalibration", "0", "--out", str(tmp_path / "off")]) == 0  # the flag beats the recipe
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())["rounds"][0]
    assert (off["recalibration_batches"], off["top1_after_recalibration"]) == (0, None)
    assert main([*args, "--bn-recalibration", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
