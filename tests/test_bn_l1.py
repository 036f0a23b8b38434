"""Network slimming's BN sparsity term (``TrainConfig.bn_l1``) against hand computations:
the loss and the gradient it adds, and what one SGD step does with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from secateurs.errors import ConfigError
from secateurs.models import create_model
from secateurs.train import TrainConfig, train
from secateurs.train.objectives import cross_entropy, with_bn_l1

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 5, 5))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, -2.0, 1.5, -0.25]))
    return net


def test_the_term_is_strength_times_the_sum_of_abs_gamma_and_its_gradient_the_sign():
    net, x, y = _net(), torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 0, 1, 1, 0])
    plain, penalised = cross_entropy(), with_bn_l1(cross_entropy(), 0.1)
    loss0, _ = plain(net, x, y)
    (g0,) = torch.autograd.grad(loss0, net[1].weight)
    loss1, logits = penalised(net, x, y)
    (g1,) = torch.autograd.grad(loss1, net[1].weight)
    # by hand: 0.1 * (0.5 + 2 + 1.5 + 0.25) = 0.425; gradient 0.1 * sign(gamma)
    assert float((loss1 - loss0).detach()) == pytest.approx(0.425, abs=1e-6)
    assert torch.allclose(g1 - g0, torch.tensor([0.1, -0.1, 0.1, -0.1]), atol=1e-6)
    assert torch.equal(logits, net(x))


def test_zero_strength_is_the_objective_itself():
    objective = cross_entropy()
    assert with_bn_l1(objective, 0.0) is objective


def test_one_sgd_step_moves_each_scale_lr_times_strength_towards_zero(synthetic_data):
    """The same first step with and without the term (plain SGD: no momentum, no weight
    decay, constant rate): the forward passes are the same, so the scales differ by exactly
    ``-lr * strength * sign(gamma)``, the term's gradient step."""

    def one_step(bn_l1: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = create_model("test_resnet", num_classes=4, in_channels=3)
        before = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        config = TrainConfig(
            epochs=1,
            max_steps_per_epoch=1,
            batch_size=64,
            lr=0.05,
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
            progress=False,
            bn_l1=bn_l1,
        )
        train(model, synthetic_data[0], None, config)
        return before, [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    start, plain = one_step(0.0)
    _, penalised = one_step(0.2)
    assert len(start) > 1
    for g0, a, b in zip(start, plain, penalised, strict=True):
        assert torch.allclose(b - a, -0.05 * 0.2 * torch.sign(g0), atol=1e-6)


def test_a_negative_strength_is_refused_by_name():
    with pytest.raises(ConfigError, match="bn_l1 must be >= 0, got -0.1"):
        TrainConfig(bn_l1=-0.1)
