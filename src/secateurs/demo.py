"""``make demo``: the product in five minutes -- train a baseline, prune it two ways, compare.

On Fashion-MNIST (the dataset Debian ships) the demo trains a short baseline (reused when a
finished one with the same options is there, resumed when interrupted), prunes it to 50%
of its MACs with ``fcs`` and with ``l1`` as the reference, each followed by BN
recalibration and a short fine-tuning, and prints one table read from the two runs'
``metrics.json`` (:mod:`secateurs.report`) with the path of the comparison report.

Why ``fcs``: of the paper methods it is the one that runs on the same schedule as ``l1``
(one cut, then fine-tuning), so the two rows differ only in which channels go: ``fcs``
scores channels by what they compute on real images (feature similarity), ``l1`` by the
size of their weights. ``l1-capped`` (three rounds) and ``hnsi`` (kernels, two stages) need
more fine-tuning than five minutes hold to show what they do.

Why ``test_resnet`` by default: a ResNet of the CIFAR family (one block per stage, widths
8/16/32, 3.1 M MACs) whose evaluation on the 10,000 test images takes seconds on two
cores. ``resnet20`` (40.5 M MACs) takes about a minute per evaluation there, and a pruning
run evaluates several times; ``--model resnet20`` runs the same demo, longer.

The demo writes only into a new or empty folder or its own earlier demo, and deletes only
files it wrote itself (listed in ``demo.json``), so a user's file beside them survives
``--fresh``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import commands
from ._atomic import atomic_write_text
from .errors import ConfigError
from .io.outdir import discard

MANIFEST = "demo.json"
BASELINE = "baseline"
REFERENCE = "l1"


@dataclass
class DemoConfig:
    """What the demo runs. The defaults are sized to finish in five minutes on two idle cores:
    the whole default demo took 3 min 2 s of CPU time at one thread (``OMP_NUM_THREADS=1``;
    user + sys) on a 2-core machine too busy for its wall time to mean anything (load 15),
    to which the two latency comparisons may add up to their 20 s budget each of waiting."""

    model: str = "test_resnet"
    method: str = "fcs"  # the paper method, compared with l1 (see the module docstring)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 3
    max_steps_per_epoch: int | None = 150
    macs_reduction: float = 0.5
    finetune_epochs: int = 1
    finetune_max_steps_per_epoch: int | None = 100
    latency: bool = True

    def baseline_options(self) -> dict[str, Any]:
        """The training options of the baseline; a different set trains a new one."""
        return {
            "epochs": self.epochs,
            "batch_size": 128,
            "lr": 0.1,
            "schedule": "onecycle",
            "max_steps_per_epoch": self.max_steps_per_epoch,
        }


def _read_manifest(out: Path) -> dict[str, Any]:
    """The demo's record of what it wrote in ``out``; refuses a folder the demo did not make."""
    path = out / MANIFEST
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ConfigError(
                f"{str(path)!r} is not valid JSON; delete the folder {str(out)!r} by hand or pass another --out"
            ) from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{str(out)!r} exists and is not a demo run (it has no {MANIFEST}); the demo writes only "
            "into a new or empty folder or its own earlier run. Pass another --out."
        )
    return {"files": []}


def _save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    manifest["files"] = sorted(set(manifest["files"]))
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))


def _forget(out: Path, manifest: dict[str, Any], keep: str | None = None) -> None:
    """Delete the files the demo wrote (all, or all but those under ``keep``), then the
    folders that are left empty; nothing else."""
    gone = [f for f in manifest["files"] if keep is None or Path(f).parts[0] != keep]
    discard(out / f for f in gone)
    for folder in sorted({p for f in gone for p in (out / f).parents if out in p.parents}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    manifest["files"] = [f for f in manifest["files"] if f not in gone]


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} if out.is_dir() else set()


class _Recorder:
    """Adds the files a step creates under ``out`` to the manifest, even when the step fails,
    so a later run can delete them; files that were there before are not the demo's."""

    def __init__(self, out: Path, manifest: dict[str, Any]) -> None:
        self.out, self.manifest = out, manifest

    def __enter__(self) -> _Recorder:
        self.before = _files(self.out)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.manifest["files"] += sorted(_files(self.out) - self.before - {MANIFEST})
        _save_manifest(self.out, self.manifest)


def _baseline_key(config: DemoConfig) -> dict[str, Any]:
    return {
        "model": config.model,
        "dataset": config.dataset,
        "dataset_options": config.dataset_options,
        **config.baseline_options(),
    }


def _baseline(out: Path, config: DemoConfig, manifest: dict[str, Any]) -> Path:
    """Train the baseline into ``out/baseline``, or reuse (resume) the demo's own."""
    from .train import MODEL_FILE

    folder, options = out / BASELINE, config.baseline_options()
    done = folder / "metrics.jsonl"
    epochs = len(done.read_text().splitlines()) if manifest.get("baseline") and done.is_file() else 0
    if epochs >= config.epochs and (folder / MODEL_FILE).is_file():
        print(f"[1/4] reusing the baseline in {folder} (pass --fresh to train it again)", flush=True)
        return folder / MODEL_FILE
    print(
        f"[1/4] training the baseline: {config.model} on {config.dataset}, {config.epochs} epoch(s) -> {folder}",
        flush=True,
    )
    manifest["baseline"] = _baseline_key(config)
    with _Recorder(out, manifest):
        commands.train_command(
            folder,
            resume=epochs > 0,
            model=config.model,
            dataset=config.dataset,
            data_dir=config.data_dir,
            dataset_options=config.dataset_options or None,
            overrides={k: v for k, v in options.items() if v is not None},
        )
    return folder / MODEL_FILE


