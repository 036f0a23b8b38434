"""Fine-tuning after each pruning round, on the foundation's trainer (so DDP, progress,
atomic checkpoints and resume come with it). Modes are registered by name:

* ``tft``: plain cross-entropy;
* ``kd``: cross-entropy plus distillation from the frozen unpruned network;
* ``mlft``: deep mutual learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018,
  doi:10.1109/CVPR.2018.00454), as Yang & Xiao (Applied Intelligence 2022) use it after
  pruning (docs/methods.md): the
  pruned network and a peer are trained together, each on cross-entropy plus the KL
  divergence towards the other's prediction;
* ``none``: no training.

The distillation objectives (kd, mlft) and their options are in :mod:`._distill`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._types import build_options
from ..data import ImageDataset
from ..errors import ConfigError, unknown_choice
from ..train import TrainConfig, train
from ..train.trainer import TrainResult, cross_entropy
from ._distill import (  # noqa: F401  (distillation, mutual_loss: the public names live here)
    Built,
    DistillOptions,
    MutualOptions,
    distillation,
    kd_objective,
    mlft_objective,
    mutual_loss,
)


@dataclass(frozen=True)
class NoFinetuneOptions:
    """The mode has no options of its own."""


@dataclass(frozen=True)
class FinetuneMode:
    name: str
    summary: str
    #: (pruned model, unpruned reference or None, train config, options) -> what to train.
    build: Callable[[nn.Module, nn.Module | None, TrainConfig, Any], Built]
    options: type = NoFinetuneOptions
    #: The objective reads the unpruned network: the pipeline keeps a copy of it (never the caller's).
    needs_reference: bool = False

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        return build_options(self.options, values, f"fine-tuning mode {self.name!r}")


FINETUNE_MODES: dict[str, FinetuneMode] = {}


def register_finetune(mode: FinetuneMode) -> FinetuneMode:
    if mode.name in FINETUNE_MODES:
        raise ValueError(f"fine-tuning mode {mode.name!r} is registered twice")
    FINETUNE_MODES[mode.name] = mode
    return mode


def get_finetune_mode(name: str) -> FinetuneMode:
    if name not in FINETUNE_MODES:
        raise unknown_choice("finetune mode", name, FINETUNE_MODES)
    return FINETUNE_MODES[name]


register_finetune(
    FinetuneMode(
        "tft", "cross-entropy", lambda model, reference, config, o: (cross_entropy(config.label_smoothing), {})
    )
)
register_finetune(
    FinetuneMode(
        "kd",
        "cross-entropy + distillation from the frozen unpruned network",
        kd_objective,
        DistillOptions,
        needs_reference=True,
    )
)
register_finetune(
    FinetuneMode(
        "mlft",
        "mutual learning: the pruned network and a peer trained together, each on cross-entropy + KL towards the other",
        mlft_objective,
        MutualOptions,
        needs_reference=True,
    )
)
register_finetune(FinetuneMode("none", "no fine-tuning", lambda model, reference, config, o: (None, {})))


@dataclass(frozen=True)
class Finetuning:
    """A fine-tuning mode with its options object, resolved once for a run."""

    mode: FinetuneMode
    options: Any

    @classmethod
    def of(cls, name: str, values: dict[str, Any] | None = None) -> Finetuning:
        mode = get_finetune_mode(name)
        return cls(mode, mode.make_options(values))

    @property
    def name(self) -> str:
        return self.mode.name

    @property
    def needs_reference(self) -> bool:
        return self.mode.needs_reference

    def run(
        self,
        model: nn.Module,
        reference: nn.Module | None,
        train_set: ImageDataset,
        test_set: ImageDataset | None,
        config: TrainConfig,
        run_dir: Path | None = None,
        meta: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> TrainResult | None:
        """Fine-tune ``model`` in place; ``None`` when the mode trains nothing.

        ``reference`` (the unpruned network) is read, never changed: a mode that trains or
        freezes it works on its own copy.
        """
        if self.mode.needs_reference and reference is None:
            raise ConfigError(f"fine-tuning mode {self.name!r} reads the unpruned network: pass it as reference")
        objective, companions = self.mode.build(model, reference, config, self.options)
        if objective is None:
            return None
        return train(
            model,
            train_set,
            test_set,
            config,
            run_dir=run_dir,
            resume=resume,
            objective=objective,
            meta=meta,
            companions=companions,
        )


def finetune(
    model: nn.Module,
    mode: str,
    reference: nn.Module | None,
    train_set: ImageDataset,
    test_set: ImageDataset | None,
    config: TrainConfig,
    run_dir: Path | None = None,
    options: dict[str, Any] | None = None,
) -> TrainResult | None:
    """Fine-tune ``model`` in place with the mode named ``mode`` and its ``options``; see
    :meth:`Finetuning.run` (a pruning run resolves its :class:`Finetuning` once instead)."""
    return Finetuning.of(mode, options).run(model, reference, train_set, test_set, config, run_dir)
