"""Kernel masks: held at exactly zero through training, counted, and materialized exactly."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from engine_models import feature_stack

import secateurs
from secateurs.errors import PruningError
from secateurs.graph.masks import MASK, apply_kernel_masks
from secateurs.graph.materialize import materialize
from secateurs.io import load_tree
from secateurs.measure import count_macs, count_params

SHAPE = (3, 8, 8)


def chain(last_kernel: int = 3) -> nn.Sequential:
    """A plain chain: conv3x3 a -> BN -> ReLU -> conv3x3 b -> BN -> ReLU -> conv c -> pool -> linear.

    Every channel of a and b has exactly one reader, so a dropped column frees its producer.
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("a", nn.Conv2d(3, 6, 3, padding=1, bias=False)),
                ("a_bn", nn.BatchNorm2d(6)),
                ("a_act", nn.ReLU()),
                ("b", nn.Conv2d(6, 8, 3, padding=1, bias=False)),
                ("b_bn", nn.BatchNorm2d(8)),
                ("b_act", nn.ReLU()),
                ("c", nn.Conv2d(8, 5, last_kernel, padding=last_kernel // 2)),
                ("pool", nn.AdaptiveAvgPool2d(1)),
                ("flat", nn.Flatten()),
                ("fc", nn.Linear(5, 4)),
            ]
        )
    )


class ResidualThenHead(nn.Module):
    """conv a -> BN -> ReLU = y; relu(BN(conv b(y)) + y); 1x1 conv c -> pool -> linear.
    The add ties b's filters to a's, so a constant b filter cannot go; c's can."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.c = nn.Conv2d(6, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return self.head(self.c(self.act(self.bn(self.b(y)) + y)))


class TwoReaders(nn.Module):
    """conv a -> BN -> ReLU read by two convs (3x3 b, 1x1 c) whose outputs are added: a fan-out."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()
        self.b = nn.Conv2d(6, 4, 3, padding=1)
        self.c = nn.Conv2d(6, 4, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.a(x)))
        return self.head(self.b(y) + self.c(y))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so that a removed channel would show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g)
            m.running_mean = torch.randn(n, generator=g)
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model


def full_masks(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: torch.ones(model.get_submodule(n).weight.shape[:2], dtype=torch.bool) for n in names}


