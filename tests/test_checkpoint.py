"""save/load: safetensors + JSON, no pickle, rebuilds narrowed layers, refuses damaged files."""

from __future__ import annotations

import struct

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs.errors import CheckpointError
from secateurs.io import load, load_tree, read_header, read_meta, save, save_tree


class UserNet(nn.Module):
    """A user model not built by create_model: conv-bn-relu, pooled, linear."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 4)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


def _narrow(model: UserNet, keep: list[int]) -> UserNet:
    """Hand-made physical pruning of conv output channels (what the engine will do)."""
    conv, bn, fc = model.conv, model.bn, model.fc
    new_conv = nn.Conv2d(3, len(keep), 3, padding=1, bias=False)
    new_conv.weight.data = conv.weight.data[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).data = getattr(bn, name).data[keep].clone()
    new_fc = nn.Linear(len(keep), 4)
    new_fc.weight.data, new_fc.bias.data = fc.weight.data[:, keep].clone(), fc.bias.data.clone()
    model.conv, model.bn, model.fc = new_conv, new_bn, new_fc
    return model


def _randomise_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_user_model_round_trip_with_fresh_instance(tmp_path):
    torch.manual_seed(0)
    model = UserNet().eval()
    _randomise_bn(model)
    path = save(model, tmp_path / "m.safetensors", meta={"metrics": {"top1": 91.5}})
    restored = load(path, model=UserNet()).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), restored(x))
    assert read_meta(path) == {"metrics": {"top1": 91.5}}


def test_pruned_user_model_is_rebuilt_at_its_pruned_width(tmp_path):
    torch.manual_seed(0)
    model = _narrow(UserNet(8), [0, 2, 5]).eval()
    _randomise_bn(model)
    path = save(model, tmp_path / "m.safetensors")
    restored = load(path, model=UserNet(8)).eval()
    assert restored.conv.out_channels == 3 and restored.bn.num_features == 3 and restored.fc.in_features == 3
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), restored(x))
    assert read_header(path)["layers"]["conv"]["args"]["out_channels"] == 3


def test_zoo_model_reloads_without_the_object(tmp_path):
    torch.manual_seed(0)
    model = secateurs.create_model("test_resnet", num_classes=7, in_channels=1).eval()
    _randomise_bn(model)
    path = save(model, tmp_path / "m.safetensors")
    restored = load(path).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), restored(x))
    assert read_header(path)["arch"] == {"name": "test_resnet", "kwargs": {"num_classes": 7, "in_channels": 1}}


def test_model_without_architecture_needs_an_instance(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="model=MyNet"):
        load(path)


def test_truncated_file_is_refused(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 50])
    with pytest.raises(CheckpointError, match="truncated|not a readable"):
        load(path, model=UserNet())


def test_tampered_tensor_is_refused(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity"):
        load(path, model=UserNet())


def test_tampered_header_is_refused(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors", meta={"note": "aaaa"})
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].replace(b"aaaa", b"bbbb")
    assert len(header) == n
    path.write_bytes(data[:8] + header + data[8 + n :])
    with pytest.raises(CheckpointError, match="integrity"):
        read_meta(path)


def test_plain_safetensors_file_is_refused_with_advice(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not one written by secateurs"):
        load(path, model=UserNet())


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        load(tmp_path / "nope.safetensors")


def test_a_pickle_is_never_executed(tmp_path):
    """A torch.save pickle renamed to .safetensors is refused before anything runs."""
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load(path, model=UserNet())
    assert not marker.exists()


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="does not have|does not fit"):
        load(path, model=nn.Sequential(nn.Linear(2, 2)))


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = save(UserNet(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    import secateurs.io._safefile as sf

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "save_file", boom)
    with pytest.raises(OSError):
        save(UserNet(16), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_state_tree_round_trip(tmp_path):
    model = UserNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    tree = {
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": 3,
        "history": [{"loss": 1.5, "name": "x"}],
        "pair": (1, None),
    }
    restored = load_tree(save_tree(tmp_path / "s.safetensors", tree))
    assert restored["epoch"] == 3 and restored["history"] == tree["history"] and restored["pair"] == (1, None)
    assert torch.equal(restored["rng"], tree["rng"])
    state = restored["optimizer"]["state"]
    assert set(state) == set(tree["optimizer"]["state"])  # integer keys survive
    for k, v in tree["optimizer"]["state"].items():
        assert torch.equal(state[k]["momentum_buffer"], v["momentum_buffer"])
    opt.load_state_dict(restored["optimizer"])


def test_a_model_file_is_not_a_state_file(tmp_path):
    path = save(UserNet(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="not a state file"):
        load_tree(path)
    tree = save_tree(tmp_path / "s.safetensors", {"a": 1})
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load(tree, model=UserNet())


def test_layers_switched_for_ddp_are_still_recorded(tmp_path):
    """Under torchrun the trainer swaps BatchNorm2d for GlobalBatchNorm2d; checkpoints written
    then must still record every BN width, or a pruned model would not rebuild."""
    from secateurs.io.checkpoint import read_header
    from secateurs.train import set_global_batchnorm

    model = _narrow(UserNet(8), [1, 4])
    set_global_batchnorm(model, True)
    header = read_header(save(model, tmp_path / "m.safetensors"))
    assert header["layers"]["bn"] == {
        "type": "BatchNorm2d",
        "args": {"num_features": 2, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True},
    }
    assert load(tmp_path / "m.safetensors", model=UserNet(8)).bn.num_features == 2
