"""Process-group set-up for ``torchrun`` and batch-norm statistics over the global batch.

``torch.nn.SyncBatchNorm`` refuses CPU tensors, and without synchronised statistics a
two-process run normalises each half-batch on its own and no longer matches a one-process
run with the same global batch. :class:`GlobalBatchNorm2d` computes the statistics with
the differentiable ``torch.distributed.nn.all_reduce``, which works on gloo and NCCL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank and world size from torchrun's environment variables (1 process without them)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def training_device(device: str, info: DistInfo) -> torch.device:
    """The device this process trains on: ``"auto"`` is CUDA when there is one, and a CUDA
    device without an index is this process's own GPU (torchrun's ``LOCAL_RANK``).

    Unlike :func:`secateurs.measure._common.indexed_device`, which names the device a model
    already sits on, this decides where a run goes.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank)
    return dev


@contextmanager
def process_group(device: torch.device) -> Iterator[DistInfo]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) for the block, if any."""
    info = dist_info()
    created = False
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    try:
        yield dist_info()
    finally:
        if created:
            dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients, so each
    process's loss reaches the inputs of every other process through the statistics."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every process.

    Statistics are computed in float32 whatever the autocast dtype, as the local kernel
    does: fp16 sums of 65,536 elements overflow.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.tensor([xf.numel() / c], dtype=torch.float32, device=x.device)
        total = _AllReduceSum.apply(torch.cat([xf.sum(dim=(0, 2, 3)), count]))
        n = total[-1]
        mean = total[:c] / n
        centred = xf - mean.view(1, c, 1, 1)
        # Two passes (mean, then centred squares) for the same accuracy as the local kernel.
        var = _AllReduceSum.apply(centred.square().sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def set_global_batchnorm(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every exact ``BatchNorm2d`` to :class:`GlobalBatchNorm2d` and back, in place.

    Only the class changes: parameters, buffers and state-dict keys stay the same object,
    so optimisers and checkpoints are unaffected.
    """
    src, dst = (nn.BatchNorm2d, GlobalBatchNorm2d) if enabled else (GlobalBatchNorm2d, nn.BatchNorm2d)
    for m in model.modules():
        if type(m) is src:
            m.__class__ = dst
    return model


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values
