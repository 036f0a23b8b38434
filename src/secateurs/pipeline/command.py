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
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write_text
from ..errors import ConfigError
from ..io._factory import ArchSpec, load_model
from ..report import write_run_report
from .config import PruneConfig
from .result import PruneResult
from .run import prune

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"


def resume_arguments(out: Path, ckpt: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """What ``prune --resume --out OUT`` continues with: the run's own checkpoint, dataset and
    configuration from ``config.json``; of ``options`` only those a resumed run may change."""
    from .progress import RESUME_FREE

    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"cannot resume: {str(path)!r} does not exist; {str(out)!r} is not a pruning run directory")
    saved = json.loads(path.read_text())
    if ckpt is not None and Path(ckpt) != Path(saved["checkpoint"]):
        raise ConfigError(
            f"--resume continues the run in {str(out)!r}, which prunes {saved['checkpoint']!r}, not {str(ckpt)!r}"
        )
    fixed = {k: v for k, v in options.items() if k not in RESUME_FREE and v != saved["prune"].get(k)}
    if fixed:
        raise ConfigError(
            f"--resume continues the run exactly as it was started; these options differ from it: "
            f"{sorted(fixed)}. Start a new run to change them."
        )
    config = PruneConfig.from_dict({**saved["prune"], **{k: v for k, v in options.items() if k in RESUME_FREE}})
    return {
        "ckpt": Path(saved["checkpoint"]),
        "config": config,
        "dataset": saved["dataset"],
        "data_dir": saved["data_dir"],
        "dataset_options": saved["dataset_options"],
        "arch": ArchSpec(**saved["arch"]) if saved.get("arch") else None,
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
    from ..train import dist_info
    from ..train.distributed import process_group, resolve_device

    # Under torchrun every rank checks the directory before any rank writes to it.
    with process_group(resolve_device(config.device, dist_info())) as info:
        check_out(Path(out), resume)
        if info.enabled:
            torch.distributed.barrier()
        return _prune_into(Path(ckpt), Path(out), config, dataset, data_dir, dataset_options, resume, arch)


def check_out(out: Path, resume: bool) -> None:
    """Refuse a new run into a folder that holds (part of) an earlier pruning run."""
    leftovers = [p.name for p in (out / METRICS_FILE, out / MODEL_FILE, out / CONFIG_FILE) if p.exists()]
    leftovers += sorted(p.name for p in out.glob("finetune-*")) if out.is_dir() else []
    if leftovers and not resume:
        # A new run would re-cut and then collide with the old fine-tuning folders.
        raise ConfigError(
            f"{str(out)!r} already holds (part of) a pruning run ({', '.join(leftovers)}); resume "
            "it with --resume, choose another --out, or delete it"
        )


#: Shown in the first line of a run; the other options are listed only where they differ
#: from their defaults, and all of them are in config.json.
_HEADLINE = {"method", "macs_reduction", "params_reduction", "scope", "rounds", "finetune", "finetune_epochs"}


def describe(config: PruneConfig, ckpt: Path, out: Path) -> str:
    """The configuration as a person reads it: what is pruned how far, in how many rounds,
    with what fine-tuning; then only the options that differ from their defaults."""
    aim = "no target" if config.target is None else f"{config.metric} reduction {100 * config.target:g}%"
    epochs = sum(config.epochs_per_round())
    tuning = f"fine-tuning {config.resolved_finetune()} for {epochs} epoch(s) in all" if epochs else "no fine-tuning"
    rounds = config.resolved_rounds()
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


def _to_file_only(handler: logging.Handler, text: str) -> None:
    """Log ``text`` into the run's log.txt only: the caller prints the summary (the CLI on
    stdout), and a second copy on stderr read as a second run."""
    handler.handle(logging.LogRecord("secateurs.prune", logging.INFO, __file__, 0, "%s", (text,), None))


def _prune_into(
    ckpt: Path,
    out: Path,
    config: PruneConfig,
    dataset: str | None,
    data_dir: str | None,
    dataset_options: dict[str, Any] | None,
    resume: bool,
    arch: ArchSpec | None = None,
) -> PruneResult:
    from ..io import read_meta, save
    from ..methods import get_method
    from ..runs import checkpoint_dataset
    from ..train import dist_info
    from ..train.trainer import model_meta

    meta = read_meta(ckpt)
    spec = get_method(config.method)
    # The checkpoint's dataset has a training split: BN recalibration is on by default with it.
    need_train = spec.needs_data or any(config.epochs_per_round()) or config.resolved_bn_recalibration(True) > 0
    dataset, test_set = checkpoint_dataset(Path(ckpt), meta, dataset, "test", data_dir, dataset_options)
    train_set = (
        checkpoint_dataset(Path(ckpt), meta, dataset, "train", data_dir, dataset_options)[1] if need_train else None
    )
    model = load_model(ckpt, arch)
    main = dist_info().is_main
    handler = None
    logger = logging.getLogger("secateurs")
    level = logger.level
    if main:
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / LOG_FILE)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        epochs = config.epochs_per_round()
        resolved = {
            "checkpoint": str(ckpt),
            "dataset": dataset,
            "data_dir": data_dir,
            "dataset_options": dataset_options or {},
            "prune": config.to_dict(),
            "arch": arch.to_dict() if arch is not None else None,
            "finetune": config.resolved_finetune(),
            "rounds": config.resolved_rounds(),
            "epochs_per_round": epochs,
            "finetune_train": config.train_config(max(epochs, default=1)).to_dict() if any(epochs) else None,
            "method_options": dataclasses.asdict(spec.make_options(config.method_options)),
        }
        if not resume:
            atomic_write_text(out / CONFIG_FILE, json.dumps(resolved, indent=2))
    try:
        logging.getLogger("secateurs.prune").info("%s", describe(config, ckpt, out))
        pruned, result = prune(model, config=config, train_set=train_set, test_set=test_set, run_dir=out, resume=resume)
        if main:
            data = train_set or test_set
            base = {k: meta[k] for k in ("dataset", "input_shape", "normalisation") if k in meta}
            if arch is not None:  # names the factory to load it with (see secateurs.load)
                base["architecture"] = arch.to_dict()
            save(
                pruned.cpu(),
                out / MODEL_FILE,
                {
                    **model_meta(data),
                    **base,
                    "pruning": {
                        "method": config.method,
                        "source": str(ckpt),
                        "metric": result.metric,
                        "target": result.target,
                        "achieved": result.achieved,
                    },
                    "metrics": {"test_top1": result.after["top1"]},
                },
            )
            atomic_write_text(out / METRICS_FILE, json.dumps(result.to_dict(), indent=2))
            write_run_report(out)  # report.md and its figures, read back from the files just written
            _to_file_only(handler, result.summary())
        return result
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.close()
