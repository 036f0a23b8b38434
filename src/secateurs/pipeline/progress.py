"""Resuming a pruning run: the state after each cut and after each round's fine-tuning.

``progress.safetensors`` in the run directory holds the pruned model at the last stage
reached, and its header the stage, the rounds recorded so far and what the run measured
before pruning. A resumed run loads it instead of redoing the cuts (which depend on the
fine-tuned weights of the rounds before), and continues the interrupted fine-tuning from
its last finished epoch with the trainer's own resume.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import ConfigError

PROGRESS_FILE = "progress.safetensors"
#: Options a resumed run may change: they do not change which channels are cut or how.
RESUME_FREE = {"device", "latency", "eval_each_epoch"}


@dataclass
class Progress:
    round: int = 0  # the last round with a stage reached
    stage: str = "start"  # "cut": round's removal done, fine-tuning not finished; "done": round finished
    records: list[dict[str, Any]] = field(default_factory=list)  # finished rounds (RoundRecord fields)
    cut: dict[str, Any] = field(default_factory=dict)  # the unfinished round's removal, when stage == "cut"
    notes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    channels_before: dict[str, int] = field(default_factory=dict)
    floors: list[list] = field(default_factory=list)  # [module, kind, fewest channels]

    def to_meta(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"prune_progress": {**self.__dict__, "config": config}}


def save_progress(run_dir: Path, model: nn.Module, progress: Progress, config: dict[str, Any]) -> None:
    from ..io import save

    save(model, run_dir / PROGRESS_FILE, progress.to_meta(config))


def load_progress(run_dir: Path, model: nn.Module, config: dict[str, Any]) -> tuple[nn.Module, Progress]:
    """The model and state a resumed run continues from; ``model`` is the unpruned network
    (a fresh copy of it is narrowed to the saved widths)."""
    from ..io import load, read_meta

    path = Path(run_dir) / PROGRESS_FILE
    if not path.is_file():
        raise ConfigError(
            f"cannot resume: {str(path)!r} does not exist (the run never finished a cut); start it "
            "again without resume, in a new directory"
        )
    saved = dict(read_meta(path).get("prune_progress") or {})
    if not saved:
        raise ConfigError(f"{str(path)!r} holds no pruning progress; it is not a secateurs pruning run")
    then = {k: v for k, v in saved.pop("config").items() if k not in RESUME_FREE}
    now = {k: v for k, v in config.items() if k not in RESUME_FREE}
    diff = {k: (then.get(k), now.get(k)) for k in then.keys() | now.keys() if then.get(k) != now.get(k)}
    if diff:
        raise ConfigError(
            f"cannot resume with a different configuration: {diff} (saved, now); resume with the "
            "run's own options, or start a new run"
        )
    return load(path, model=copy.deepcopy(model)), Progress(**saved)
