"""A training run's directory: its three files, written atomically at the end of every epoch.

The state file comes first, so a process that dies before the model file still leaves
everything a resume needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..data import dataset_info
from ..errors import ConfigError
from ..io import save, save_tree
from ..io.checkpoint import unwrap
from ._session import Trainees, TrainState
from .config import TrainConfig

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"


def check_run_dir(run_dir: Path | None, resume: bool) -> None:
    """Refuse a resume without a finished epoch to continue, and a new run over an old one."""
    if run_dir is None:
        if resume:
            raise ConfigError("resume=True needs the run directory of the run to continue")
        return
    has_state = (run_dir / STATE_FILE).is_file()
    if resume and not has_state:
        raise ConfigError(
            f"cannot resume: {str(run_dir / STATE_FILE)!r} does not exist "
            "(the run never finished an epoch); start it again without --resume"
        )
    if not resume and has_state:
        raise ConfigError(
            f"{str(run_dir)!r} already holds a training run; pass --resume to continue it, or choose another --out"
        )


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes, and what its model file's metadata describes."""

    path: Path
    config: TrainConfig
    train_set: Any
    meta: dict[str, Any] | None = None

    @classmethod
    def of(
        cls, run_dir: str | Path | None, resume: bool, config: TrainConfig, train_set: Any, meta: dict[str, Any] | None
    ) -> RunFiles | None:
        """The checked run directory (see :func:`check_run_dir`); None for a run that writes nothing."""
        path = Path(run_dir) if run_dir is not None else None
        check_run_dir(path, resume)
        return None if path is None else cls(path, config, train_set, meta)


def write_epoch(files: RunFiles, trainees: Trainees, state: TrainState) -> None:
    """Write the state file, the model file and the metrics after the epoch ``state`` ends with."""
    bare = unwrap(trainees.model)
    save_tree(
        files.path / STATE_FILE,
        {
            "model": bare.state_dict(),
            "optimizer": trainees.optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "history": state.history,
            "scaler": trainees.scaler.state_dict() if trainees.scaler.is_enabled() else None,
            "config": files.config.to_dict(),
            "companions": {name: unwrap(m).state_dict() for name, m in trainees.companions.items()},
        },
    )
    save(bare, files.path / MODEL_FILE, model_meta(files.train_set, files.config, state.history[-1], files.meta))
    atomic_write_text(files.path / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in state.history))


def model_meta(
    train_set: Any,
    config: TrainConfig | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata every secateurs model checkpoint carries; a user's dataset without a
    :class:`DatasetInfo` (``.info``) contributes none, and the caller adds ``input_shape``."""
    info = dataset_info(train_set)
    meta: dict[str, Any] = (
        {}
        if info is None
        else {
            "dataset": info.to_dict(),
            "input_shape": [info.in_channels, info.image_size, info.image_size],
            "normalisation": {"mean": list(info.mean), "std": list(info.std)},
        }
    )
    if config is not None:
        meta["train_config"] = config.to_dict()
    if metrics is not None:
        meta["metrics"] = metrics
    meta.update(extra or {})
    return meta
