"""What the pruning run reads from its data and its example input, in one place.

The data may be anything :func:`secateurs.data.as_loader` reads (an in-memory split, a
streamed image folder, a user's ``Dataset`` or ``DataLoader``); the input shape comes from
an explicit argument, an example input, or the data's :class:`DatasetInfo` when it has one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from ..data import ImageDataset, LoaderConfig, as_loader, dataset_info, length_of, subset_of
from ..errors import ConfigError
from ..train import evaluate

if TYPE_CHECKING:
    from .plan import RunPlan

#: ``(samples, seed, batch_size) -> batches``, see :func:`calibration_batches`.
CalibrationSource = Callable[..., Callable[[], Iterator[torch.Tensor]]]


def input_shape_of(
    input_shape: tuple[int, ...] | None, example_inputs: torch.Tensor | None, data: Any
) -> tuple[int, ...]:
    """One sample's shape: ``input_shape``, else ``example_inputs`` without its batch dimension,
    else the data's ``info``; both given must agree."""
    if example_inputs is not None:
        if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
            got = tuple(example_inputs.shape) if isinstance(example_inputs, torch.Tensor) else type(example_inputs)
            raise ConfigError(
                f"example_inputs must be one tensor with a batch dimension, such as "
                f"torch.randn(1, 3, 224, 224), got {got}"
            )
        shape = tuple(example_inputs.shape[1:])
        if input_shape is not None and tuple(input_shape) != shape:
            raise ConfigError(
                f"input_shape {tuple(input_shape)} and example_inputs {tuple(example_inputs.shape)} "
                "disagree; give one of them"
            )
        return shape
    if input_shape is not None:
        return tuple(input_shape)
    info = dataset_info(data) if data is not None else None
    if info is None:
        what = "no train_set/test_set" if data is None else f"a {type(data).__name__} without .info"
        raise ConfigError(
            f"the input shape is unknown ({what}): give input_shape=(C, H, W) or example_inputs=torch.randn(1, C, H, W)"
        )
    return info.in_channels, info.image_size, info.image_size


def top1_accuracy(model: nn.Module, test_set: Any | None, device: torch.device) -> float | None:
    if test_set is None:
        return None
    loader = as_loader(test_set, LoaderConfig(batch_size=512, train=False, device=device))
    info = dataset_info(test_set)
    return evaluate(model, loader, info.num_classes if info is not None else None).top1


def _take(split: ImageDataset, index: torch.Tensor) -> ImageDataset:
    """The samples ``index`` of an in-memory split, still in memory (the fast path)."""
    return ImageDataset(split.info, split.images[index], split.labels[index], split.split)


def calibration_batches(
    train_set: Any, samples: int, seed: int, device: torch.device, batch_size: int = 64
) -> Callable[[], Iterator[torch.Tensor]]:
    """A fixed, seeded subset of the training set, prepared like training batches (the
    in-memory path normalises; a Dataset's samples come as its ``__getitem__`` makes them)."""
    total = length_of(train_set)
    n = min(samples, total)
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(train_set, ImageDataset):
        subset: Any = _take(train_set, idx)
    else:
        subset = subset_of(train_set, idx, batch_size)
    config = LoaderConfig(batch_size=batch_size, train=False, device=device)

    def batches() -> Iterator[torch.Tensor]:
        for x, _ in as_loader(subset, config):
            yield x

    return batches


@dataclass(frozen=True)
class RunData:
    """What a pruning run reads: its data and one sample's shape, checked against the plan."""

    train_set: Any
    test_set: Any
    shape: tuple[int, ...]
    #: Training samples set aside for the method to judge its cuts on (``Method.holdout``);
    #: ``train_set`` is then the rest. None: nothing set aside.
    holdout: Any = None

    @classmethod
    def of(
        cls,
        plan: RunPlan,
        train_set: Any,
        test_set: Any,
        input_shape: tuple[int, ...] | None = None,
        example_inputs: torch.Tensor | None = None,
    ) -> RunData:
        """Refuse, before anything runs, data that the plan cannot run on."""
        shape = input_shape_of(input_shape, example_inputs, train_set if train_set is not None else test_set)
        epochs = plan.epochs
        if any(epochs) and train_set is None:
            raise ConfigError(
                f"fine-tuning ({plan.finetuning.name}, {sum(epochs)} epochs) needs a train_set; "
                "give one, or set finetune='none'"
            )
        if plan.method.needs_data and train_set is None:
            raise ConfigError(
                f"method {plan.method.name!r} scores channels on calibration samples of the training set: "
                "give a train_set"
            )
        if plan.config.bn_recalibration and train_set is None:
            raise ConfigError(
                f"bn_recalibration={plan.config.bn_recalibration} draws batches from a train_set: give one, or 0"
            )
        holdout = plan.method.holdout(plan.options)
        if holdout:
            train_set, held = split_holdout(train_set, holdout, plan.config.seed, plan.method.name)
            return cls(train_set, test_set, tuple(shape), held)
        return cls(train_set, test_set, tuple(shape))


def split_holdout(train_set: Any, size: int | float, seed: int, owner: str) -> tuple[Any, Any]:
    """(the rest, ``size`` seeded samples -- a count, or a fraction of the set below 1) of
    ``train_set``: the samples set aside are chosen before anything reads the training set, so
    no calibration, recalibration or fine-tuning batch can contain one."""
    if train_set is None:
        raise ConfigError(f"method {owner!r} sets training samples aside to judge its cuts on: give a train_set")
    if isinstance(train_set, DataLoader):
        raise ConfigError(
            f"method {owner!r} sets training samples aside, which needs the dataset itself: pass the "
            f"DataLoader's dataset (a map-style Dataset), not the DataLoader"
        )
    total = length_of(train_set)
    n = size if isinstance(size, int) else round(size * total)
    if not 0 < n < total:
        raise ConfigError(
            f"method {owner!r}: holdout={size} sets {n} of the train_set's {total} samples aside; "
            "it must set some aside and leave some"
        )
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    held, rest = order[:n].sort().values, order[n:].sort().values
    if isinstance(train_set, ImageDataset):
        return _take(train_set, rest), _take(train_set, held)
    return Subset(train_set, rest.tolist()), Subset(train_set, held.tolist())
