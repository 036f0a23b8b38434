"""The run's plan: everything a :class:`~.config.PruneConfig` decides, resolved once.

The method and its options object, the fine-tuning mode and its options, the round
schedule with each round's training configuration, the BN recalibration, the figure the
target is on, and the device and process group the run uses. The configuration resolves
its plan when it is built (an option that cannot be resolved is refused then, before any
model is touched), and everything downstream -- the loop, the CLI command, ``config.json``
and resume -- reads the plan instead of deriving any of it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..measure import count_macs, count_params
from ..methods import Method, get_method
from ..methods._registry import MeasureFn
from ..train import TrainConfig, dist_info
from ..train.distributed import DistInfo, training_device
from .finetune import Finetuning
from .recalibration import DEFAULT_BN_RECALIBRATION

if TYPE_CHECKING:
    from .config import PruneConfig

#: Fine-tuning epochs in all when fine-tuning is on and the configuration names none.
DEFAULT_FINETUNE_EPOCHS = 3

#: :class:`PruneConfig` options a resumed pruning run may change: they change neither which
#: channels are cut nor how the rounds fine-tune. This is not the trainer's ``RESUME_FREE``
#: (``train/resume.py``), which names :class:`TrainConfig` fields of one training run
#: (``progress``, ``device``, ``eval_batch_size``, ``num_workers``) and is checked by the
#: trainer when a round's fine-tuning resumes; in a pruning run those sit inside
#: ``finetune_train``, which must match as a whole.
PRUNE_RESUME_FREE = frozenset({"device", "latency", "eval_each_epoch"})


def _params(model: nn.Module, shape: tuple[int, ...]) -> int:
    return count_params(model)


#: The figures a target can be on for every method; a method may add its own (``Method.measures``).
BASE_MEASURES: dict[str, MeasureFn] = {"params": _params, "macs": count_macs}


@dataclass(frozen=True)
class RoundPlan:
    """One round: the share of the target reached by its end and its fine-tuning."""

    share: float
    epochs: int  # 0: no fine-tuning after this round's cut
    train: TrainConfig  # the round's fine-tuning configuration (read only when ``epochs``)


@dataclass(frozen=True)
class RunPlan:
    """What a :class:`PruneConfig` resolves to; see the module docstring."""

    config: PruneConfig
    method: Method
    options: Any  # the method's options dataclass
    finetuning: Finetuning
    rounds: tuple[RoundPlan, ...]
    #: BN recalibration batches per cut when there is a training set to draw them from (0: off).
    bn_recalibration: int
    target_on: str  # the figure the target and the achieved reduction are on
    measure: MeasureFn  # measures ``target_on``
    device: torch.device
    dist: DistInfo

    @classmethod
    def resolve(cls, config: PruneConfig) -> RunPlan:
        """Resolve ``config``, refusing a bad option by name (the checks in the order a person
        fixes them: the method, the target, the fine-tuning, the other values)."""
        method = get_method(config.method)
        options = method.make_options(config.method_options)
        config.check_target(method.threshold_option)
        finetuning = Finetuning.of(_finetune_mode(config, method), config.finetune_options)
        config.check_values()
        method.check_target(config.metric, config.scope)
        total = (
            (DEFAULT_FINETUNE_EPOCHS if config.finetune_epochs is None else config.finetune_epochs)
            if finetuning.name != "none"
            else 0
        )
        dist = dist_info()
        device = _device(config.device, dist)
        rounds = tuple(
            RoundPlan(share, epochs, config.train_config(epochs, str(device)))
            for share, epochs in method.round_schedule(options, total, config.rounds)
        )
        target_on = method.target_on or config.metric
        return cls(
            config,
            method,
            options,
            finetuning,
            rounds,
            _bn_recalibration(config, method),
            target_on,
            {**BASE_MEASURES, **dict(method.measures)}[target_on],
            device,
            dist,
        )

    @property
    def epochs(self) -> list[int]:
        return [r.epochs for r in self.rounds]

    @property
    def keeps_unpruned(self) -> bool:
        """A copy of the unpruned network is kept through the run: the fine-tuning mode trains
        against it (kd, mlft), or the method scores against it."""
        return self.finetuning.needs_reference or self.method.reads_unpruned(self.options)

    @property
    def reads_train_set(self) -> bool:
        """Scoring, fine-tuning or BN recalibration (on by default with one) read a training set."""
        return self.method.needs_data or any(self.epochs) or self.bn_recalibration > 0

    def goal(self, round: int) -> float | None:
        """The cumulative reduction to reach by the end of ``round`` (from 1); None: no target."""
        target = self.config.target
        return None if target is None else target * self.rounds[round - 1].share

    def resolved_options(self) -> dict[str, dict[str, Any]]:
        """The method's and the fine-tuning's options with every default filled in: what the
        run really uses. Saved with its progress, so that a resume after a default changed
        (a newer secateurs) is refused instead of quietly continuing as another run."""
        tuning = self.finetuning.options
        return {
            "method_options": asdict(self.options),
            "finetune_options": asdict(tuning) if is_dataclass(tuning) else {},
        }

    def to_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds of the plan (the run's own entries go beside it)."""
        epochs = self.epochs
        longest = max(self.rounds, key=lambda r: r.epochs)
        return {
            "prune": self.config.to_dict(),
            "finetune": self.finetuning.name,
            "rounds": len(self.rounds),
            "epochs_per_round": epochs,
            "finetune_train": longest.train.to_dict() if any(epochs) else None,
            **self.resolved_options(),
            "device": str(self.device),
        }


def _finetune_mode(config: PruneConfig, method: Method) -> str:
    if config.finetune is not None:
        return config.finetune
    if config.finetune_epochs:  # asking for epochs is asking for fine-tuning
        return "tft"
    return method.default_finetune


def _bn_recalibration(config: PruneConfig, method: Method) -> int:
    """The explicit value, else the default when the method does not need to go without."""
    if config.bn_recalibration is not None:
        return config.bn_recalibration
    return DEFAULT_BN_RECALIBRATION if method.recalibrate_by_default else 0


def _device(name: str, dist: DistInfo) -> torch.device:
    """The one place a pruning run's device is decided (under torchrun: this rank's GPU)."""
    try:
        return training_device(name, dist)
    except RuntimeError as e:
        raise ConfigError(f"device {name!r} is not a device torch knows (auto, cpu, cuda, cuda:1, ...): {e}") from e


def resume_conflicts(
    saved: dict[str, Any], now: dict[str, Any], keys: Iterable[str] | None = None
) -> dict[str, tuple[Any, Any]]:
    """``{option: (saved, now)}`` for the options that differ between a run's saved
    configuration and the one it is resumed with, apart from :data:`PRUNE_RESUME_FREE`;
    ``keys``: compare only those (the options a user gave), default every option of either.

    The one check behind every "a resumed run must be the run it continues" refusal of the
    prune path (the CLI's ``--resume`` flags and the progress file's saved configuration).
    """
    names = set(keys) if keys is not None else saved.keys() | now.keys()
    return {
        k: (saved.get(k), now.get(k))
        for k in sorted(names)
        if k not in PRUNE_RESUME_FREE and saved.get(k) != now.get(k)
    }
