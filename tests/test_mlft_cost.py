"""mlft's cost options: ``peer_every`` (the peer learns on one step in k) and
``distil_every_step`` (whether the steps between use the peer's no-grad prediction or plain
cross-entropy), checked against losses computed by hand and against weights watched step by step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
from _finetune import TRAIN, build, net, watch_moves

import secateurs
from secateurs.pipeline import FINETUNE_MODES
from secateurs.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return secateurs.load_dataset("synthetic", "train", num_samples=256, num_classes=4)  # 8 batches of 32


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    z = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - z for v in row]


def _ce(mine: list[list[float]], y: list[int]) -> float:
    return sum(-_log_softmax(a)[label] for a, label in zip(mine, y)) / len(y)


def _kl(mine: list[list[float]], theirs: list[list[float]]) -> float:
    """KL(p_theirs || p_mine) at T = 1, averaged over rows, by loops."""
    total = 0.0
    for a, b in zip(mine, theirs):
        la, lb = _log_softmax(a), _log_softmax(b)
        total += sum(math.exp(q) * (q - p) for p, q in zip(la, lb))
    return total / len(mine)


@pytest.mark.parametrize("distil_every_step", [True, False])
def test_each_step_s_loss_is_the_hand_computed_one(distil_every_step):
    """peer_every=3: steps 1 and 4 are both peers' mutual losses; steps 2, 3 are the pruned
    network's mutual loss towards a peer run without gradients, or its cross-entropy alone
    with the peer not run at all."""
    model, peer_ref = net(0, 4), net(1)
    objective, companions = build("mlft", model, peer_ref, peer_every=3, distil_every_step=distil_every_step)
    peer = companions["peer"]
    calls: list[bool] = []
    peer.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()) if m is peer else None)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
        with torch.no_grad():  # train-mode copies: the same batch statistics as the objective's forward
            mine = copy.deepcopy(model)(x).tolist()
            theirs = copy.deepcopy(peer)(x).tolist()
        labels = y.tolist()
        loss, logits = objective(model, x, y, peer=peer)
        assert torch.allclose(logits, torch.tensor(mine), atol=1e-5)
        learns = step % 3 == 0
        if learns:
            want = _ce(mine, labels) + _kl(mine, theirs) + _ce(theirs, labels) + _kl(theirs, mine)
        elif distil_every_step:
            want = _ce(mine, labels) + _kl(mine, theirs)
        else:
            want = _ce(mine, labels)
        assert float(loss.detach()) == pytest.approx(want, rel=1e-5), step
        loss.backward()
        assert model[0].weight.grad is not None
        assert (peer[0].weight.grad is not None) == learns, step
        model.zero_grad(set_to_none=True)
        peer.zero_grad(set_to_none=True)
    if distil_every_step:
        assert calls == [True, False, False, True]
    else:
        assert calls == [True, True]  # the peer runs on its own steps only


@pytest.mark.parametrize("distil_every_step", [True, False])
def test_by_default_the_peer_learns_on_every_fourth_step(data, distil_every_step):
    """Watched through the trainer, 8 steps: the pruned model moves on every step, the peer's
    weights on steps 1 and 5 only."""
    assert FINETUNE_MODES["mlft"].make_options({}).peer_every == 4
    model = net(0, 4)
    objective, companions = build("mlft", model, net(1), distil_every_step=distil_every_step)
    moved, after_step = watch_moves(model, companions["peer"])
    config = TrainConfig(**{**TRAIN, "max_steps_per_epoch": 8, "momentum": 0.0, "weight_decay": 0.0})
    train(model, data, None, config, objective=objective, companions=companions, after_step=after_step)
    assert moved == [(True, True), (True, False), (True, False), (True, False)] * 2


def test_skipping_the_peer_between_its_steps_trains_like_tft_there(data):
    """With distil_every_step=False, a step on which the peer does not learn is a tft step:
    a pruned model trained 3 steps (peer on step 1 only) equals one trained 1 mlft step then 2
    plain cross-entropy steps from the same state and data."""
    config = TrainConfig(**{**TRAIN, "max_steps_per_epoch": 3, "momentum": 0.0, "weight_decay": 0.0})
    a = net(0, 4)
    objective, companions = build("mlft", a, net(1), peer_every=3, distil_every_step=False)
    train(a, data, None, config, objective=objective, companions=companions)

    b = net(0, 4)
    objective_b, companions_b = build("mlft", b, net(1), peer_every=1)
    steps = [0]

    def mixed(n, x, y, peer):
        steps[0] += 1
        if steps[0] == 1:
            return objective_b(n, x, y, peer)
        logits = n(x)
        return nn.functional.cross_entropy(logits, y), logits

    train(b, data, None, config, objective=mixed, companions=companions_b)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k
