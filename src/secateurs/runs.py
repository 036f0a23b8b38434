"""What the CLI commands do, as functions the benchmarks and tests call too.

A training run directory holds ``run.json`` (model, dataset and training options: enough
to resume), ``metrics.jsonl``, ``model.safetensors`` and ``state.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ._atomic import atomic_write_text
from .errors import CheckpointError, ConfigError

RUN_FILE = "run.json"
#: What ``secateurs train`` writes into its run directory, and nothing else.
TRAIN_FILES = (RUN_FILE, "model.safetensors", "state.safetensors", "metrics.jsonl")


def stem_for(image_size: int, stem: str = "auto") -> str:
    """The zoo stem to use: ``cifar`` for images up to 64 px, ``imagenet`` above."""
    return ("cifar" if image_size <= 64 else "imagenet") if stem == "auto" else stem


def build_for_dataset(model_name: str, info: Any, stem: str = "auto", **kwargs: Any) -> nn.Module:
    from .models import create_model

    return create_model(
        model_name,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        stem=stem_for(info.image_size, stem),
        **kwargs,
    )


def train_command(
    out: Path,
    resume: bool,
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    stem: str = "auto",
    overrides: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    overwrite: bool = False,
):
    """``secateurs train``: start a run in ``out``, or continue it with ``resume``.

    Everything that can be refused is checked before anything is written. A new run
    claims its files in ``out`` (see :mod:`secateurs.io.outdir`): one that exists is
    refused unless ``overwrite``, which replaces those files and nothing else.
    """
    from .data import load_dataset
    from .io.outdir import claim, discard
    from .train import TrainConfig, dist_info, train
    from .train.trainer import EXTENDABLE, RESUME_FREE, check_run_dir

    out = Path(out)
    overrides = dict(overrides or {})
    outputs = [out / name for name in TRAIN_FILES]
    if resume or not overwrite:  # an existing run is offered --resume first
        check_run_dir(out, resume)
    if not resume:
        claim(outputs, overwrite=overwrite)
    if resume:
        run = read_run(out)
        given = {
            "model": model,
            "dataset": dataset,
            "dataset_options": dataset_options,
            **{k: v for k, v in overrides.items() if k not in RESUME_FREE | EXTENDABLE},
        }
        saved = {
            "model": run["model"],
            "dataset": run["dataset"],
            "dataset_options": run.get("dataset_options", {}),
            **run["train"],
        }
        clash = {k: (v, saved.get(k)) for k, v in given.items() if v is not None and v != saved.get(k)}
        if clash:
            raise ConfigError(
                f"--resume continues the run in {str(out)!r} exactly as it was started; these options "
                f"differ from it (given, saved): {clash}. Start a new run to change them."
            )
        config = TrainConfig.from_dict(
            {
                **run["train"],
                **{k: v for k, v in overrides.items() if k in RESUME_FREE},
                "epochs": _resume_epochs(out, run["train"]["epochs"], overrides.get("epochs")),
            }
        )
        model, dataset, data_dir, stem = run["model"], run["dataset"], data_dir or run["data_dir"], run["stem"]
        dataset_options = run.get("dataset_options", {})
    else:
        if model is None or dataset is None:
            raise ConfigError("secateurs train needs --model and --dataset (or --resume --out RUN_DIR)")
        config = TrainConfig.from_dict(overrides)
    info = dist_info()
    if config.batch_size % info.world_size:
        raise ConfigError(
            f"--batch-size {config.batch_size} is the global batch and must divide evenly over the "
            f"{info.world_size} processes"
        )
    dataset_options = dataset_options or {}
    train_set = load_dataset(dataset, "train", data_dir, **dataset_options)
    test_set = load_dataset(dataset, "test", data_dir, **dataset_options)
    torch.manual_seed(config.seed)
    net = build_for_dataset(model, train_set.info, stem)
    if overwrite and not resume:
        # Every rank, so that no rank's trainer takes the old state for a run to resume;
        # run.json is left to the atomic replace below (rank 0 may have written it already).
        discard(p for p in outputs if p.name != RUN_FILE)
    if not resume and info.is_main:
        atomic_write_text(
            out / RUN_FILE,
            json.dumps(
                {
                    "model": model,
                    "dataset": dataset,
                    "data_dir": data_dir,
                    "dataset_options": dataset_options,
                    "stem": stem,
                    "train": config.to_dict(),
                },
                indent=2,
            ),
        )
    if resume and info.is_main and config.epochs != run["train"]["epochs"]:  # extended: a later --resume keeps it
        atomic_write_text(out / RUN_FILE, json.dumps({**run, "train": config.to_dict()}, indent=2))
    return train(
        net, train_set, test_set, config, run_dir=out, resume=resume, meta={"run": {"model": model, "dataset": dataset}}
    )


def _resume_epochs(out: Path, saved: int, given: int | None) -> int:
    """A resumed run's epochs: its own, or ``given`` when larger (which extends it; see
    :func:`secateurs.train.train` for the learning-rate schedule then)."""
    if given is not None and given < saved:
        raise ConfigError(
            f"--epochs {given} is fewer than the {saved} epochs of the run in {str(out)!r}; a run can "
            f"be extended (--epochs above {saved}), not shortened"
        )
    return saved if given is None else given


def read_run(out: Path) -> dict[str, Any]:
    path = Path(out) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist: {str(out)!r} is not a secateurs training run directory")
    try:
        run = json.loads(path.read_text())
        missing = {"model", "dataset", "data_dir", "stem", "train"} - set(run)
    except (json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({e}); it is not a secateurs run file") from e
    if missing:
        raise ConfigError(f"{str(path)!r} lacks {sorted(missing)}; it is not a secateurs run file")
    return run


def _input_shape(ckpt: Path, given: Sequence[int] | None) -> tuple[int, ...]:
    from .io import read_meta

    if given:
        if len(given) != 3:
            raise ConfigError(f"--input-shape must be C,H,W (three integers), got {list(given)}")
        return tuple(given)
    shape = read_meta(ckpt).get("input_shape")
    if not shape:
        raise ConfigError(f"{str(ckpt)!r} records no input shape; pass --input-shape C,H,W")
    return tuple(shape)


def checkpoint_dataset(
    ckpt: Path,
    meta: dict[str, Any],
    dataset: str | None,
    split: str,
    data_dir: str | None,
    dataset_options: dict[str, Any] | None = None,
):
    """``(name, split data)`` for a checkpoint: its own dataset unless one is given, checked
    against the shapes it was trained for and normalised as during its training."""
    from .data import load_dataset

    dataset = dataset or meta.get("dataset", {}).get("name")
    if dataset is None:
        raise ConfigError(f"{str(ckpt)!r} records no dataset; pass --dataset")
    data = load_dataset(dataset, split, data_dir, **(dataset_options or {}))
    want = meta.get("dataset", {})
    for key in ("num_classes", "in_channels", "image_size"):
        if key in want and want[key] != getattr(data.info, key):
            raise CheckpointError(
                f"{str(ckpt)!r} was trained for {key}={want[key]}, but dataset {dataset!r} has "
                f"{getattr(data.info, key)}"
            )
    norm = meta.get("normalisation")
    if norm:  # the model expects the inputs normalised as during its training
        data.info = dataclasses.replace(data.info, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
    return dataset, data


def evaluate_checkpoint(
    ckpt: Path,
    dataset: str | None,
    data_dir: str | None,
    split: str = "test",
    batch_size: int = 512,
    device: str = "auto",
    dataset_options: dict[str, Any] | None = None,
    arch: Any = None,
) -> dict[str, Any]:
    """``secateurs eval``; ``arch`` (an :class:`~secateurs.io._factory.ArchSpec`) rebuilds a model not in the zoo."""
    from .data import LoaderConfig, as_loader
    from .io import read_meta
    from .io._factory import load_model
    from .train import dist_info
    from .train.distributed import resolve_device

    dataset, data = checkpoint_dataset(ckpt, read_meta(ckpt), dataset, split, data_dir, dataset_options)
    dev = resolve_device(device, dist_info())
    model = load_model(ckpt, arch).to(dev)
    from .train import evaluate

    result = evaluate(
        model, as_loader(data, LoaderConfig(batch_size=batch_size, train=False, device=dev)), data.info.num_classes
    )
    return {"checkpoint": str(ckpt), "dataset": dataset, "split": split, **result.to_dict()}


def measure_checkpoint(ckpt: Path, input_shape: Sequence[int] | None = None, arch: Any = None, **kwargs: Any):
    from .io._factory import load_model
    from .measure import measure

    return measure(load_model(ckpt, arch), _input_shape(ckpt, input_shape), **kwargs)


def compare_checkpoints(a: Path, b: Path, input_shape: Sequence[int] | None = None, arch: Any = None, **kwargs: Any):
    """``measure --compare``: the two models timed interleaved (see
    :func:`secateurs.measure.compare_latency`), at A's input shape unless one is given."""
    from .io._factory import load_model
    from .measure import compare_latency

    return compare_latency(load_model(a, arch), load_model(b, arch), _input_shape(a, input_shape), **kwargs)


def export_checkpoint(
    ckpt: Path,
    fmt: str,
    out: Path,
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
    verify: bool = True,
    overwrite: bool = False,
    arch: Any = None,
) -> tuple[Path, float | None]:
    """Export, and for ONNX compare with PyTorch in onnxruntime before ``out`` is written.

    ``out`` is claimed first (see :mod:`secateurs.io.outdir`): an existing file is replaced
    only with ``overwrite``, and never the checkpoint being exported. The checkpoint's
    normalisation, input shape, class names and pruning summary go into the file's metadata.
    """
    from ._atomic import atomic_write
    from .io import read_header
    from .io._factory import load_model
    from .io.export import export_metadata, export_model, verify_onnx
    from .io.outdir import claim

    claim([out], overwrite=overwrite, source=ckpt)
    model = load_model(ckpt, arch)
    shape = _input_shape(ckpt, input_shape)
    metadata = export_metadata(read_header(ckpt), shape)
    diff: list[float] = []

    def write(tmp: Path) -> None:
        export_model(model, tmp, fmt, shape, opset=opset, metadata=metadata)
        if verify and fmt == "onnx":
            diff.append(verify_onnx(model, tmp, shape))

    path = atomic_write(out, write)
    return path, (diff[0] if diff else None)
