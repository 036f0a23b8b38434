"""``secateurs prune``: a checkpoint in, a run directory out.

The run directory holds ``model.safetensors`` (the pruned model, loadable without the
original object), ``config.json`` (the resolved configuration), ``metrics.json`` (the
:class:`PruneResult`), ``report.md`` with its PNG figures (:mod:`secateurs.report`),
``log.txt`` and one ``finetune-<round>`` training run per round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._atomic import atomic_write_text
from ..errors import ConfigError
from ..io._factory import ArchSpec, load_model
from ..pipeline._data import RunData
from ..pipeline.config import PruneConfig
from ..pipeline.plan import PRUNE_RESUME_FREE, RunPlan, resume_conflicts
from ..pipeline.progress import refuse_leftovers
from ..pipeline.result import PruneResult
from ..pipeline.run import run_plan
from ..report import write_run_report
from ..train.distributed import process_group

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"


def resume_arguments(out: Path, ckpt: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """What ``prune --resume --out OUT`` continues with: the run's own checkpoint, dataset and
    configuration from ``config.json``; of ``options`` only those a resumed run may change."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"cannot resume: {str(path)!r} does not exist; {str(out)!r} is not a pruning run directory")
    saved = json.loads(path.read_text())
    if ckpt is not None and Path(ckpt) != Path(saved["checkpoint"]):
        raise ConfigError(
            f"--resume continues the run in {str(out)!r}, which prunes {saved['checkpoint']!r}, not {str(ckpt)!r}"
        )
    fixed = resume_conflicts(saved["prune"], options, keys=options)
    if fixed:
        raise ConfigError(
            f"--resume continues the run exactly as it was started; these options differ from it: "
            f"{sorted(fixed)}. Start a new run to change them."
        )
    free = {k: v for k, v in options.items() if k in PRUNE_RESUME_FREE}
    return {
        "ckpt": Path(saved["checkpoint"]),
        "config": PruneConfig.from_dict({**saved["prune"], **free}),
        "dataset": saved["dataset"],
        "data_dir": saved["data_dir"],
        "dataset_options": saved["dataset_options"],
        "arch": ArchSpec(**saved["arch"]) if saved.get("arch") else None,
    }


@dataclass(frozen=True)
class Source:
    """Where the model and its data come from: the checkpoint, its dataset (None: the one it
    was trained on) and ``arch``, the factory of a model not in the zoo."""

    ckpt: Path
    dataset: str | None = None
    data_dir: str | None = None
    dataset_options: dict[str, Any] | None = None
    arch: ArchSpec | None = None

    @property
    def data(self) -> tuple[str | None, dict[str, Any] | None]:
        """``(data_dir, dataset_options)``, as ``checkpoint_dataset`` takes them."""
        return self.data_dir, self.dataset_options

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.ckpt),
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "dataset_options": self.dataset_options or {},
            "arch": self.arch.to_dict() if self.arch is not None else None,
        }


def prune_command(
    ckpt: Path,
    out: Path,
    config: PruneConfig,
    dataset: str | None = None,
    data_dir: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    resume: bool = False,
    arch: ArchSpec | None = None,
) -> PruneResult:
    """Prune the model in ``ckpt`` as ``config`` says and write the run directory ``out``
    (``resume``: continue the interrupted run there; see :func:`resume_arguments`; ``arch``:
    the factory of a model not in the zoo, recorded with the run and the pruned model)."""
    plan = config.plan
    # Under torchrun every rank checks the directory before any rank writes to it.
    with process_group(plan.device):
        check_out(Path(out), resume)
        if plan.dist.enabled:
            torch.distributed.barrier()
        return _prune_into(plan, Source(Path(ckpt), dataset, data_dir, dataset_options, arch), Path(out), resume)


def check_out(out: Path, resume: bool) -> None:
    """Refuse a new run into a folder that holds (part of) an earlier pruning run, the CLI's
    own files (metrics, model, config) counted with the pipeline's."""
    refuse_leftovers(out, resume, also=(METRICS_FILE, MODEL_FILE, CONFIG_FILE))


