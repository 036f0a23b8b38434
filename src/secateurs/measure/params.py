"""Parameter counts, dense and non-zero."""

from __future__ import annotations

import torch.nn as nn


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters of ``model`` (buffers such as BatchNorm statistics excluded).

    Args:
        model: any module; parameters shared between submodules count once.
        nonzero: count only non-zero entries, which is what unstructured or masked pruning
            changes while the dense count stays put until the layers are physically shrunk.
    """
    if nonzero:
        return sum(int((p != 0).sum()) for p in model.parameters())
    return sum(p.numel() for p in model.parameters())
