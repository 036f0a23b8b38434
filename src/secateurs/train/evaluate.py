"""Top-1 / top-5 accuracy and loss of a classifier over a whole split."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


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


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             autocast_dtype: torch.dtype | None = None) -> EvalResult:
    """Evaluate in eval mode (restoring the previous mode), summing over every batch."""
    was_training = model.training
    model.eval()
    loss_sum, correct1, correct5, n = 0.0, 0, 0, 0
    k = min(5, num_classes)
    try:
        for x, y in batches:
            with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            topk = logits.topk(k, dim=1).indices
            hits = topk.eq(y[:, None])
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            n += y.numel()
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate() received no batches")
    return EvalResult(loss=loss_sum / n, top1=100.0 * correct1 / n,
                      top5=100.0 * correct5 / n if num_classes > 10 else None, samples=n)
