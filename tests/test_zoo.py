"""Every zoo model survives the round trips a user relies on: checkpoint and ONNX export.

(Forward at both stems, gradients and FX tracing are in test_models_arch.py.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from secateurs.io import load, save
from secateurs.io.export import export_model, verify_onnx
from secateurs.models import create_model, list_models

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_looking(name: str) -> nn.Module:
    """A model whose BN statistics are not the identity, so a lost buffer would show."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip_gives_identical_outputs(name, tmp_path):
    model = _trained_looking(name)
    path = save(model, tmp_path / f"{name}.safetensors", meta={"input_shape": [1, 32, 32]})
    restored = load(path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_matches_pytorch(name, tmp_path):
    model = _trained_looking(name)
    path = export_model(model, tmp_path / f"{name}.onnx", "onnx", (1, 32, 32))
    with torch.no_grad():
        scale = model(torch.randn(2, 1, 32, 32)).abs().max().item()
    assert verify_onnx(model, path, (1, 32, 32), atol=1e-4, rtol=1e-4, batch_size=2) <= 1e-4 + 1e-4 * 2 * scale