#: Shown in the first line of a run; the other options are listed only where they differ
#: from their defaults, and all of them are in config.json.
_HEADLINE = {"method", "macs_reduction", "params_reduction", "scope", "rounds", "finetune", "finetune_epochs"}


def describe(plan: RunPlan, ckpt: Path, out: Path) -> str:
    """The configuration as a person reads it: what is pruned how far, in how many rounds,
    with what fine-tuning; then only the options that differ from their defaults."""
    config = plan.config
    aim = "no target" if config.target is None else f"{config.metric} reduction {100 * config.target:g}%"
    epochs = sum(plan.epochs)
    tuning = f"fine-tuning {plan.finetuning.name} for {epochs} epoch(s) in all" if epochs else "no fine-tuning"
    rounds = len(plan.rounds)
    lines = [f"pruning {ckpt} with {config.method}: {aim}, {config.scope} scope, {rounds} round(s), {tuning}"]
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(PruneConfig)
    }
    changed = [f"{k}={v}" for k, v in config.to_dict().items() if k not in _HEADLINE and v != defaults.get(k)]
    if changed:
        lines.append("  options: " + ", ".join(changed))
    lines.append(f"  full configuration: {Path(out) / CONFIG_FILE}")
    return "\n".join(lines)


def _to_file_only(handler: logging.Handler | None, text: str) -> None:
    """Log ``text`` into the run's log.txt only: the caller prints the summary (the CLI on
    stdout), and a second copy on stderr read as a second run."""
    if handler is not None:
        handler.handle(logging.LogRecord("secateurs.prune", logging.INFO, __file__, 0, "%s", (text,), None))


@contextmanager
def _run_log(out: Path, main: bool) -> Iterator[logging.Handler | None]:
    """On rank 0, the ``secateurs`` log at INFO into ``out/log.txt`` for the block."""
    if not main:
        yield None
        return
    logger = logging.getLogger("secateurs")
    level = logger.level
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / LOG_FILE)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


def _prune_into(plan: RunPlan, source: Source, out: Path, resume: bool) -> PruneResult:
    from ..io import read_meta
    from ._checkpoint import checkpoint_dataset

    meta = read_meta(source.ckpt)
    dataset, test_set = checkpoint_dataset(source.ckpt, meta, source.dataset, "test", *source.data)
    source = dataclasses.replace(source, dataset=dataset)
    # The checkpoint's dataset has a training split: BN recalibration is on by default with it.
    train_set = (
        checkpoint_dataset(source.ckpt, meta, dataset, "train", *source.data)[1] if plan.reads_train_set else None
    )
    data = RunData.of(plan, train_set, test_set)
    model = load_model(source.ckpt, source.arch)
    with _run_log(out, plan.dist.is_main) as handler:
        if plan.dist.is_main and not resume:
            atomic_write_text(out / CONFIG_FILE, json.dumps({**source.to_dict(), **plan.to_dict()}, indent=2))
        logging.getLogger("secateurs.prune").info("%s", describe(plan, source.ckpt, out))
        pruned, result = run_plan(plan, model, data, out, resume)
        if plan.dist.is_main:
            _write_outputs(pruned, result, source, meta, out, train_set or test_set)
            _to_file_only(handler, result.summary())
        return result


def _write_outputs(
    pruned: nn.Module, result: PruneResult, source: Source, meta: dict[str, Any], out: Path, data: Any
) -> None:
    """The pruned model (with what a later command needs to load and describe it), metrics.json
    and the report."""
    from ..io import save
    from ..train.trainer import model_meta

    base = {k: meta[k] for k in ("dataset", "input_shape", "normalisation") if k in meta}
    if source.arch is not None:  # names the factory to load it with (see secateurs.load)
        base["architecture"] = source.arch.to_dict()
    pruning = {
        "method": result.method,
        "source": str(source.ckpt),
        "metric": result.metric,
        "target": result.target,
        "achieved": result.achieved,
    }
    extra = {"pruning": pruning, "metrics": {"test_top1": result.after["top1"]}}
    save(pruned.cpu(), out / MODEL_FILE, {**model_meta(data), **base, **extra})
    atomic_write_text(out / METRICS_FILE, json.dumps(result.to_dict(), indent=2))
    write_run_report(out)  # report.md and its figures, read back from the files just written
