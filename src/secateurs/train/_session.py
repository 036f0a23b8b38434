"""What one training run sets up once and every epoch then reads.

Built in two steps because of resume: :class:`Trainees` (the networks on their device,
the optimizer, the loss scaler) exists before a resume loads into it, and
:class:`EpochLoop` (DDP wrappers, loaders, the schedule) after, since DDP copies rank 0's
weights to every process when it wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..data import LoaderConfig, as_loader, dataset_info
from ..errors import ConfigError
from .config import TrainConfig
from .distributed import DistInfo, set_global_batchnorm
from .objectives import Objective
from .schedule import SCHEDULES


@dataclass
class TrainState:
    """Where a run stands after its last finished epoch: what the state file holds besides weights."""

    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch


def check_batch_split(batch_size: int, info: DistInfo) -> None:
    if batch_size % info.world_size:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {info.world_size} processes")


@contextmanager
def on_device(
    networks: list[nn.Module], device: torch.device, global_batchnorm: bool, channels_last: bool = False
) -> Iterator[None]:
    """Move ``networks`` to ``device``; with ``global_batchnorm`` their batch norm covers every
    process's batch (:class:`GlobalBatchNorm2d`), with ``channels_last`` their 4-D weights are
    laid out NHWC, until the block ends, however it ends."""
    for m in networks:
        if channels_last:
            m.to(device, memory_format=torch.channels_last)
        else:
            m.to(device)
        if global_batchnorm:
            set_global_batchnorm(m, True)
    try:
        yield
    finally:
        for m in networks:
            if global_batchnorm:
                set_global_batchnorm(m, False)
            if channels_last:
                m.to(memory_format=torch.contiguous_format)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class Trainees:
    """The networks one SGD optimizer trains (the model and its companions) and what steps them."""

    model: nn.Module
    companions: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # autocast's dtype; None: full precision

    @classmethod
    def build(
        cls, model: nn.Module, companions: dict[str, nn.Module], config: TrainConfig, device: torch.device
    ) -> Trainees:
        params = [p for m in (model, *companions.values()) for p in m.parameters()]
        optimizer = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        amp_dtype = _amp_dtype(device, config.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
        return cls(model, companions, optimizer, scaler, amp_dtype)


@dataclass(frozen=True)
class Loaders:
    """The training set split over the processes (each takes its share of the global batch), the test set whole."""

    train: Any  # a secateurs loader: set_epoch(epoch), then (inputs, targets) batches
    test: Any | None
    num_classes: int | None  # of the test set; None: evaluate reads the model's output width
    steps_per_epoch: int

    @classmethod
    def build(
        cls, train_set: Any, test_set: Any | None, config: TrainConfig, device: torch.device, info: DistInfo
    ) -> Loaders:
        train = as_loader(
            train_set,
            LoaderConfig(
                batch_size=config.batch_size // info.world_size,
                train=True,
                augment=config.augment,
                seed=config.seed,
                device=device,
                num_workers=config.num_workers,
            ),
            rank=info.rank,
            world_size=info.world_size,
        )
        test = (
            None
            if test_set is None
            else as_loader(
                test_set,
                LoaderConfig(
                    batch_size=config.eval_batch_size, train=False, device=device, num_workers=config.num_workers
                ),
            )
        )
        test_info = dataset_info(test_set)
        num_classes = test_info.num_classes if test_info is not None else None
        return cls(train, test, num_classes, min(len(train), config.max_steps_per_epoch or len(train)))


def _wrap(m: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return m
    return nn.parallel.DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None)


@dataclass(frozen=True)
class EpochLoop:
    """Everything an epoch reads, fixed for the whole run."""

    config: TrainConfig
    device: torch.device
    info: DistInfo
    trainees: Trainees
    objective: Objective
    after_step: Callable[[nn.Module], None] | None
    loaders: Loaders
    net: nn.Module  # the model as the objective sees it: DDP-wrapped when distributed
    peers: dict[str, nn.Module]  # the companions, likewise

    @classmethod
    def build(
        cls,
        trainees: Trainees,
        data: tuple[Any, Any | None],
        objective: Objective,
        after_step: Callable[[nn.Module], None] | None,
        config: TrainConfig,
        device: torch.device,
        info: DistInfo,
    ) -> EpochLoop:
        """Wrap the networks for DDP, then make the loaders of ``data`` (train set, test set or None)."""
        net = _wrap(trainees.model, device, info)
        peers = {name: _wrap(m, device, info) for name, m in trainees.companions.items()}
        loaders = Loaders.build(*data, config, device, info)
        return cls(config, device, info, trainees, objective, after_step, loaders, net, peers)

    @property
    def shows_progress(self) -> bool:
        return self.config.progress and self.info.is_main

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step ``step``: a pure function of it, so resume needs no scheduler state."""
        per_epoch = self.loaders.steps_per_epoch
        warmup = int(self.config.warmup_epochs * per_epoch)
        return self.config.lr * SCHEDULES[self.config.schedule](step, per_epoch * self.config.epochs, warmup)
