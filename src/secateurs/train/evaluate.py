"""Top-1 / top-5 accuracy and loss of a classifier over a whole split."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .._progress import tracked
from ..data import BatchLoader, ImageDataset, LoaderConfig, TorchLoader, as_loader, is_map_dataset
from .distributed import dist_info


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float | None  # reported when there are more than 10 classes
    samples: int

    def to_dict(self) -> dict:
        d = {"loss": self.loss, "top1": self.top1, "samples": self.samples}
        if self.top5 is not None:
            d["top5"] = self.top5
        return d


def _batches(model: nn.Module, data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Batches on the model's device: data goes through :func:`as_loader`; loaders, lists
    and generators are taken as batches already."""
    if isinstance(data, (BatchLoader, TorchLoader, list, tuple)):
        return data
    if not (isinstance(data, (ImageDataset, DataLoader)) or is_map_dataset(data)):
        return data
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return as_loader(data, LoaderConfig(batch_size=batch_size, train=False, device=device))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Any,
    num_classes: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 512,
    progress: bool | None = None,
) -> EvalResult:
    """Evaluate in eval mode (restoring the previous mode), summing over every batch.

    Args:
        model: the classifier.
        batches: an iterable of ``(x, y)`` batches on the model's device, or data that
            :func:`secateurs.data.as_loader` reads (an ``ImageDataset``, a torch ``Dataset``
            of ``(image, label)``, a ``DataLoader``), batched here in order.
        num_classes: decides whether top-5 is reported (above 10 classes); None: the width
            of the model's output.
        autocast_dtype: mixed precision for the forward passes (None: full precision).
        batch_size: batch size when ``batches`` is a dataset.
        progress: report progress on stderr when the pass is long (see :mod:`secateurs._progress`);
            None: on rank 0 only, so that torchrun's processes do not repeat each other.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct1, correct5, n = 0.0, 0, 0, 0
    try:
        shown = dist_info().is_main if progress is None else progress
        for x, y in tracked(_batches(model, batches, batch_size), "evaluating", enabled=shown):
            with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(x)
            logits = logits.float()
            num_classes = num_classes or logits.shape[1]
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            topk = logits.topk(min(5, num_classes), dim=1).indices
            hits = topk.eq(y[:, None])
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() received no batches")
    return EvalResult(
        loss=loss_sum / n, top1=100.0 * correct1 / n, top5=100.0 * correct5 / n if num_classes > 10 else None, samples=n
    )
