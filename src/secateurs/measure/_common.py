"""Shared plumbing of the measurements: the example input and a mode-preserving eval switch."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError, SecateursError

# Rank of one sample (no batch dim) expected by the model's first weighted layer, so that a
# (C, H, W) shape given to a Conv1d model is caught before a confusing forward error.
# A linear layer takes any rank (None), so models that start with one are not checked.
_SAMPLE_RANK: dict[type[nn.Module], int | None] = {
    nn.Conv1d: 2,
    nn.Conv2d: 3,
    nn.Conv3d: 4,
    nn.ConvTranspose1d: 2,
    nn.ConvTranspose2d: 3,
    nn.ConvTranspose3d: 4,
    nn.Linear: None,
}


def _expected_rank(model: nn.Module) -> int | None:
    """Sample rank the model's first weighted layer (in registration order) expects, or None."""
    for module in model.modules():
        for cls in type(module).__mro__:
            if cls in _SAMPLE_RANK:
                return _SAMPLE_RANK[cls]
    return None


def sample_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Validate ``input_shape`` and return the shape of one sample, without batch dim.

    ``input_shape`` describes one sample, e.g. ``(C, H, W)``; a leading batch dim of 1 is
    accepted too, because shapes copied from ``x.shape`` of a single image carry one.
    """
    if isinstance(input_shape, (str, bytes)):
        raise ConfigError(f"input_shape {input_shape!r} must be a sequence of ints, e.g. (3, 32, 32), not a string")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"input_shape {input_shape!r} must be a sequence of ints, e.g. (3, 32, 32)") from e
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"input_shape {shape} must be non-empty with positive sizes, e.g. (3, 32, 32)")
    rank = _expected_rank(model)
    if rank is None or len(shape) == rank:
        return shape
    if len(shape) == rank + 1:
        if shape[0] != 1:
            raise ConfigError(
                f"input_shape {shape} has batch size {shape[0]}; give one sample {shape[1:]} "
                f"(batch sizes are chosen by the measurement itself)"
            )
        return shape[1:]
    raise ConfigError(
        f"input_shape {shape} has rank {len(shape)} but the model's first layer expects "
        f"one sample of rank {rank} (e.g. (C, H, W) for Conv2d), optionally with a leading batch dim of 1"
    )


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (or buffer); CPU float32 if none."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own flag afterwards.

    Restoring per module, not with one ``model.train(flag)``, keeps submodules that the
    caller froze on purpose (e.g. BatchNorm in eval while fine-tuning) as they were.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def forward_errors_as_config(shape: tuple[int, ...]) -> Iterator[None]:
    """Turn a failed forward on the example input into a ConfigError naming the shape.

    The usual cause is an ``input_shape`` that does not fit the model (channels, rank,
    a spatial size too small for the strides); errors secateurs raised itself pass through.
    """
    try:
        yield
    except SecateursError:
        raise
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"forward on a sample of shape {shape} failed ({e}); check input_shape") from e


def indexed_device(device: str | torch.device) -> torch.device:
    """``torch.device`` with the index filled in, so ``"cuda"`` equals the model's ``cuda:0``.

    A bare ``"cuda"`` is the current CUDA device, as torch places a tensor sent there; it
    does not take ``"auto"``. Deciding which device a run trains on is
    :func:`secateurs.train.distributed.training_device`.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
