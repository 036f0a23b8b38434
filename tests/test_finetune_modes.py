"""Fine-tuning modes: the mutual-learning and distillation losses against hand computations,
who gets trained in each mode, resume with a peer, and the modes through ``prune``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
from _finetune import TRAIN, build, net, watch_moves

import secateurs
from secateurs.io import load_tree
from secateurs.pipeline import FINETUNE_MODES, mutual_loss, prune
from secateurs.pipeline.finetune import finetune
from secateurs.train import STATE_FILE, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def data():
    kw = dict(num_samples=96, num_classes=4)
    return secateurs.load_dataset("synthetic", "train", **kw), secateurs.load_dataset("synthetic", "test", **kw)


def state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def changed(m: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in m.state_dict().items() if v.is_floating_point())


# --- the loss ----------------------------------------------------------------------------


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def _hand_mutual(mine: list[list[float]], theirs: list[list[float]], y: list[int], t: float, w: float) -> float:
    """CE(y, p_mine) + w * T^2 * KL(p_theirs/T || p_mine/T), averaged over the rows, by loops."""
    total = 0.0
    for a, b, label in zip(mine, theirs, y):
        ce = -math.log(_softmax(a, 1.0)[label])
        pa, pb = _softmax(a, t), _softmax(b, t)
        kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(pa, pb))
        total += ce + w * t * t * kl
    return total / len(y)


@pytest.mark.parametrize("t, w", [(1.0, 1.0), (2.0, 0.7), (4.0, 0.0), (0.5, 3.0)])
def test_mutual_loss_matches_a_hand_computation(t, w):
    mine = [[1.0, 2.0, 0.5], [0.1, -1.0, 3.0], [0.0, 0.0, 0.0]]
    theirs = [[0.3, 2.5, -1.0], [2.0, 0.0, 1.0], [1.0, -2.0, 0.5]]
    y = [1, 2, 0]
    got = mutual_loss(torch.tensor(mine), torch.tensor(theirs), torch.tensor(y), t, w)
    assert float(got) == pytest.approx(_hand_mutual(mine, theirs, y, t, w), rel=1e-6)


def test_the_other_peer_is_a_fixed_target():
    a = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    b = torch.tensor([[0.3, 2.5, -1.0]], requires_grad=True)
    mutual_loss(a, b, torch.tensor([1]), 2.0, 1.0).backward()
    assert b.grad is None and a.grad is not None and a.grad.abs().sum() > 0


# --- who is trained -------------------------------------------------------------------------


def test_mlft_trains_both_peers_and_leaves_the_reference(data):
    model, reference = net(0, 4), net(1)
    ref_before, model_before = state(reference), state(model)
    # peer_every=1: the peer carries no step counter, so its state is the reference's, key for key
    objective, companions = build("mlft", model, reference, peer_every=1)
    peer = companions["peer"]
    assert peer is not reference and all(torch.equal(v, ref_before[k]) for k, v in peer.state_dict().items())
    peer_before = state(peer)
    train(model, data[0], None, TrainConfig(**TRAIN), objective=objective, companions=companions)
    assert changed(model, model_before) and changed(peer, peer_before)
    assert not changed(reference, ref_before)


def test_mlft_with_a_pruned_peer_starts_from_a_perturbed_copy(data):
    model = net(0, 4)
    _, companions = build("mlft", model, net(1), peer="pruned", peer_noise=0.05, peer_every=1)  # no step counter
    peer = companions["peer"]
    assert [v.shape for v in peer.state_dict().values()] == [v.shape for v in model.state_dict().values()]
    w, pw = model[0].weight.detach(), peer[0].weight.detach()
    assert not torch.equal(w, pw) and (pw - w).std() == pytest.approx(0.05 * float(w.std()), rel=0.5)
    _, again = build("mlft", model, net(1), peer="pruned", peer_noise=0.05)  # seeded: the same peer
    assert torch.equal(again["peer"][0].weight, pw)


def test_kd_freezes_the_teacher(data):
    model, reference = net(0, 4), net(1)
    ref_before, model_before = state(reference), state(model)
    result = finetune(model, "kd", reference, data[0], None, TrainConfig(**TRAIN), None, options={"temperature": 3.0})
    assert result is not None and changed(model, model_before)
    assert not changed(reference, ref_before)


@pytest.mark.parametrize("mode", ["kd", "mlft"])
def test_without_the_distillation_term_both_modes_are_tft(data, mode):
    """weight 0 leaves cross-entropy alone: the pruned model follows tft's trajectory exactly,
    whatever the peer or teacher does."""
    a, b = net(0, 4), net(0, 4)
    finetune(a, "tft", net(1), data[0], None, TrainConfig(**TRAIN), None)
    finetune(b, mode, net(1), data[0], None, TrainConfig(**TRAIN), None, options={"weight": 0.0})
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k


def test_a_companion_named_like_an_objective_argument_is_refused(data):
    with pytest.raises(secateurs.ConfigError, match="'x'"):
        train(net(0, 4), data[0], None, TrainConfig(**TRAIN), companions={"x": net(1)})


def _mlft_run(data, config: TrainConfig, run_dir, resume: bool = False, stop_at: int | None = None, **options):
    """An mlft training of ``net(0, 4)`` with a peer from ``net(1)``, interrupted at step
    ``stop_at`` if given; the model and the peer it ended with."""
    model = net(0, 4)
    objective, companions = build("mlft", model, net(1), **options)
    steps = [0]

    def after_step(_):
        steps[0] += 1
        if steps[0] == stop_at:
            raise KeyboardInterrupt

    train(
        model,
        data[0],
        None,
        config,
        run_dir=run_dir,
        resume=resume,
        objective=objective,
        companions=companions,
        after_step=after_step,
    )
    return model, companions["peer"]


def _killed_and_resumed_equals_whole(data, config: TrainConfig, tmp_path, stop_at: int, **options):
    """Killed at step ``stop_at`` and resumed: the same model and peer as one uninterrupted run.
    Returns the uninterrupted run's peer."""
    whole = _mlft_run(data, config, tmp_path / "whole", **options)
    with pytest.raises(KeyboardInterrupt):
        _mlft_run(data, config, tmp_path / "cut", stop_at=stop_at, **options)
    resumed = _mlft_run(data, config, tmp_path / "cut", resume=True, **options)
    for got, want in zip(resumed, whole):
        for k, v in want.state_dict().items():
            assert torch.equal(got.state_dict()[k], v), k
    return whole[1]


