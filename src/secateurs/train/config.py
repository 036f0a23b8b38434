"""Training configuration: one dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass
class TrainConfig:
    """Everything that decides a training run's result.

    ``batch_size`` is the global batch: under ``torchrun`` each of the N processes takes
    ``batch_size / N`` samples per step, so a run's result does not depend on N.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    augment: bool = True
    amp: bool = True  # mixed precision, on CUDA only; CPU runs stay in float32
    sync_bn: bool = True  # batch statistics over the global batch under DDP
    eval_batch_size: int = 512
    device: str = "auto"
    progress: bool = True
    max_steps_per_epoch: int | None = None  # cap for smoke tests and the demo
    #: DataLoader worker processes for a torch Dataset (a streamed image folder decodes in
    #: them); the in-memory datasets need none. Changes where samples are made, not which.
    num_workers: int = 0
    #: Train in channels-last memory layout (NHWC): the networks' 4-D weights and every
    #: input batch, put back to the usual layout when training ends. The same arithmetic
    #: in another order (results differ in the last bits), faster where the convolution
    #: library prefers it: oneDNN on CPU (mobilenet_v2 training steps about 1.5x faster on
    #: one thread, resnet20 about 1.1x), tensor cores under AMP on GPU. A known fault, not
    #: ours to mend: with torch 2.13's CPU build, oneDNN's convolution backward corrupted the
    #: heap (the process aborts: "free(): invalid next size") in the second round of
    #: ``l1-capped`` at 75% MACs on resnet20, where layers are left with 3-7 channels; the same
    #: run with this off, or with ``torch.backends.mkldnn.enabled = False``, finishes. Leave it
    #: off for multi-round pruning to narrow layers on a CPU.
    channels_last: bool = False
    #: Network slimming's sparsity penalty (Liu et al., ICCV 2017): ``bn_l1 * sum |gamma|``
    #: over every BatchNorm's scale, added to the loss (and to the reported train loss). It
    #: drives the scales of the channels the loss does not need towards 0, which is what
    #: ``bn-scale`` ranks and what gives ``probability`` channels to remove; 0 is off.
    bn_l1: float = 0.0

    def __post_init__(self) -> None:
        from .._types import check_field_types
        from .schedule import SCHEDULES

        check_field_types(self, "training option")

        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        for name, value in {
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "label_smoothing": self.label_smoothing,
            "bn_l1": self.bn_l1,
        }.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
        if self.label_smoothing >= 1:
            raise ConfigError(f"label_smoothing must be < 1, got {self.label_smoothing!r}")
        if self.schedule not in SCHEDULES:
            from ..errors import unknown_choice

            raise unknown_choice("schedule", self.schedule, SCHEDULES)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError(f"max_steps_per_epoch must be positive or None, got {self.max_steps_per_epoch!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        from .._types import from_known_fields

        return from_known_fields(cls, data, "training option")
