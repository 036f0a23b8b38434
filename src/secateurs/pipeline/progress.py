"""Resuming a pruning run: the state after each cut and after each round's fine-tuning.

``progress.safetensors`` in the run directory holds the pruned model at the last stage
reached, and its header the stage, the rounds recorded so far and what the run measured
before pruning. A resumed run loads it instead of redoing the cuts (which depend on the
fine-tuned weights of the rounds before), and continues the interrupted fine-tuning from
its last finished epoch with the trainer's own resume.

A round is one :class:`~.result.RoundRecord` from its cut on: the header holds it as
``asdict`` and loading makes it a record again, the only two places it is anything else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._copy import copy_model
from ..errors import ConfigError
from .plan import RunPlan, resume_conflicts
from .result import RoundRecord

PROGRESS_FILE = "progress.safetensors"


def refuse_leftovers(run_dir: Path, resume: bool, also: tuple[str, ...] = ()) -> None:
    """Refuse a new run into a folder that holds (part of) an earlier pruning run.

    A new run there would re-cut and then find the old run's ``finetune-<round>`` folders:
    their trainer state would be resumed onto the new cut (the old weights coming back as the
    result). ``also``: more file names that mark a run (the CLI's ``metrics.json`` ...)."""
    if resume or not run_dir.is_dir():
        return
    leftovers = [name for name in (PROGRESS_FILE, *also) if (run_dir / name).exists()]
    leftovers += sorted(p.name for p in run_dir.glob("finetune-*"))
    if leftovers:
        raise ConfigError(
            f"{str(run_dir)!r} already holds (part of) a pruning run ({', '.join(leftovers)}); resume "
            "it (--resume; resume=True in Python), choose another folder, or delete it"
        )


@dataclass
class Progress:
    round: int = 0  # the last round with a stage reached
    stage: str = "start"  # "cut": round's removal done, fine-tuning not finished; "done": round finished
    records: list[RoundRecord] = field(default_factory=list)  # finished rounds
    cut: RoundRecord | None = None  # the last round cut (its fine-tuning figures filled in when done)
    notes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    channels_before: dict[str, int] = field(default_factory=dict)
    floors: list[list] = field(default_factory=list)  # [module, kind, fewest channels]

    def resumed_cut(self, round: int) -> RoundRecord | None:
        """``round``'s record when the run stopped between its cut and the end of its fine-tuning."""
        return self.cut if self.stage == "cut" and self.round == round else None

    def to_meta(self, config: dict[str, Any], resolved: dict[str, Any] | None = None) -> dict[str, Any]:
        """The header: the state, the configuration as given and, as ``resolved``, the
        options with their defaults filled in (:meth:`RunPlan.resolved_options`)."""
        state = {**self.__dict__, "records": [asdict(r) for r in self.records]}
        state["cut"] = asdict(self.cut) if self.cut is not None else {}
        return {"prune_progress": {**state, "config": config, "resolved": resolved or {}}}

    @classmethod
    def from_meta(cls, saved: dict[str, Any]) -> Progress:
        """The state in a header; its configuration entries (``config``, ``resolved``) are
        for :func:`load_progress` to check and are left out here."""
        state = {k: v for k, v in saved.items() if k not in ("config", "resolved")}
        state["records"] = [RoundRecord(**r) for r in state.get("records", [])]
        cut = state.get("cut") or None
        state["cut"] = _record_of_cut(state.get("round", 0), cut) if cut else None
        return cls(**state)


def _record_of_cut(round: int, cut: dict[str, Any]) -> RoundRecord:
    """A saved cut as its record; a run written before a round had one shape saved its cut as a
    dict of its own (``removed``, ``top1``, ``goal``, ...), read here so that it resumes too."""
    if "removed" not in cut:
        return RoundRecord(**cut)
    return RoundRecord(
        round=round,
        target=cut["goal"],
        achieved=cut["achieved"],
        channels_removed=cut["removed"],
        top1_after_pruning=cut["top1"],
        top1_after_finetune=None,
        finetune_epochs=0,  # the loop takes the round's epochs from the plan
        scoring_s=cut["scoring_s"],
        surgery_s=cut["surgery_s"],
        finetune_s=0.0,
        note=cut["note"],
        details=cut["details"],
        **cut.get("recalibration", {}),
    )


def save_progress(run_dir: Path, model: nn.Module, progress: Progress, plan: RunPlan) -> None:
    from ..io import save

    save(model, run_dir / PROGRESS_FILE, progress.to_meta(plan.config.to_dict(), plan.resolved_options()))


def load_progress(run_dir: Path, model: nn.Module, plan: RunPlan) -> tuple[nn.Module, Progress]:
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
    diff = resume_conflicts(saved.pop("config"), plan.config.to_dict())
    if diff:
        raise ConfigError(
            f"cannot resume with a different configuration: {diff} (saved, now); resume with the "
            "run's own options, or start a new run"
        )
    _check_defaults(saved.pop("resolved", None) or {}, plan.resolved_options())
    return load(path, model=copy_model(model)), Progress.from_meta(saved)


def _check_defaults(saved: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> None:
    """Refuse a resume whose options, defaults filled in, are not those the run started with.

    The options as given can match while a default moved in between (a newer secateurs, e.g.
    mlft's ``peer_every``): the resumed rounds would be another run's. A progress file written
    before the resolved options were saved (empty ``saved``) cannot be checked, nor an option
    the run did not have yet.
    """
    for group, values in saved.items():
        current = now.get(group, {})
        diff = {k: (v, current[k]) for k, v in values.items() if k in current and current[k] != v}
        if diff:
            changes = ", ".join(f"{k}: {v!r} then, {c!r} now" for k, (v, c) in sorted(diff.items()))
            raise ConfigError(
                f"cannot resume: {group} resolve differently from when the run started ({changes}; a "
                "default changed since). Resume it with the secateurs version that started it, or start "
                "a new run; the run directory is left as it is"
            )
