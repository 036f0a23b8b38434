"""The training loop: SGD, schedules, AMP, DDP, atomic per-epoch checkpoints, exact resume.

Resume is exact because everything random is a function of (seed, epoch, rank) -- the
data order and augmentation come from the loader's seeded sampler, and the global torch
RNG (dropout) is re-seeded at every epoch -- and the rest (weights, optimizer buffers,
the loss scaler, the step counter) is in the state file written atomically at the end of
every epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._atomic import atomic_write_text
from .._progress import progress
from ..data import LoaderConfig, as_loader, dataset_info
from ..errors import ConfigError
from ..io import load_tree, save, save_tree
from ..io.checkpoint import unwrap
from .config import TrainConfig
from .distributed import all_reduce_sum, dist_info, process_group, resolve_device, set_global_batchnorm
from .evaluate import evaluate
from .schedule import SCHEDULES

#: (model, inputs, targets, **companions) -> (loss, logits of the model). Fine-tuning methods
#: swap in their own; one that trains other networks with the model (mutual learning's peer)
#: receives them, DDP-wrapped when distributed, as keyword arguments.
Objective = Callable[..., tuple[torch.Tensor, torch.Tensor]]

STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
# Options a resumed run may change: they do not change what is computed (a different
# device changes only the floating-point rounding of the remaining epochs).
RESUME_FREE = {"progress", "device", "eval_batch_size", "num_workers"}
#: Options a resumed run may raise, to extend a run (see :func:`train`).
EXTENDABLE = {"epochs"}


def cross_entropy(label_smoothing: float = 0.0) -> Objective:
    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return objective


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    wall_time_s: float
    run_dir: Path | None = None
    final: dict[str, Any] = field(default_factory=dict)


def _amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_run_dir(run_dir: Path | None, resume: bool) -> None:
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


def _restore(
    state: dict[str, Any],
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    companions: dict[str, nn.Module],
) -> None:
    saved_epochs = state["config"]["epochs"]
    if config.epochs < saved_epochs:
        raise ConfigError(
            f"cannot resume with epochs={config.epochs}: the run has {saved_epochs} epochs; give "
            f"--epochs {saved_epochs} or more (more extends it), or start a new run"
        )
    saved = {k: v for k, v in state["config"].items() if k not in RESUME_FREE | EXTENDABLE}
    now = {k: v for k, v in config.to_dict().items() if k not in RESUME_FREE | EXTENDABLE}
    diff = {k: (saved.get(k), now.get(k)) for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)}
    if diff:
        raise ConfigError(
            f"cannot resume with a different configuration: {diff} (saved, now); "
            "resume with the run's own options, or start a new run"
        )
    saved_companions = state.get("companions") or {}
    if sorted(saved_companions) != sorted(companions):
        raise ConfigError(
            f"cannot resume: the run trained companions {sorted(saved_companions)}, this one "
            f"{sorted(companions)}; resume with the run's own fine-tuning mode"
        )
    model.load_state_dict(state["model"])
    for name, module in companions.items():
        module.load_state_dict(saved_companions[name])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])


def train(
    model: nn.Module,
    train_set: Any,
    test_set: Any | None,
    config: TrainConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    objective: Objective | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    companions: dict[str, nn.Module] | None = None,
) -> TrainResult:
    """Train ``model`` in place; under ``torchrun`` every process calls this the same way.

    Args:
        model: the network (built identically on every process).
        train_set / test_set: what :func:`secateurs.data.as_loader` reads: an in-memory
            ``ImageDataset`` (augmented as ``config`` says), a torch ``Dataset`` of ``(image,
            label)`` (batched by a seeded DistributedSampler, ``config.num_workers`` workers) or
            a ``DataLoader`` (used as it is); ``test_set`` may be None (no evaluation).
        config: see :class:`TrainConfig`.
        run_dir: where rank 0 writes ``metrics.jsonl``, ``model.safetensors`` (model +
            metadata, what ``secateurs eval/measure/export`` read) and ``state.safetensors``
            (everything needed to resume), each atomically at the end of every epoch.
        resume: continue the run in ``run_dir`` from its last finished epoch. With
            ``config.epochs`` larger than the run's, a run (finished or not) is extended: the
            learning-rate schedule is recomputed for the new number of epochs and followed
            from the saved step, so with ``cosine`` a finished run's rate rises again from
            about zero to where the longer curve stands at that step (a warm restart), then
            decays to zero at the new end. Every other option must be the run's own.
        meta: extra metadata stored in ``model.safetensors``.
        objective: loss function, default cross-entropy with the configured smoothing.
        after_step: called with the bare model after every optimizer step (e.g. to hold masks).
        companions: other networks trained with the model by the same optimizer (a mutual-
            learning peer), handed to ``objective`` as keywords; their weights are in the
            state file, so resume restores them, but only ``model`` is evaluated and saved.
    """
    run_dir = Path(run_dir) if run_dir is not None else None
    check_run_dir(run_dir, resume)
    device = resolve_device(config.device, dist_info())
    objective = objective or cross_entropy(config.label_smoothing)
    companions = dict(companions or {})
    clash = sorted(set(companions) & {"net", "x", "y"})
    if clash:
        raise ConfigError(
            f"companion name(s) {clash} would collide with the objective's own arguments "
            "(net, x, y); name them otherwise"
        )
    trained = [model, *companions.values()]
    with process_group(device) as info:
        if config.batch_size % info.world_size:
            raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {info.world_size} processes")
        for m in trained:
            m.to(device)
            if info.enabled and config.sync_bn:
                set_global_batchnorm(m, True)
        params = [p for m in trained for p in m.parameters()]
        optimizer = torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        amp_dtype = _amp_dtype(device, config.amp)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
        start_epoch, step, history = 0, 0, []
        if resume:
            state = load_tree(run_dir / STATE_FILE)
            _restore(state, config, model, optimizer, scaler, companions)
            start_epoch, step, history = state["epoch"], state["step"], state["history"]
            if info.is_main and config.progress:
                tqdm.write(_resume_line(run_dir, start_epoch, state["config"]["epochs"], config.epochs))

        def wrap(m: nn.Module) -> nn.Module:
            if not info.enabled:
                return m
            return nn.parallel.DistributedDataParallel(m, device_ids=[device.index] if device.type == "cuda" else None)

        net, peers = wrap(model), {name: wrap(m) for name, m in companions.items()}
        loader = as_loader(
            train_set,
            LoaderConfig(
                batch_size=config.batch_size // info.world_size,
                train=True,
                augment=config.augment,
                seed=config.seed,
                device=device,
                num_workers=config.num_workers,
            ),
            rank=info.rank,
            world_size=info.world_size,
        )
        test_loader = (
            None
            if test_set is None
            else as_loader(
                test_set,
                LoaderConfig(
                    batch_size=config.eval_batch_size, train=False, device=device, num_workers=config.num_workers
                ),
            )
        )
        steps_per_epoch = min(len(loader), config.max_steps_per_epoch or len(loader))
        total_steps = steps_per_epoch * config.epochs
        warmup = int(config.warmup_epochs * steps_per_epoch)
        schedule = SCHEDULES[config.schedule]
        started = time.perf_counter()
        try:
            for epoch in range(start_epoch, config.epochs):
                loader.set_epoch(epoch)
                # Dropout masks: a pure function of (seed, epoch, rank), so a resumed run draws
                # what the uninterrupted one drew and every process draws its own.
                torch.manual_seed((config.seed * 1_000_003 + epoch) * 1_009 + info.rank)
                for m in (net, *peers.values()):
                    m.train()
                t0 = time.perf_counter()
                sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n
                # A bar on a terminal, a line every half minute in a log (see secateurs._progress).
                bar = progress(
                    total=steps_per_epoch,
                    desc=f"epoch {epoch + 1}/{config.epochs}",
                    enabled=config.progress and info.is_main,
                )
                for i, (x, y) in enumerate(loader):
                    if i >= steps_per_epoch:
                        break
                    lr = config.lr * schedule(step, total_steps, warmup)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        loss, logits = objective(net, x, y, **peers)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    if after_step is not None:
                        after_step(model)
                    step += 1
                    with torch.no_grad():
                        n = y.numel()
                        sums += torch.stack(
                            [
                                loss.detach().double() * n,
                                (logits.argmax(1) == y).sum().double(),
                                torch.tensor(n, dtype=torch.float64, device=device),
                            ]
                        )
                    bar.update(1)
                    if i % 20 == 0:
                        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
                bar.close()
                sums = all_reduce_sum(sums)
                seconds = time.perf_counter() - t0
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "train_loss": float(sums[0] / sums[2]),
                    "train_top1": float(100 * sums[1] / sums[2]),
                    "epoch_time_s": seconds,
                    "train_samples_per_s": float(sums[2]) / seconds,
                    "world_size": info.world_size,
                }
                if test_loader is not None:
                    ev = evaluate(
                        model, test_loader, _num_classes(test_set), amp_dtype, progress=config.progress and info.is_main
                    )
                    record.update({f"test_{k}": v for k, v in ev.to_dict().items() if k != "samples"})
                history.append(record)
                if info.is_main and run_dir is not None:
                    _write_epoch(
                        run_dir, model, optimizer, scaler, config, epoch + 1, step, history, train_set, meta, companions
                    )
                if info.is_main and config.progress:
                    tqdm.write(_format_record(record))
        finally:
            if info.enabled and config.sync_bn:
                for m in trained:
                    set_global_batchnorm(m, False)
        return TrainResult(
            history=history,
            wall_time_s=time.perf_counter() - started,
            run_dir=run_dir,
            final=history[-1] if history else {},
        )


def _resume_line(run_dir: Path, done: int, saved_epochs: int, epochs: int) -> str:
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


def _format_record(r: dict[str, Any]) -> str:
    text = f"epoch {r['epoch']}: train loss {r['train_loss']:.4f} top1 {r['train_top1']:.2f}%"
    if "test_top1" in r:
        text += f" | test loss {r['test_loss']:.4f} top1 {r['test_top1']:.2f}%"
        if "test_top5" in r:
            text += f" top5 {r['test_top5']:.2f}%"
    return text + f" | {r['epoch_time_s']:.1f}s, {r['train_samples_per_s']:.0f} samples/s"


def _num_classes(data: Any) -> int | None:
    info = dataset_info(data)
    return info.num_classes if info is not None else None  # None: evaluate reads the model's output width


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


def _write_epoch(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    train_set: Any,
    meta: dict[str, Any] | None,
    companions: dict[str, nn.Module],
) -> None:
    bare = unwrap(model)
    # State first: if the process dies before the model file, resume still has everything.
    save_tree(
        run_dir / STATE_FILE,
        {
            "model": bare.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "history": history,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "config": config.to_dict(),
            "companions": {name: unwrap(m).state_dict() for name, m in companions.items()},
        },
    )
    save(bare, run_dir / MODEL_FILE, model_meta(train_set, config, history[-1], meta))
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))
