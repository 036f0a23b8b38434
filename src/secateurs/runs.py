"""Where the commands' functions lived before :mod:`secateurs.commands`; kept for the code
that still imports them from here (``pipeline/command.py``, ``demo.py`` and the benchmarks).
New code imports :mod:`secateurs.commands`; this module goes once those do."""

from .commands import (
    RUN_FILE,
    TRAIN_FILES,
    build_for_dataset,
    checkpoint_dataset,
    compare_checkpoints,
    evaluate_checkpoint,
    export_checkpoint,
    measure_checkpoint,
    read_run,
    stem_for,
    train_command,
)

__all__ = [
    "RUN_FILE",
    "TRAIN_FILES",
    "build_for_dataset",
    "checkpoint_dataset",
    "compare_checkpoints",
    "evaluate_checkpoint",
    "export_checkpoint",
    "measure_checkpoint",
    "read_run",
    "stem_for",
    "train_command",
]