def _prune_config(config: DemoConfig, method: str) -> Any:
    """One of the two pruning runs: the same target, recalibration and fine-tuning for both."""
    from .pipeline import PruneConfig
    from .pipeline.recalibration import DEFAULT_BN_RECALIBRATION

    train = {"max_steps_per_epoch": config.finetune_max_steps_per_epoch} if config.finetune_max_steps_per_epoch else {}
    return PruneConfig(
        method=method,
        macs_reduction=config.macs_reduction,
        finetune="tft",
        finetune_epochs=config.finetune_epochs,
        finetune_train=train,
        bn_recalibration=DEFAULT_BN_RECALIBRATION,
        latency=config.latency,
    )


def _prune(out: Path, ckpt: Path, prune_config: Any, step: int, config: DemoConfig, manifest: dict[str, Any]) -> Path:
    from .commands.prune_run import prune_command

    folder = out / prune_config.method
    print(
        f"[{step}/4] pruning to {100 * config.macs_reduction:g}% fewer MACs with {prune_config.method}, "
        f"BN recalibration, {config.finetune_epochs} fine-tuning epoch(s) -> {folder}",
        flush=True,
    )
    with _Recorder(out, manifest):
        prune_command(ckpt, folder, prune_config, config.dataset, config.data_dir, config.dataset_options)
    return folder


def _outputs(out: Path, methods: list[str]) -> list[Path]:
    """Every file the demo's steps write by name (the fine-tuning folders are new ones)."""
    from .commands.prune_run import CONFIG_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE
    from .pipeline.progress import PROGRESS_FILE
    from .report import COMPARISON_FILE, COMPARISON_PLOT, report_files

    prune_files = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, LOG_FILE, PROGRESS_FILE, *report_files())
    return (
        [out / BASELINE / f for f in commands.TRAIN_FILES]
        + [out / m / f for m in methods for f in prune_files]
        + [out / COMPARISON_FILE, out / COMPARISON_PLOT]
    )


def _check(out: Path, config: DemoConfig, fresh: bool) -> tuple[list[Any], dict[str, Any]]:
    """Everything that can be refused, before a file is deleted or written: the options, the
    folder, and files in the demo's way that it did not write. The pruning configurations
    and the demo's manifest."""
    from .data import list_datasets
    from .errors import unknown_choice
    from .io.outdir import claim
    from .models import model_entrypoint
    from .train import TrainConfig

    if config.method == REFERENCE:
        raise ConfigError(f"the demo compares a method with {REFERENCE}; choose another --method than {REFERENCE}")
    model_entrypoint(config.model)
    if config.dataset not in list_datasets():
        raise unknown_choice("dataset", config.dataset, list_datasets())
    prune_configs = [_prune_config(config, m) for m in (config.method, REFERENCE)]
    TrainConfig.from_dict({k: v for k, v in config.baseline_options().items() if v is not None})
    manifest = _read_manifest(out)
    if manifest.get("baseline") not in (None, _baseline_key(config)) and not fresh:
        raise ConfigError(
            f"{str(out)!r} holds a demo baseline trained with {manifest['baseline']}, not "
            f"{_baseline_key(config)}; pass --fresh to train a new one"
        )
    ours = {out / f for f in manifest["files"]}
    claim([p for p in _outputs(out, [config.method, REFERENCE]) if p not in ours], overwrite_flag=None)
    return prune_configs, manifest


def run(out: str | Path, config: DemoConfig | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and print its comparison table.

    Returns:
        ``{"table": the printed table, "report": comparison.md, "runs": the two run
        directories, "wall_time_s": ...}``.
    """
    from .report import COMPARISON_FILE, comparison_rows, load_run, text_table, write_comparison

    config, out, started = config or DemoConfig(), Path(out), time.perf_counter()
    prune_configs, manifest = _check(out, config, fresh)
    _forget(out, manifest, keep=None if fresh else BASELINE)  # pruning runs are redone each time
    if fresh:
        manifest.pop("baseline", None)
    out.mkdir(parents=True, exist_ok=True)
    _save_manifest(out, manifest)
    ckpt = _baseline(out, config, manifest)
    dirs = [_prune(out, ckpt, c, step, config, manifest) for step, c in zip((2, 3), prune_configs)]
    print(f"[4/4] comparing the two runs -> {out / COMPARISON_FILE}", flush=True)
    with _Recorder(out, manifest):
        report = write_comparison(dirs, out)
    headers, rows = comparison_rows([load_run(d) for d in dirs])
    table = text_table(headers, rows)
    wall = time.perf_counter() - started
    print(
        f"\nsecateurs demo: {config.model} on {config.dataset}, pruned to {100 * config.macs_reduction:g}% fewer "
        f"MACs (numbers from {dirs[0].name}/metrics.json and {dirs[1].name}/metrics.json)\n"
    )
    print(table)
    print(f"\nreport: {report}\nper-run reports: {', '.join(str(d / 'report.md') for d in dirs)}")
    print(f"wall time: {wall:.0f} s")
    return {"table": table, "report": report, "runs": dirs, "wall_time_s": wall, "config": asdict(config)}
