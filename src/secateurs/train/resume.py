"""Continuing a run from its state file: what a resumed run may change, and the restore itself.

Resume is exact because everything random is a function of (seed, epoch, rank) and the
rest (weights, optimizer buffers, the loss scaler, the step counter) is in the state file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..io import load_tree
from ._session import Trainees, TrainState
from .config import TrainConfig
from .run_files import STATE_FILE

# Options a resumed run may change: they do not change what is computed (a different
# device changes only the floating-point rounding of the remaining epochs).
RESUME_FREE = {"progress", "device", "eval_batch_size", "num_workers"}
#: Options a resumed run may raise, to extend a run (see :func:`secateurs.train.train`).
EXTENDABLE = {"epochs"}


def restore(run_dir: Path, config: TrainConfig, trainees: Trainees, announce: bool) -> TrainState:
    """Load the run in ``run_dir`` into ``trainees`` and say where it stands (``announce``: print
    what it continues from), refusing a configuration or companions that are not the run's own."""
    state = load_tree(run_dir / STATE_FILE)
    _check_config(state["config"], config)
    _check_companions(state.get("companions") or {}, trainees.companions)
    trainees.model.load_state_dict(state["model"])
    for name, module in trainees.companions.items():
        module.load_state_dict(state["companions"][name])
    trainees.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        trainees.scaler.load_state_dict(state["scaler"])
    if announce:
        tqdm.write(resume_line(run_dir, state["epoch"], state["config"]["epochs"], config.epochs))
    return TrainState(state["epoch"], state["step"], state["history"])


def _check_config(saved_config: dict[str, Any], config: TrainConfig) -> None:
    saved_epochs = saved_config["epochs"]
    if config.epochs < saved_epochs:
        raise ConfigError(
            f"cannot resume with epochs={config.epochs}: the run has {saved_epochs} epochs; give "
            f"--epochs {saved_epochs} or more (more extends it), or start a new run"
        )
    # A field added since the run was saved has its default there (the run trained without it).
    saved_config = {**TrainConfig().to_dict(), **saved_config}
    saved = {k: v for k, v in saved_config.items() if k not in RESUME_FREE | EXTENDABLE}
    now = {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE | EXTENDABLE}
    diff = {k: (saved.get(k), now.get(k)) for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)}
    if diff:
        raise ConfigError(
            f"cannot resume with a different configuration: {diff} (saved, now); "
            "resume with the run's own options, or start a new run"
        )


def _check_companions(saved: dict[str, Any], companions: dict[str, nn.Module]) -> None:
    if sorted(saved) != sorted(companions):
        raise ConfigError(
            f"cannot resume: the run trained companions {sorted(saved)}, this one "
            f"{sorted(companions)}; resume with the run's own fine-tuning mode"
        )


def resume_line(run_dir: Path, done: int, saved_epochs: int, epochs: int) -> str:
    """What a resumed run continues from, or that there is nothing left to do."""
    if epochs > saved_epochs:
        return (
            f"extending {run_dir} from {saved_epochs} to {epochs} epochs, after epoch {done} (the learning-rate "
            f"schedule is recomputed for {epochs} epochs from there)"
        )
    if done >= epochs:
        return (
            f"{run_dir} finished all {epochs} epochs already; nothing to do (to train longer: --resume "
            f"--epochs N, N > {epochs})"
        )
    return f"resuming {run_dir} after epoch {done} of {epochs}"