def random_masks(
    model: nn.Module, seed: int, drop_columns: float = 0.3, drop_rows: float = 0.0
) -> dict[str, torch.Tensor]:
    """Random kernels kept in every multi-kernel conv; about ``drop_columns`` of the columns
    and ``drop_rows`` of the rows (filters) emptied, and no other row or column empty."""
    g = torch.Generator().manual_seed(seed)

    def pick(n: int, p: float) -> torch.Tensor:
        chosen = torch.rand(n, generator=g) < p
        chosen[torch.randint(n, (1,), generator=g)] = False  # never all of them
        return chosen

    def some(t: torch.Tensor) -> int:
        idx = t.nonzero().flatten()
        return int(idx[torch.randint(len(idx), (1,), generator=g)])

    masks = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1:
            out, cols = m.weight.shape[:2]
            mask = torch.rand(out, cols, generator=g) > 0.4
            rows, columns = pick(out, drop_rows), pick(cols, drop_columns)
            mask[rows], mask[:, columns] = False, False
            for r in (~rows).nonzero().flatten().tolist():
                if not mask[r].any():
                    mask[r, some(~columns)] = True
            for c in (~columns).nonzero().flatten().tolist():
                if not mask[:, c].any():
                    mask[some(~rows), c] = True
            masks[name] = mask
    return masks


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def masked_weight_values(model: nn.Module, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([model.get_submodule(n).weight.detach()[~m].flatten() for n, m in masks.items()])


def no_masks_left(model: nn.Module) -> bool:
    return all(MASK not in m._buffers and not m._forward_pre_hooks for m in model.modules()) and all(
        not p._backward_hooks for p in model.parameters()
    )


# --- holding masks during training ------------------------------------------------------


def test_masked_weights_stay_zero_through_the_trainer(tmp_path):
    torch.manual_seed(0)
    model = chain()
    masks = random_masks(model, seed=1, drop_columns=0.0)
    apply_kernel_masks(model, masks)  # hooks alone: no after_step re-zeroing
    start = copy.deepcopy(model.state_dict())
    data = secateurs.load_dataset("synthetic", "train", num_samples=128, num_classes=4)
    config = secateurs.TrainConfig(
        epochs=1, batch_size=32, progress=False, device="cpu", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3
    )
    secateurs.train(model, data, None, config, run_dir=tmp_path / "run")

    masked = masked_weight_values(model, masks)
    assert masked.numel() > 0 and not masked.any()
    for name, mask in masks.items():
        assert not torch.equal(model.get_submodule(name).weight[mask], start[f"{name}.weight"][mask])
    # The trainer's own optimizer, from its resume state: momentum at masked kernels is 0.
    state = load_tree(tmp_path / "run" / "state.safetensors")["optimizer"]["state"]
    index = {name: i for i, (name, _) in enumerate(model.named_parameters())}
    for name, mask in masks.items():
        buf = state[index[f"{name}.weight"]]["momentum_buffer"]
        assert torch.equal(buf[~mask], torch.zeros_like(buf[~mask]))
        assert buf[mask].abs().sum() > 0


def test_existing_optimizer_state_is_zeroed():
    torch.manual_seed(0)
    model = chain()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 4, (8,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # momentum buffers now hold non-zero values everywhere
    masks = random_masks(model, seed=2, drop_columns=0.0)
    apply_kernel_masks(model, masks, optimizer=opt)
    for name, mask in masks.items():
        buf = opt.state[model.get_submodule(name).weight]["momentum_buffer"]
        assert torch.equal(buf[~mask], torch.zeros_like(buf[~mask]))
    for _ in range(3):
        step()
    assert not masked_weight_values(model, masks).any()


def test_deepcopy_of_a_masked_model_stays_masked():
    torch.manual_seed(0)
    model = chain()
    masks = random_masks(model, seed=6, drop_columns=0.0)
    apply_kernel_masks(model, masks)
    twin = copy.deepcopy(model)  # e.g. a second peer for mutual learning
    opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(twin(x), y).backward()
        opt.step()
    assert not masked_weight_values(twin, masks).any()
    materialize(twin, x)
    assert no_masks_left(twin)


def test_enforce_rezeroes_and_remove_takes_everything_off():
    model = chain()
    masks = random_masks(model, seed=3)
    held = apply_kernel_masks(model, masks)
    with torch.no_grad():
        for conv in held.convs.values():
            conv.weight.fill_(1.0)  # behind the hooks' back
    held.enforce(model)
    assert not masked_weight_values(model, masks).any()
    assert not no_masks_left(model)
    held.remove()
    assert no_masks_left(model)


def test_mask_is_a_non_persistent_buffer():
    model = chain()
    apply_kernel_masks(model, random_masks(model, seed=4))
    assert "b.kernel_mask" in dict(model.named_buffers())
    assert not any(k.endswith(MASK) for k in model.state_dict())


# --- measurement --------------------------------------------------------------------------


def test_sparse_macs_match_hand_count():
    model = chain()
    masks = random_masks(model, seed=5)
    apply_kernel_masks(model, masks)
    hw = 8 * 8  # "same" padding, stride 1 everywhere
    expected = hw * int(masks["a"].sum()) * 9 + hw * int(masks["b"].sum()) * 9 + hw * int(masks["c"].sum()) * 9 + 5 * 4
    assert count_macs(model, SHAPE, sparse=True) == expected


# --- materialize --------------------------------------------------------------------------


def test_materialize_removes_unread_input_channels_exactly():
    torch.manual_seed(0)
    model = randomize_bn(chain()).double()
    masks = full_masks(model, ["a", "b", "c"])
    masks["b"][:, [1, 4]] = False  # b no longer reads a's channels 1 and 4
    masks["b"][0, 0] = False  # a single kernel: stays as a zero
    masks["c"][:, 6] = False  # c no longer reads b's channel 6
    apply_kernel_masks(model, masks)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref = outputs(model, x)
    report = materialize(model, x)

    torch.testing.assert_close(outputs(model, x), ref, rtol=0, atol=1e-12)
    assert (model.a.out_channels, model.b.in_channels, model.b.out_channels, model.c.in_channels) == (4, 4, 7, 7)
    assert model.a_bn.num_features == 4 and model.b_bn.num_features == 7
    hw = 8 * 8  # a: 6 -> 4 filters of 3 inputs; b: 6x8 -> 4x7 kernels; c: 8 -> 7 inputs of 5 filters
    kernels = (6 - 4) * 3 + (6 * 8 - 4 * 7) + (8 - 7) * 5
    assert report.macs[0] - report.macs[1] == hw * 9 * kernels
    assert report.params[0] - report.params[1] == 9 * kernels + 2 * 2 + 1 * 2  # + BN weight and bias
    assert report.sparse_macs[1] == count_macs(model, SHAPE, sparse=True) < report.macs[1]  # b[0, 0] stays a zero
    assert {n: (c.inputs_removed, c.outputs_removed) for n, c in report.layers.items()} == {
        "a": (0, 2),
        "a_bn": (0, 2),
        "b": (2, 1),
        "b_bn": (0, 1),
        "c": (1, 0),
    }
    assert report.exact and report.kept == []
    assert no_masks_left(model)


def test_channel_still_read_by_another_consumer_stays():
    model = randomize_bn(TwoReaders()).double()
    masks = full_masks(model, ["b", "c"])
    masks["b"][:, 2] = False  # b drops a's channel 2, c still reads it
    masks["b"][:, 3] = False
    masks["c"][:, 3] = False  # both drop channel 3
    apply_kernel_masks(model, masks)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref = outputs(model, x)
    report = materialize(model, x)

    assert model.a.out_channels == 5 and model.b.in_channels == 5 and model.c.in_channels == 5
    assert [(k.module, k.role, k.index) for k in report.kept] == [("b", "input", 2)]
    assert "c still reads it" in report.kept[0].reason
    torch.testing.assert_close(outputs(model, x), ref, rtol=0, atol=1e-12)


def test_unprunable_channel_is_listed_not_raised():
    model = chain().double()
    masks = full_masks(model, ["a"])
    masks["a"][:, 0] = False  # the network input's channel 0: cannot be removed
    x = torch.randn(1, *SHAPE, dtype=torch.float64)
    report = materialize(model, x, masks)
    assert [(k.module, k.role, k.index) for k in report.kept] == [("a", "input", 0)]
    assert "network input" in report.kept[0].reason
    assert model.a.in_channels == 3 and not model.a.weight[:, 0].any()
    assert report.macs[0] == report.macs[1]


@pytest.mark.parametrize("kernel", [1, 3])
def test_constant_filter_is_folded(kernel):
    """A filter with no kernel left outputs its bias: removed, folded into c; exact for a 1x1
    c, and for a zero-padded 3x3 c exact away from the one-pixel border."""
    torch.manual_seed(0)
    model = randomize_bn(feature_stack(kernel)).double()
    model.b_bn.bias.data[5] = 3.0  # the constant survives the ReLU, so zero padding shows at the border
    masks = full_masks(model, ["b"])
    masks["b"][5] = False
    apply_kernel_masks(model, masks)
    bias = float(model.b.bias[5].detach())  # what filter 5 outputs now
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref = outputs(model, x)
    report = materialize(model, x)

    out = outputs(model, x)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(
        out if kernel == 1 else out[inner], ref if kernel == 1 else ref[inner], rtol=0, atol=1e-12
    )
    assert report.exact == (kernel == 1) and torch.allclose(out, ref) == (kernel == 1)  # 3x3: borders differ
    assert report.folded == {"b": {5: bias}}
    assert (model.b.out_channels, model.b_bn.num_features, model.c.in_channels) == (7, 7, 7)
    assert report.macs[0] - report.macs[1] == 8 * 8 * (9 * 6 + kernel * kernel * 5)
    assert no_masks_left(model)


def test_refused_fold_is_listed_and_the_rest_folded():
    torch.manual_seed(0)
    model = randomize_bn(ResidualThenHead()).double()
    masks = full_masks(model, ["b", "c"])
    masks["b"][1] = False  # constant, but added to a live channel: stays
    masks["c"][0] = False  # constant through pool and flatten into the linear: folded exactly
    apply_kernel_masks(model, masks)
    bias = float(model.c.bias[0].detach())
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    ref = outputs(model, x)
    report = materialize(model, x)

    torch.testing.assert_close(outputs(model, x), ref, rtol=0, atol=1e-12)
    assert report.folded == {"c": {0: bias}} and report.exact
    assert [(k.module, k.role, k.index) for k in report.kept] == [("b", "filter", 1)]
    assert "add" in report.kept[0].reason
    assert (model.b.out_channels, model.c.out_channels, model.head[2].in_features) == (6, 3, 3)
    assert not model.b.weight[1].any()


@pytest.mark.parametrize("arch", ["test_resnet", "test_vgg", "test_mobilenet_v2"])
def test_zoo_every_empty_filter_is_folded_or_listed(arch):
    torch.manual_seed(0)
    model = randomize_bn(secateurs.create_model(arch, num_classes=4)).double()
    masks = random_masks(model, seed=9, drop_columns=0.0, drop_rows=0.2)  # no column empty: no step 1
    apply_kernel_masks(model, masks)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    report = materialize(model, x)

    empty = {(n, r) for n, m in masks.items() for r in (~m.any(1)).nonzero().flatten().tolist()}
    folded = {(n, r) for n, rows in report.folded.items() for r in rows}
    listed = {(k.module, k.index) for k in report.kept if k.role == "filter"}
    assert empty and folded and not folded & listed and folded | listed == empty
    assert all(report.layers[n].outputs_removed == len(rows) for n, rows in report.folded.items())
    assert report.macs[1] < report.macs[0] and report.macs[1] == count_macs(model, (3, 32, 32))
    assert no_masks_left(model)


@pytest.mark.parametrize("arch", ["test_resnet", "test_vgg"])
def test_zoo_materialize_keeps_outputs_and_shrinks(arch):
    torch.manual_seed(0)
    model = randomize_bn(secateurs.create_model(arch, num_classes=4)).double()
    apply_kernel_masks(model, random_masks(model, seed=7))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = outputs(model, x)
    _, per_layer_before = count_macs(model, (3, 32, 32), per_layer=True)
    shapes_before = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    report = materialize(model, x)

    torch.testing.assert_close(outputs(model, x), ref, rtol=0, atol=1e-10)
    assert report.removed_units > 0 and report.macs[1] < report.macs[0] and report.params[1] < report.params[0]
    # Each layer's dense MACs scale with its weight's element count: spatial sizes are untouched.
    total, per_layer_after = count_macs(model, (3, 32, 32), per_layer=True)
    for name, macs in per_layer_before.items():
        now = model.get_submodule(name).weight.shape
        assert per_layer_after[name] * shapes_before[name].numel() == macs * now.numel()
    assert report.macs[1] == total
    assert all(k.role == "input" and k.reason for k in report.kept)
    assert no_masks_left(model)


@pytest.mark.parametrize("arch", ["test_resnet", "test_vgg"])
def test_zoo_materialized_model_saves_and_loads(arch, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(secateurs.create_model(arch, num_classes=4))
    apply_kernel_masks(model, random_masks(model, seed=8, drop_rows=0.1))  # removals and folds
    x = torch.randn(2, 3, 32, 32)
    materialize(model, x)
    secateurs.save(model, tmp_path / "m.safetensors")
    loaded = secateurs.load(tmp_path / "m.safetensors")
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert count_params(loaded) == count_params(model)


# --- errors -------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"b": torch.ones(8, 5, dtype=torch.bool)}, r"'b'.*\(8, 5\).*\(8, 6\)"),
        ({"bb": torch.ones(8, 6, dtype=torch.bool)}, r"no module 'bb'.*'b'"),
        ({"b_bn": torch.ones(8, 6, dtype=torch.bool)}, r"'b_bn' is a BatchNorm2d"),
        ({"b": torch.ones(8, 6)}, r"bool tensor of shape \(8, 6\)"),
        ({"dw": torch.ones(6, 1, dtype=torch.bool)}, r"'dw'.*depthwise"),
    ],
    ids=["shape", "unknown", "not-a-conv", "dtype", "depthwise"],
)
def test_bad_masks_raise_and_change_nothing(bad, message):
    model = chain()
    model.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    before = _state(model)
    masks = {"a": torch.zeros(6, 3, dtype=torch.bool), **bad}  # the good first mask must not be applied
    with pytest.raises(PruningError, match=message):
        apply_kernel_masks(model, masks)
    after = _state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert no_masks_left(model)


def test_masking_twice_is_refused():
    model = chain()
    apply_kernel_masks(model, full_masks(model, ["b"]))
    with pytest.raises(PruningError, match="already holds a kernel_mask"):
        apply_kernel_masks(model, full_masks(model, ["b"]))
