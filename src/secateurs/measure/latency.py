"""Wall-clock latency of a forward pass, per batch size."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from .._copy import copy_model
from ..errors import ConfigError
from ._common import eval_mode, forward_errors_as_config, indexed_device, model_device_dtype, sample_shape


def _check_counts(batch_sizes: Sequence[int], warmup: int, repeats: int, threads: int | None) -> tuple[int, ...]:
    sizes = tuple(int(b) for b in batch_sizes)
    if not sizes or any(b <= 0 for b in sizes):
        raise ConfigError(f"batch_sizes {tuple(batch_sizes)} must be non-empty positive ints, e.g. (1, 64)")
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"warmup={warmup} must be >= 0 and repeats={repeats} >= 1")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1, or None to keep torch's current setting")
    return sizes


def call_ms(model: nn.Module, x: torch.Tensor) -> float:
    """Milliseconds of one ``model(x)``, device work included."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)  # do not bill queued work to this call
    start = time.perf_counter()
    model(x)
    if cuda:
        torch.cuda.synchronize(x.device)  # kernels are asynchronous: wait for them
    return (time.perf_counter() - start) * 1e3


def _time_forward(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> dict[str, float]:
    """Median, p10 and p90 milliseconds of ``model(x)`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call_ms(model, x)
    times = [call_ms(model, x) for _ in range(repeats)]
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90)}


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = 5,
    repeats: int = 30,
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> dict:
    """Time forward passes on random input, in eval mode under ``torch.inference_mode``.

    The median is reported because a few slow calls (page faults, other processes) skew
    a mean; p10 and p90 show the spread.

    Args:
        model: the network; its train/eval modes and torch's thread count are restored.
        input_shape: one sample, e.g. ``(3, 32, 32)``; a leading batch dim of 1 is accepted.
        batch_sizes: batch sizes to time, each separately.
        warmup: untimed calls first, to let allocators and kernel selection settle.
        repeats: timed calls per batch size.
        device: where to run; ``None`` means the model's device. A different device runs a
            copy of the model, so the caller's model never moves.
        threads: CPU threads for the timing (``torch.set_num_threads``); ``None`` keeps
            the current setting. The count actually used is reported either way.

    Returns:
        ``{"device", "dtype", "threads", "warmup", "repeats", "batches": {batch_size:
        {"median_ms", "p10_ms", "p90_ms"}}}``.
    """
    sizes = _check_counts(batch_sizes, warmup, repeats, threads)
    shape = sample_shape(model, input_shape)
    model_device, dtype = model_device_dtype(model)
    target = indexed_device(device) if device is not None else model_device
    runner = model if target == model_device else copy_model(model).to(target)
    old_threads = torch.get_num_threads()
    batches: dict[int, dict[str, float]] = {}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with eval_mode(runner), torch.inference_mode():
            for b in sizes:
                x = torch.randn((b, *shape), device=target, dtype=dtype)
                with forward_errors_as_config(shape):
                    batches[b] = _time_forward(runner, x, warmup, repeats)
    finally:
        torch.set_num_threads(old_threads)
    return {
        "device": str(target),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": used_threads,
        "warmup": warmup,
        "repeats": repeats,
        "batches": batches,
    }
