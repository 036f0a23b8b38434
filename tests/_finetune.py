"""What the fine-tuning-mode tests share: a network small enough to train a few steps in no
time, the training configuration they start from, the mode builder, and a watch on which of two
networks' weights each training step moved."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from secateurs.pipeline import FINETUNE_MODES
from secateurs.train import TrainConfig

#: One epoch of two steps of 32, without augmentation (so that two runs see the same batches).
TRAIN = dict(epochs=1, batch_size=32, lr=0.05, progress=False, max_steps_per_epoch=2, augment=False)


def net(seed: int = 0, width: int = 6) -> nn.Module:
    """conv(3 -> width, stride 2) BN ReLU pool flatten linear(width -> 4), seeded: the pruned
    model (width 4) and its peer or teacher (width 6) of the mode tests."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 4),
    )


def build(mode: str, model: nn.Module, reference: nn.Module, **options):
    """``FINETUNE_MODES[mode]``'s objective and companions for ``model`` against ``reference``,
    under :data:`TRAIN`."""
    spec = FINETUNE_MODES[mode]
    return spec.build(model, reference, TrainConfig(**TRAIN), spec.make_options(options))


def watch_moves(model: nn.Module, peer: nn.Module) -> tuple[list[tuple[bool, bool]], Callable[[object], None]]:
    """A list and an ``after_step`` hook that appends to it, per step, whether ``model``'s and
    ``peer``'s parameters changed in that step."""

    def weights(m: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in m.named_parameters()}

    before = [weights(model), weights(peer)]
    moved: list[tuple[bool, bool]] = []

    def after_step(_) -> None:
        now = [weights(model), weights(peer)]
        moved.append(tuple(any(not torch.equal(v, b[k]) for k, v in n.items()) for n, b in zip(now, before)))
        before[:] = now

    return moved, after_step
