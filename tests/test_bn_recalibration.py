"""BN recalibration: the statistics it writes against the BN inputs recorded independently
(forward hooks, float64, one ``torch.var_mean`` over all batches), what it must leave alone,
and its place in the pruning run (metrics, defaults, resume). Under torchrun:
test_bn_recalibration_ddp.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import secateurs
from secateurs import ConfigError
from secateurs.data import load_dataset
from secateurs.pipeline import PruneConfig
from secateurs.pipeline.recalibration import DEFAULT_BN_RECALIBRATION
from secateurs.pipeline.run import calibration_batches, top1_accuracy
from secateurs.train import GlobalBatchNorm2d, recalibrate_bn, trainer

pytestmark = pytest.mark.usefixtures("one_thread")
STATS = ("running_mean", "running_var", "num_batches_tracked")
CPU = torch.device("cpu")


class Net2d(nn.Module):
    """conv -> BN -> ReLU -> dropout -> conv -> BN -> pool -> linear -> BN1d -> linear: a BN
    fed by another BN's batch-normalised output, a dropout that must stay off, BN1d on (N, C)."""

    def __init__(self, bn: type = nn.BatchNorm2d) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            bn(6),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(6, 5, 3),
            bn(5),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(20, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Net1d3d(nn.Module):
    """BN1d on (N, C, L) and BN3d on (N, C, D, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)
        self.c3, self.b3 = nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.b1(self.c1(x.flatten(2)))
        b = self.b3(self.c3(x.unsqueeze(1)))  # channels as depth
        return a.mean((1, 2)) + b.mean((1, 2, 3, 4))


MODELS = {
    "bn2d+bn1d": Net2d,
    "bn1d(N,C,L)+bn3d": Net1d3d,
    "syncbn": lambda: Net2d(nn.SyncBatchNorm),
    "global-bn": lambda: Net2d(GlobalBatchNorm2d),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # statistics far from the data's, so a recalibration that did nothing shows
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-3, 3)
                m.running_var.uniform_(5, 9)
                m.num_batches_tracked.fill_(1234)
    return model


def _batches(sizes: tuple[int, ...] = (8, 8, 5), seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 9, 9, generator=g) * 2 + 1 for n in sizes]


def _record_bn_inputs(model: nn.Module) -> tuple[dict[str, list[torch.Tensor]], list]:
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            hooks.append(
                m.register_forward_pre_hook(
                    lambda mod, args, name=name: seen.setdefault(name, []).append(args[0].detach().double().clone())
                )
            )
    return seen, hooks


def _reference(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance per channel over every value of every batch."""
    x = torch.cat([t.movedim(1, -1).reshape(-1, t.shape[1]) for t in inputs])
    var, mean = torch.var_mean(x, dim=0, unbiased=True)
    return mean, var


@pytest.mark.parametrize("name", sorted(MODELS))
def test_statistics_equal_the_inputs_mean_and_unbiased_variance(name):
    model = _model(name)
    seen, hooks = _record_bn_inputs(model)
    result = recalibrate_bn(model, _batches())
    for h in hooks:
        h.remove()
    assert (result.batches, result.samples) == (3, 21)
    assert result.layers == len(seen) > 0
    for bn_name, inputs in seen.items():
        bn = model.get_submodule(bn_name)
        mean, var = _reference(inputs)
        assert torch.allclose(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6), bn_name
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-5, atol=1e-6), bn_name
        assert int(bn.num_batches_tracked) == 3


def test_bn_layers_run_in_train_mode_and_the_rest_in_eval_mode():
    model = _model("bn2d+bn1d")
    modes: dict[str, bool] = {}

    def record(name: str):
        def hook(module: nn.Module, args, out) -> None:
            modes.setdefault(name, module.training)

        return hook

    for name, m in model.named_modules():
        if name:
            m.register_forward_hook(record(name))
    recalibrate_bn(model, _batches())
    bn = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert {n for n, training in modes.items() if training} == bn
    assert "features.3" in modes and not modes["features.3"]  # the dropout


