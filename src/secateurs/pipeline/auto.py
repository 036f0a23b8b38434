"""``method="auto"``: try each candidate method, keep the one whose cut hurts least, fine-tune only it.

Which criterion survives a cut best depends on the network and the budget, and no rule of
thumb predicts it; what does predict the fine-tuned ranking reasonably is the accuracy right
after the cut once BatchNorm statistics are re-estimated (before recalibration every cut
looks alike: near chance). So each candidate prunes a copy of the model to the run's target
without fine-tuning, with BN recalibration, and is scored on a held-out part of the
*training* set (never the test set, which would make the choice a test-set fit). The winner
is then run again with the full configuration, fine-tuning included, on the whole training
set. Every candidate's score and time are recorded in ``metrics.json`` under ``auto``.

The cost is one cut, one recalibration and one held-out evaluation per candidate: no
fine-tuning, so a small fraction of a fine-tuned run.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data import ImageDataset
from ..errors import ConfigError
from .config import PruneConfig

#: Filter-pruning methods that reach any MACs or params target; kernel-level hnsi (whose target
#: is kernel-sparse MACs) and probability (a data-free threshold) are left to be named explicitly.
DEFAULT_CANDIDATES = ("l1", "l1-capped", "fcs", "feature-l1", "bn-scale")
#: Training samples held out to score the candidates.
DEFAULT_HOLDOUT = 2048

#: ``prune`` itself, passed in so this module does not import the module that imports it.
PruneFn = Callable[..., tuple[nn.Module, Any]]


@dataclasses.dataclass(frozen=True)
class AutoOptions:
    """``method_options`` of ``method="auto"``."""

    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    holdout: int = DEFAULT_HOLDOUT

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AutoOptions":
        unknown = sorted(set(values) - {"candidates", "holdout"})
        if unknown:
            raise ConfigError(f"method 'auto' has no option(s) {unknown}; it takes candidates (method names) "
                              "and holdout (training samples held out to score them)")
        candidates = values.get("candidates", DEFAULT_CANDIDATES)
        if isinstance(candidates, str):
            candidates = [c.strip() for c in candidates.split(",") if c.strip()]
        options = cls(tuple(candidates), int(values.get("holdout", DEFAULT_HOLDOUT)))
        from ..methods import get_method

        for name in options.candidates:
            if name == "auto":
                raise ConfigError("method 'auto' cannot be its own candidate")
            get_method(name)  # an unknown name is refused with the list of methods
        if len(options.candidates) < 2:
            raise ConfigError(f"method 'auto' needs at least two candidates, got {list(options.candidates)}")
        if options.holdout < 1:
            raise ConfigError(f"auto holdout must be a positive number of samples, got {options.holdout}")
        return options


def split_holdout(train_set: Any, size: int, seed: int) -> tuple[Any, Any]:
    """``(rest, held out)``: a seeded random ``size`` samples of ``train_set`` and the others."""
    if isinstance(train_set, DataLoader):
        raise ConfigError("method 'auto' holds out part of the training set, which a DataLoader does not allow: "
                          "pass the Dataset itself as train_set")
    n = len(train_set)
    if size >= n:
        raise ConfigError(f"auto holdout={size} leaves nothing to calibrate on: the training set has {n} samples; "
                          "give a smaller holdout")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, rest = order[:size].sort().values, order[size:].sort().values
    if isinstance(train_set, ImageDataset):
        def part(idx: torch.Tensor) -> ImageDataset:
            return ImageDataset(train_set.info, train_set.images[idx], train_set.labels[idx], train_set.split,
                                train_set.classes)
        return part(rest), part(held)
    if isinstance(train_set, Dataset):
        return Subset(train_set, rest.tolist()), Subset(train_set, held.tolist())
    raise ConfigError(f"method 'auto' needs a Dataset as train_set, got {type(train_set).__name__}")


def prune_auto(prune: PruneFn, model: nn.Module, config: PruneConfig, train_set: Any,
               **kwargs: Any) -> tuple[nn.Module, Any]:
    """Score every candidate on held-out training samples after its cut, then run the best.

    ``kwargs`` are ``prune``'s other arguments (test set, shapes, run directory); the
    candidates' trial cuts write nothing.
    """
    options = AutoOptions.from_dict(config.method_options)
    if train_set is None:
        raise ConfigError("method 'auto' scores the candidates on held-out training samples: give a train_set")
    rest, held = split_holdout(train_set, options.holdout, config.seed)
    trial_kwargs = {k: v for k, v in kwargs.items() if k in ("input_shape", "example_inputs")}
    scores = []
    for name in options.candidates:
        trial = dataclasses.replace(config, method=name, method_options={}, finetune="none", finetune_epochs=None,
                                    finetune_options={}, latency=False, evaluate_before=False)
        start = time.perf_counter()
        _, result = prune(model, config=trial, train_set=rest, test_set=held, **trial_kwargs)
        scores.append({"method": name, "holdout_top1": result.after.get("top1"), "achieved": result.achieved,
                       "seconds": round(time.perf_counter() - start, 3)})
    scored = [s for s in scores if s["holdout_top1"] is not None]
    best = max(scored, key=lambda s: s["holdout_top1"])  # ties: the earlier candidate
    final = dataclasses.replace(config, method=best["method"], method_options={})
    pruned, result = prune(model, config=final, train_set=train_set, **kwargs)
    result.auto = {"chosen": best["method"], "holdout_samples": options.holdout, "candidates": scores,
                   "choosing_s": round(sum(s["seconds"] for s in scores), 3)}
    return pruned, result