def test_a_resumed_mlft_run_restores_the_peer(data, tmp_path):
    """Killed after the first epoch and resumed: the same model and peer as one uninterrupted run."""
    config = TrainConfig(**{**TRAIN, "epochs": 2})
    whole_peer = _killed_and_resumed_equals_whole(data, config, tmp_path, stop_at=3)  # the first step of epoch 2
    saved = load_tree(tmp_path / "whole" / STATE_FILE)["companions"]["peer"]
    assert all(torch.equal(saved[k], v) for k, v in whole_peer.state_dict().items())


def test_a_peer_learning_every_third_step_changes_only_on_those_steps(data):
    """peer_every=3: the peer's weights move on steps 1 and 4 and stay put on steps 2, 3, 5, 6
    (its BN statistics still follow the batches), while the pruned model moves on every step."""
    model = net(0, 4)
    objective, companions = build("mlft", model, net(1), peer_every=3)
    moved, after_step = watch_moves(model, companions["peer"])
    config = TrainConfig(**{**TRAIN, "epochs": 2, "max_steps_per_epoch": 3, "momentum": 0.0, "weight_decay": 0.0})
    train(model, data[0], None, config, objective=objective, companions=companions, after_step=after_step)
    assert moved == [(True, True), (True, False), (True, False)] * 2


def test_a_resumed_mlft_run_with_a_sparse_peer_takes_the_same_peer_steps(data, tmp_path):
    """The peer's step counter is saved with the run: killed mid-run with peer_every=2 (odd
    steps per epoch) and resumed, model and peer equal one uninterrupted run."""
    config = TrainConfig(**{**TRAIN, "epochs": 2, "max_steps_per_epoch": 3})
    _killed_and_resumed_equals_whole(data, config, tmp_path, stop_at=4, peer_every=2)  # the first step of epoch 2


def test_peer_every_below_one_is_refused():
    with pytest.raises(secateurs.ConfigError, match="peer_every"):
        FINETUNE_MODES["mlft"].make_options({"peer_every": 0})


# --- through prune -----------------------------------------------------------------------


def test_a_mode_that_reads_the_unpruned_network_refuses_to_run_without_it(data):
    for mode in ("kd", "mlft"):
        with pytest.raises(secateurs.ConfigError, match="reference"):
            finetune(net(0, 4), mode, None, data[0], None, TrainConfig(**TRAIN), None)


def _prune(model, data, mode):
    return prune(
        model,
        "l1",
        macs_reduction=0.3,
        finetune=mode,
        finetune_epochs=1,
        finetune_options={"temperature": 2.0} if mode != "tft" else {},
        finetune_train={"batch_size": 32, "progress": False, "max_steps_per_epoch": 2},
        train_set=data[0],
        test_set=data[1],
        latency=False,
    )


@pytest.mark.parametrize("mode", ["kd", "mlft"])
def test_prune_fine_tunes_in_every_mode(data, mode):
    torch.manual_seed(0)
    model = secateurs.create_model("test_resnet", num_classes=4, in_channels=3)
    before = state(model)
    pruned, result = _prune(model, data, mode)
    plain, _ = _prune(model, data, "tft")
    assert result.config["finetune"] == mode and result.config["finetune_options"] == {"temperature": 2.0}
    assert result.rounds[-1].finetune_epochs == 1 and result.rounds[-1].top1_after_finetune is not None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model: untouched
    assert secateurs.count_macs(pruned, SHAPE) < secateurs.count_macs(copy.deepcopy(model), SHAPE)
    # the same cut, the same data order: only the objective differs, and it shows
    assert plain.state_dict().keys() == pruned.state_dict().keys()
    assert any(
        not torch.equal(v, pruned.state_dict()[k]) for k, v in plain.state_dict().items() if v.is_floating_point()
    )
