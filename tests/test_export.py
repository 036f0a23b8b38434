"""ONNX and TorchScript export: outputs match PyTorch, files appear whole or not at all."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn as nn

from secateurs.errors import ConfigError, SecateursError
from secateurs.io.export import EXPORT_FORMATS, METADATA_FILE, export_model, verify_onnx

SHAPE = (3, 16, 16)


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class TinyNet(nn.Module):
    """conv-bn-relu stem, a residual add, a channel cat of two branches, adaptive pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 8)
        self.res = nn.Sequential(conv_bn_relu(8, 8), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.left = conv_bn_relu(8, 4)
        self.right = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(8, 6))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.fixture
def model() -> TinyNet:
    torch.manual_seed(0)
    net = TinyNet()
    for m in net.modules():  # non-trivial running statistics, so eval-mode BN is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.train()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_matches_pytorch_with_dynamic_batch(model, tmp_path, batch_size):
    path = export_model(model, tmp_path / "net.onnx", "onnx", SHAPE)
    assert path == tmp_path / "net.onnx" and path.is_file()
    assert verify_onnx(model, path, SHAPE, atol=1e-4, batch_size=batch_size) < 1e-4
    assert model.training  # exported in eval mode, mode restored


def test_verify_onnx_flags_a_stale_file(model, tmp_path):
    path = export_model(model, tmp_path / "net.onnx", "onnx", SHAPE)
    with torch.no_grad():
        model.fc.bias += 1.0
    with pytest.raises(SecateursError, match="differs from PyTorch"):
        verify_onnx(model, path, SHAPE)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_round_trips(model, tmp_path):
    path = export_model(model, tmp_path / "sub" / "net.pt", "torchscript", SHAPE)
    assert model.training
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, *SHAPE)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model.eval()(x))


def test_unknown_format_is_config_error(model, tmp_path):
    with pytest.raises(ConfigError, match=r"'onxx'.*Did you mean 'onnx'"):
        export_model(model, tmp_path / "net.onnx", "onxx", SHAPE)
    assert not any(tmp_path.iterdir())


def test_failed_export_leaves_no_file(model, tmp_path, monkeypatch):
    def half_write_then_fail(model, x, tmp, opset, metadata):
        tmp.write_bytes(b"half a model")
        raise RuntimeError("exporter crashed")

    monkeypatch.setitem(EXPORT_FORMATS, "onnx", half_write_then_fail)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_model(model, tmp_path / "net.onnx", "onnx", SHAPE)
    assert not any(tmp_path.iterdir())
    assert model.training


def test_missing_onnx_package_says_how_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install secateurs\[export\]"):
        export_model(model, tmp_path / "net.onnx", "onnx", SHAPE)
    assert not any(tmp_path.iterdir())


def test_bad_input_shape_is_config_error(model, tmp_path):
    with pytest.raises(ConfigError, match=r"\(16, 16\)"):
        export_model(model, tmp_path / "net.onnx", "onnx", (16, 16))


def test_onnx_carries_the_metadata_it_was_given(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    given = {"mean": "[0.5, 0.5, 0.5]", "input_shape": "[3, 16, 16]"}
    path = export_model(model, tmp_path / "net.onnx", "onnx", SHAPE, metadata=given)
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props} == given
    assert verify_onnx(model, path, SHAPE) < 1e-4  # the edited file still runs


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_carries_the_metadata_as_an_extra_file(model, tmp_path):
    given = {"std": "[0.25, 0.25, 0.25]"}
    path = export_model(model, tmp_path / "net.pt", "torchscript", SHAPE, metadata=given)
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE]) == given


def _checkpoint(tmp_path, meta):
    from secateurs.io import save
    from secateurs.models import create_model

    return save(create_model("test_resnet", num_classes=4, in_channels=1), tmp_path / "model.safetensors", meta)


def test_export_command_writes_what_a_deployer_needs(tmp_path):
    """normalisation, input shape, class names, version and the pruning summary, read back with onnx."""
    onnx = pytest.importorskip("onnx")
    from secateurs import __version__
    from secateurs.cli import main

    pruning = {"method": "l1", "metric": "macs", "target": 0.5, "achieved": 0.503, "source": "base.safetensors"}
    ckpt = _checkpoint(
        tmp_path,
        {
            "input_shape": [1, 20, 20],
            "normalisation": {"mean": [0.25], "std": [0.5]},
            "dataset": {"name": "toy", "num_classes": 4, "class_names": ["a", "b", "c", "d"]},
            "pruning": pruning,
            "metrics": {"test_top1": 81.234},
        },
    )
    out = tmp_path / "m.onnx"
    assert main(["export", "--from", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["mean"]) == [0.25] and json.loads(props["std"]) == [0.5]
    assert "(pixel / 255 - mean) / std" in props["normalisation"]
    assert json.loads(props["input_shape"]) == [1, 20, 20]
    assert json.loads(props["class_names"]) == ["a", "b", "c", "d"]
    assert props["secateurs_version"] == __version__
    assert json.loads(props["pruning"]) == pruning
    assert props["dataset_name"] == "toy" and props["dataset_num_classes"] == "4" and props["test_top1"] == "81.23"


def test_metadata_of_an_unpruned_checkpoint_has_no_pruning_entry(tmp_path):
    from secateurs.io import read_header
    from secateurs.io.export import export_metadata

    ckpt = _checkpoint(tmp_path, {"input_shape": [1, 20, 20]})
    props = export_metadata(read_header(ckpt), (1, 20, 20))
    assert "pruning" not in props and "class_names" not in props and "mean" not in props
    assert json.loads(props["input_shape"]) == [1, 20, 20]