def test_nothing_but_bn_statistics_changes_and_modes_classes_momenta_are_restored():
    model = _model("global-bn")
    model.train()
    model.head.eval()
    model.features[1].momentum = None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = [
        (m, m.training, type(m), getattr(m, "momentum", None), getattr(m, "track_running_stats", None))
        for m in model.modules()
    ]
    recalibrate_bn(model, [(x, torch.zeros(len(x))) for x in _batches()])  # (x, y) batches as a loader gives
    after = model.state_dict()
    for k, v in before.items():
        if k.rsplit(".", 1)[-1] in STATS:
            assert not torch.equal(after[k], v), k
        else:
            assert torch.equal(after[k], v), k
    assert [
        (m, m.training, type(m), getattr(m, "momentum", None), getattr(m, "track_running_stats", None))
        for m in model.modules()
    ] == state


def test_a_failing_pass_leaves_the_model_as_it_was():
    model = _model("bn2d+bn1d")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError):
        recalibrate_bn(model, [_batches()[0], torch.randn(4, 2, 9, 9)])  # 2 channels: the conv refuses it
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(m.training for m in model.modules())
    assert type(model.features[1]) is nn.BatchNorm2d


def test_max_batches_and_no_batches():
    model = _model("bn2d+bn1d")
    seen, _ = _record_bn_inputs(model)
    assert recalibrate_bn(model, _batches(), max_batches=2).batches == 2
    mean, _ = _reference(seen["features.1"][:2])
    assert torch.allclose(model.features[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="no batches"):
        recalibrate_bn(_model("bn2d+bn1d"), [])
    with pytest.raises(ConfigError, match="max_batches"):
        recalibrate_bn(_model("bn2d+bn1d"), _batches(), max_batches=-1)


# --- a trained model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    kw = dict(num_samples=512, num_classes=10, image_size=16)
    train_set, test_set = load_dataset("synthetic", "train", **kw), load_dataset("synthetic", "test", **kw)
    torch.manual_seed(0)
    model = secateurs.create_model("test_resnet", num_classes=10, in_channels=3)
    secateurs.train(
        model,
        train_set,
        None,
        secateurs.TrainConfig(epochs=6, batch_size=64, lr=0.05, augment=False, progress=False, device="cpu"),
    )
    return model, train_set, test_set


def test_recalibrating_an_unpruned_model_on_its_training_data_keeps_its_accuracy(trained):
    """Within noise: two binomial standard errors of a top-1 measured on the test samples."""
    model, train_set, test_set = trained
    before = top1_accuracy(model, test_set, CPU)
    net = copy.deepcopy(model)
    recalibrate_bn(net, calibration_batches(train_set, 256, 5, CPU, 64)())
    p, n = before / 100, len(test_set.labels)
    assert abs(top1_accuracy(net, test_set, CPU) - before) <= 200 * (p * (1 - p) / n) ** 0.5
    means = [k for k in model.state_dict() if k.endswith("running_mean")]
    assert means and not any(torch.equal(net.state_dict()[k], model.state_dict()[k]) for k in means)  # it ran


def _prune(model: nn.Module, train_set, test_set, method: str = "l1", **options):
    options = {"macs_reduction": 0.5, "finetune": "none", "latency": False, **options}
    return secateurs.prune(model, method, train_set=train_set, test_set=test_set, **options)


def test_the_round_records_top1_before_and_after_recalibration_and_it_rises(trained):
    model, train_set, test_set = trained
    pruned, result = _prune(model, train_set, test_set, bn_recalibration=4)
    r = result.to_dict()["rounds"][0]
    assert r["top1_after_recalibration"] == top1_accuracy(pruned, test_set, CPU) == r["top1_after_pruning"]
    assert r["top1_after_recalibration"] > r["top1_after_cut"] + 5
    assert r["recalibration_batches"] == 4 and r["recalibration_s"] > 0


def _is_subsequence(part: torch.Tensor, whole: torch.Tensor) -> bool:
    it = iter(whole.tolist())
    return all(any(v == w for w in it) for v in part.tolist())


def test_off_leaves_the_bn_buffers_as_surgery_left_them(trained):
    model, train_set, test_set = trained
    original = model.state_dict()
    off, result = _prune(model, train_set, test_set, bn_recalibration=0)
    on, _ = _prune(model, train_set, test_set)  # the default: on
    r = result.rounds[0]
    assert (r.top1_after_recalibration, r.recalibration_batches) == (None, 0)
    assert r.top1_after_pruning == r.top1_after_cut == top1_accuracy(off, test_set, CPU)
    bn = [k for k in off.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert bn and all(_is_subsequence(off.state_dict()[k], original[k]) for k in bn)  # kept channels, untouched
    assert not any(_is_subsequence(on.state_dict()[k], original[k]) for k in bn)


def test_defaults_probability_off_others_on_with_a_train_set():
    config = PruneConfig(method="l1", macs_reduction=0.5)
    assert (config.resolved_bn_recalibration(True), config.resolved_bn_recalibration(False)) == (
        DEFAULT_BN_RECALIBRATION,
        0,
    )
    assert PruneConfig(method="probability", params_reduction=0.2).resolved_bn_recalibration(True) == 0
    assert (
        PruneConfig(method="probability", params_reduction=0.2, bn_recalibration=3).resolved_bn_recalibration(True) == 3
    )
    assert PruneConfig(method="l1", macs_reduction=0.5, bn_recalibration=0).resolved_bn_recalibration(True) == 0
    with pytest.raises(ConfigError, match="bn_recalibration must be"):
        PruneConfig(method="l1", macs_reduction=0.5, bn_recalibration=-1)


@pytest.mark.parametrize("asked, batches", [(None, 0), (2, 2)])
def test_probability_recalibrates_only_when_asked(trained, asked, batches):
    model, train_set, test_set = trained
    _, result = _prune(
        model, train_set, test_set, "probability", macs_reduction=None, params_reduction=0.2, bn_recalibration=asked
    )
    assert result.rounds[0].recalibration_batches == batches
    assert (result.rounds[0].top1_after_recalibration is None) == (batches == 0)


def test_asking_for_recalibration_without_a_train_set_is_refused_before_anything_runs(trained):
    model, _, test_set = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="bn_recalibration=2 draws batches from a train_set"):
        _prune(model, None, test_set, bn_recalibration=2)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_hnsi_recalibrates_after_materialisation(trained):
    model, train_set, test_set = trained
    pruned, result = _prune(model, train_set, test_set, "hnsi", bn_recalibration=2)
    final = result.finalized["recalibration"]
    assert final["recalibration_batches"] == 2 and "recalibration_s" not in final  # a time: in the log
    assert final["top1_after_recalibration"] == result.after["top1"] == top1_accuracy(pruned, test_set, CPU)


class Killed(Exception):
    pass


def test_resume_with_recalibration_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    kw = dict(num_samples=128, num_classes=4)
    train_set, test_set = load_dataset("synthetic", "train", **kw), load_dataset("synthetic", "test", **kw)
    options = dict(
        macs_reduction=0.5,
        rounds=3,
        finetune_epochs=6,
        method_options={"final_share": None},  # [2, 2, 2]: fine-tuning between the cuts
        latency=False,
        bn_recalibration=1,
        finetune_train={"batch_size": 64, "progress": False, "max_steps_per_epoch": 2},
    )

    def run(name: str, resume: bool = False):
        torch.manual_seed(0)
        model = secateurs.create_model("test_resnet", num_classes=4, in_channels=3)
        return secateurs.prune(
            model,
            "l1-capped",
            train_set=train_set,
            test_set=test_set,
            run_dir=tmp_path / name,
            resume=resume,
            **options,
        )

    whole, whole_result = run("whole")
    real, writes = trainer._write_epoch, []

    def dying(*args, **kwargs):
        real(*args, **kwargs)
        writes.append(1)
        if len(writes) == 3:  # in round 2, after its cut and recalibration
            raise Killed

    monkeypatch.setattr(trainer, "_write_epoch", dying)
    with pytest.raises(Killed):
        run("cut")
    monkeypatch.setattr(trainer, "_write_epoch", real)
    resumed, result = run("cut", resume=True)
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    figures = ("top1_after_cut", "top1_after_recalibration", "recalibration_batches")
    assert [[getattr(r, f) for f in figures] for r in result.rounds] == [
        [getattr(r, f) for f in figures] for r in whole_result.rounds
    ]
    assert all(r.recalibration_batches == 1 for r in result.rounds)
