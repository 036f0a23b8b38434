"""One epoch of training, its evaluation, and the line that reports it."""

from __future__ import annotations

import time
from typing import Any

import torch

from .._progress import progress
from ._session import EpochLoop, TrainState
from .distributed import all_reduce_sum
from .evaluate import evaluate


def train_epoch(loop: EpochLoop, state: TrainState, epoch: int) -> dict[str, Any]:
    """Run epoch ``epoch`` (0-based), advancing ``state.step``; the record of its training figures."""
    config, loader = loop.config, loop.loaders.train
    loader.set_epoch(epoch)
    # Dropout masks: a pure function of (seed, epoch, rank), so a resumed run draws
    # what the uninterrupted one drew and every process draws its own.
    torch.manual_seed((config.seed * 1_000_003 + epoch) * 1_009 + loop.info.rank)
    for m in (loop.net, *loop.peers.values()):
        m.train()
    t0 = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64, device=loop.device)  # loss*n, correct, n
    # A bar on a terminal, a line every half minute in a log (see secateurs._progress).
    bar = progress(
        total=loop.loaders.steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", enabled=loop.shows_progress
    )
    for i, (x, y) in enumerate(loader):
        if i >= loop.loaders.steps_per_epoch:
            break
        if config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = loop.lr(state.step)
        loss, logits = _step(loop, x, y, lr)
        state.step += 1
        with torch.no_grad():
            sums += _batch_sums(loss, logits, y, loop.device)
        bar.update(1)
        if i % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")
    bar.close()
    sums = all_reduce_sum(sums)
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": float(sums[0] / sums[2]),
        "train_top1": float(100 * sums[1] / sums[2]),
        "epoch_time_s": seconds,
        "train_samples_per_s": float(sums[2]) / seconds,
        "world_size": loop.info.world_size,
    }


def _step(loop: EpochLoop, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at rate ``lr``; the objective's (loss, logits)."""
    t = loop.trainees
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(loop.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
        loss, logits = loop.objective(loop.net, x, y, **loop.peers)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    if loop.after_step is not None:
        loop.after_step(t.model)
    return loss, logits


def _batch_sums(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(loss * n, correct, n) of one batch, in float64 so an epoch's sums stay exact."""
    n = y.numel()
    return torch.stack(
        [
            loss.detach().double() * n,
            (logits.argmax(1) == y).sum().double(),
            torch.tensor(n, dtype=torch.float64, device=device),
        ]
    )


def evaluate_epoch(loop: EpochLoop) -> dict[str, Any]:
    """The model's test figures as ``test_*`` record entries; none without a test set."""
    if loop.loaders.test is None:
        return {}
    t = loop.trainees
    ev = evaluate(t.model, loop.loaders.test, loop.loaders.num_classes, t.amp_dtype, progress=loop.shows_progress)
    return {f"test_{k}": v for k, v in ev.to_dict().items() if k != "samples"}


def format_record(r: dict[str, Any]) -> str:
    text = f"epoch {r['epoch']}: train loss {r['train_loss']:.4f} top1 {r['train_top1']:.2f}%"
    if "test_top1" in r:
        text += f" | test loss {r['test_loss']:.4f} top1 {r['test_top1']:.2f}%"
        if "test_top5" in r:
            text += f" top5 {r['test_top5']:.2f}%"
    return text + f" | {r['epoch_time_s']:.1f}s, {r['train_samples_per_s']:.0f} samples/s"
