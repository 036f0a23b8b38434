"""The ``secateurs`` commands, one module each: what the command does as a function that
benchmarks and tests call too, its flags, and its examples.

    train.py     train_command, read_run            secateurs train
    evaluate.py  evaluate_checkpoint                secateurs eval
    measure.py   measure_checkpoint, compare_...    secateurs measure [--compare A B]
    export.py    export_checkpoint                  secateurs export
    prune.py     prune_options (the flags)          secateurs prune (the run directory: prune_run.py)
    report.py                                       secateurs report
    listings.py                                     secateurs methods | models | datasets
    demo.py                                         secateurs demo (the run: secateurs/demo.py)

Shared: ``_checkpoint`` (input shape, dataset of a checkpoint), ``_args`` (flags several
commands take, the help format), ``_flags`` (flags generated from a config dataclass),
``_command`` (:class:`Command`). :mod:`secateurs.cli` puts them under one parser.
"""

from ._checkpoint import checkpoint_dataset, input_shape
from ._command import Command
from .evaluate import evaluate_checkpoint
from .export import export_checkpoint
from .measure import compare_checkpoints, measure_checkpoint
from .train import RUN_FILE, TRAIN_FILES, build_for_dataset, read_run, stem_for, train_command

__all__ = [
    "RUN_FILE",
    "TRAIN_FILES",
    "Command",
    "build_for_dataset",
    "checkpoint_dataset",
    "compare_checkpoints",
    "evaluate_checkpoint",
    "export_checkpoint",
    "input_shape",
    "measure_checkpoint",
    "read_run",
    "stem_for",
    "train_command",
]
