"""A user's own model: pruned through the Python API (data as a Dataset or a DataLoader), saved
without pickle, and loaded back from its architecture factory; the CLI's ``--arch`` does the same."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from user_models import PatternDataset, tiny_resnet

import secateurs
from secateurs.cli import main
from secateurs.errors import CheckpointError
from secateurs.io._factory import build_from_factory

OPTIONS = dict(
    macs_reduction=0.5,
    finetune_epochs=1,
    latency=False,
    device="cpu",
    finetune_train={"max_steps_per_epoch": 2, "batch_size": 16},
)


def _prune(train_set: object):
    return secateurs.prune(
        tiny_resnet(),
        "l1",
        train_set=train_set,
        test_set=PatternDataset(32, seed=1),
        example_inputs=torch.randn(1, 3, 16, 16),
        **OPTIONS,
    )


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_prune_finetune_save_and_load_from_the_factory(tmp_path: Path) -> None:
    pruned, result = _prune(PatternDataset(96))
    unpruned_macs = secateurs.count_macs(tiny_resnet(), (3, 16, 16))
    assert secateurs.count_macs(pruned, (3, 16, 16)) == result.after["macs"] < unpruned_macs
    assert abs(result.achieved - 0.5) < 0.01
    assert result.rounds[-1].finetune_epochs == 1 and result.after["top1"] is not None
    secateurs.save(pruned, tmp_path / "pruned.safetensors")
    loaded = secateurs.load(tmp_path / "pruned.safetensors", arch=tiny_resnet)
    assert (
        pruned.layer2[0].conv1.out_channels < 16
        and loaded.layer2[0].conv1.out_channels == pruned.layer2[0].conv1.out_channels
    )
    _same_outputs(pruned, loaded)
    by_name = secateurs.load(tmp_path / "pruned.safetensors", arch="user_models:tiny_resnet")
    _same_outputs(pruned, by_name)


def test_a_dataloader_as_train_set_prunes_like_the_dataset() -> None:
    """The DataLoader secateurs would build itself (seeded DistributedSampler, batch 16) gives the same model."""
    from_dataset, _ = _prune(PatternDataset(96))
    data = PatternDataset(96)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    from_loader, _ = _prune(DataLoader(data, batch_size=16, sampler=sampler))
    for name, value in from_dataset.state_dict().items():
        assert torch.equal(value, from_loader.state_dict()[name]), name


def test_loading_a_user_model_without_its_factory_says_how(tmp_path: Path) -> None:
    secateurs.save(tiny_resnet(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"load\(path, arch=build_net\).*--arch MODULE:FUNCTION"):
        secateurs.load(tmp_path / "m.safetensors")


class LayerScaled(nn.Module):
    """A conv whose output channels are scaled by a loose ``nn.Parameter`` (ConvNeXt's layer scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 8))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x) * self.gamma.view(1, -1, 1, 1)
        return self.fc(x.mean((2, 3)))


def test_loose_parameters_take_the_checkpoint_shape(tmp_path: Path) -> None:
    """Narrowed by hand (channels 0, 2, 5 kept), as surgery would: the load needs no constructor for gamma."""
    torch.manual_seed(0)
    model, keep = LayerScaled(), torch.tensor([0, 2, 5])
    with torch.no_grad():
        conv = nn.Conv2d(3, 3, 3)
        conv.weight.copy_(model.conv.weight[keep])
        conv.bias.copy_(model.conv.bias[keep])
        fc = nn.Linear(3, 2)
        fc.weight.copy_(model.fc.weight[:, keep])
        fc.bias.copy_(model.fc.bias)
        model.conv, model.fc, model.gamma = conv, fc, nn.Parameter(model.gamma[keep].clone())
    secateurs.save(model, tmp_path / "m.safetensors")
    loaded = secateurs.load(tmp_path / "m.safetensors", arch=LayerScaled)
    assert loaded.gamma.shape == (3,) and loaded.gamma.requires_grad
    _x = torch.randn(2, 3, 9, 9)
    assert torch.equal(loaded(_x), model(_x))


FACTORY = """
import torch
import torch.nn as nn


def small_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))
"""


def test_cli_prunes_evaluates_measures_and_exports_a_user_model(tmp_path: Path, monkeypatch, capsys) -> None:
    module = "user_factory_cli"
    (tmp_path / f"{module}.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the current folder, as `python -m` does
    monkeypatch.delitem(sys.modules, module, raising=False)
    arch = ["--arch", f"{module}:small_net", "--arch-option", "num_classes=4"]
    data = [
        "--dataset",
        "synthetic",
        "--dataset-option",
        "num_samples=64",
        "--dataset-option",
        "num_classes=4",
        "--dataset-option",
        "image_size=16",
    ]
    secateurs.save(build_from_factory(f"{module}:small_net", {"num_classes": 4}), tmp_path / "trained.safetensors")
    assert (
        main(
            [
                "prune",
                *arch,
                "--from",
                "trained.safetensors",
                *data,
                "--method",
                "l1",
                "--macs-reduction",
                "0.4",
                "--finetune",
                "none",
                "--no-latency",
                "--out",
                "run",
            ]
        )
        == 0
    )
    header = json.loads((tmp_path / "run" / "config.json").read_text())
    assert header["arch"] == {"factory": f"{module}:small_net", "options": {"num_classes": 4}}
    pruned = secateurs.load(
        tmp_path / "run" / "model.safetensors", arch=sys.modules[module].small_net, arch_options={"num_classes": 4}
    )
    assert pruned[0].out_channels < 8 or pruned[3].out_channels < 16
    assert (
        secateurs.read_meta(tmp_path / "run" / "model.safetensors")["architecture"]["factory"] == f"{module}:small_net"
    )
    capsys.readouterr()
    assert main(["eval", *arch, "--from", "run/model.safetensors", *data, "--json"]) == 0
    top1 = json.loads(capsys.readouterr().out)["top1"]
    test_set = secateurs.load_dataset("synthetic", "test", num_samples=64, num_classes=4, image_size=16)
    assert top1 == secateurs.evaluate(pruned, test_set).top1
    assert main(["measure", *arch, "--from", "run/model.safetensors", "--no-latency", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == secateurs.count_macs(pruned, (3, 16, 16))
    assert main(["export", *arch, "--from", "run/model.safetensors", "--format", "torchscript", "--out", "m.pt"]) == 0
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(scripted(x), pruned.eval()(x), atol=1e-6)


def test_cli_refuses_an_unimportable_arch_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    secateurs.save(tiny_resnet(), tmp_path / "m.safetensors")
    assert (
        main(
            [
                "measure",
                "--arch",
                "no_such_module_here:net",
                "--from",
                "m.safetensors",
                "--no-latency",
                "--input-shape",
                "3,16,16",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot import 'no_such_module_here'" in err and "PYTHONPATH" in err
    assert main(["measure", "--arch", "no_colon", "--from", "m.safetensors", "--input-shape", "3,16,16"]) == 2
    assert "expected MODULE:FUNCTION" in capsys.readouterr().err


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "own_model"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_readme_shows_the_examples_verbatim() -> None:
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    section = readme[readme.index("## Your own model and data") :]
    for name in ("mymodels.py", "prune_own.py", "prune_own.sh"):
        assert (EXAMPLES / name).read_text().rstrip() in section, name


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST is not in {FASHION}")
def test_readme_examples_run(tmp_path: Path) -> None:
    """The Python example, then the CLI example on the checkpoint it wrote, as a user runs them."""
    import os
    import shutil
    import subprocess

    for name in ("mymodels.py", "prune_own.py", "prune_own.sh"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    py = subprocess.run(
        [sys.executable, "prune_own.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert py.returncode == 0, py.stderr[-3000:]
    assert "l1: macs reduction" in py.stdout and "reloaded:" in py.stdout
    sh = subprocess.run(
        ["bash", "-e", "prune_own.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert sh.returncode == 0, sh.stderr[-3000:]
    assert "fashion-mnist/test top1" in sh.stdout and "MACs" in sh.stdout
    metrics = json.loads((tmp_path / "runs" / "mine" / "metrics.json").read_text())
    assert abs(metrics["achieved"] - 0.5) < 0.01 and metrics["after"]["macs"] < metrics["before"]["macs"]
