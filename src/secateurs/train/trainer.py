"""The training loop: SGD, schedules, AMP, DDP, atomic per-epoch checkpoints, exact resume.

Resume is exact because everything random is a function of (seed, epoch, rank) -- the
data order and augmentation come from the loader's seeded sampler, and the global torch
RNG (dropout) is re-seeded at every epoch -- and the rest (weights, optimizer buffers,
the loss scaler, the step counter) is in the state file written atomically at the end of
every epoch. The pieces: :mod:`._session` (what a run sets up once), :mod:`._epoch` (one
epoch), :mod:`.run_files` (the run directory), :mod:`.resume`, :mod:`.objectives`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn
from tqdm.auto import tqdm

from ._epoch import evaluate_epoch, format_record, train_epoch
from ._session import EpochLoop, Trainees, TrainState, check_batch_split, on_device
from .config import TrainConfig
from .distributed import dist_info, process_group, training_device
from .objectives import Objective, checked_companions, cross_entropy, with_bn_l1
from .resume import EXTENDABLE, RESUME_FREE, restore
from .run_files import METRICS_FILE, MODEL_FILE, STATE_FILE, RunFiles, check_run_dir, model_meta

# train() calls this through the module's name at every epoch, so a test can replace it to
# kill a run right after an epoch's files are written.
from .run_files import write_epoch as _write_epoch

__all__ = [
    "EXTENDABLE",
    "METRICS_FILE",
    "MODEL_FILE",
    "Objective",
    "RESUME_FREE",
    "STATE_FILE",
    "TrainResult",
    "check_run_dir",
    "cross_entropy",
    "model_meta",
    "train",
]


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    wall_time_s: float
    run_dir: Path | None = None
    final: dict[str, Any] = field(default_factory=dict)


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
        train_set / test_set: what :func:`secateurs.data.as_loader` reads (an ``ImageDataset``,
            a torch ``Dataset`` of ``(image, label)`` or a ``DataLoader``); no test set, no evaluation.
        config: see :class:`TrainConfig`.
        run_dir: where rank 0 writes ``metrics.jsonl``, ``model.safetensors`` (model +
            metadata, what ``secateurs eval/measure/export`` read) and ``state.safetensors``
            (everything needed to resume), each atomically at the end of every epoch.
        resume: continue the run in ``run_dir`` after its last finished epoch. A larger
            ``config.epochs`` extends the run (finished or not): the schedule is recomputed for
            the new length and followed from the saved step (with ``cosine``, a warm restart).
            Every other option must be the run's own.
        meta: extra metadata stored in ``model.safetensors``.
        objective: loss function, default cross-entropy with the configured smoothing; with
            ``config.bn_l1`` the BN sparsity term is added to it (:func:`.objectives.with_bn_l1`).
        after_step: called with the bare model after every optimizer step (e.g. to hold masks).
        companions: other networks trained with the model by the same optimizer (a mutual-
            learning peer), handed to ``objective`` as keywords; their weights are in the
            state file, so resume restores them, but only ``model`` is evaluated and saved.
    """
    files = RunFiles.of(run_dir, resume, config, train_set, meta)
    # A pruning run passes the device its plan resolved, which this leaves as it is; a direct
    # call is resolved here ("auto", and a bare "cuda" becomes this rank's GPU).
    device = training_device(config.device, dist_info())
    objective = with_bn_l1(objective or cross_entropy(config.label_smoothing), config.bn_l1)
    companions = checked_companions(companions)
    with process_group(device) as info:  # joins torchrun's group unless the caller already has
        check_batch_split(config.batch_size, info)
        networks = [model, *companions.values()]
        with on_device(networks, device, info.enabled and config.sync_bn, config.channels_last):
            trainees = Trainees.build(model, companions, config, device)
            announce = info.is_main and config.progress
            state = restore(files.path, config, trainees, announce) if resume else TrainState()
            loop = EpochLoop.build(trainees, (train_set, test_set), objective, after_step, config, device, info)
            started = time.perf_counter()
            for epoch in range(state.epoch, config.epochs):
                record = train_epoch(loop, state, epoch)
                record.update(evaluate_epoch(loop))
                state.history.append(record)
                state.epoch = epoch + 1
                if info.is_main and files is not None:
                    _write_epoch(files, trainees, state)
                if announce:
                    tqdm.write(format_record(record))
        final = state.history[-1] if state.history else {}
        return TrainResult(state.history, time.perf_counter() - started, files.path if files else None, final)
