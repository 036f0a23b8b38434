"""Fine-tuning between pruning rounds, on the foundation's trainer (so DDP, progress,
atomic checkpoints and resume come with it). Modes are registered by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from ..data import ImageDataset
from ..train import TrainConfig, train
from ..train.trainer import Objective, TrainResult, cross_entropy

#: mode -> (pruned model, unpruned reference, train config) -> objective (None: no training).
ObjectiveFactory = Callable[[nn.Module, nn.Module | None, TrainConfig], Objective | None]
#: Modes whose objective reads the unpruned network: they get a copy of it, never the caller's.
NEEDS_REFERENCE: set[str] = set()
FINETUNE_OBJECTIVES: dict[str, ObjectiveFactory] = {
    "tft": lambda model, reference, config: cross_entropy(config.label_smoothing),
    "none": lambda model, reference, config: None,
}


def finetune(model: nn.Module, mode: str, reference: nn.Module | None, train_set: ImageDataset,
             test_set: ImageDataset | None, config: TrainConfig, run_dir: Path | None,
             meta: dict[str, Any] | None = None, resume: bool = False) -> TrainResult | None:
    """Fine-tune ``model`` in place; ``None`` when the mode trains nothing."""
    objective = FINETUNE_OBJECTIVES[mode](model, reference, config)
    if objective is None:
        return None
    return train(model, train_set, test_set, config, run_dir=run_dir, resume=resume, objective=objective, meta=meta)
