"""Training, fine-tuning and evaluation (single process or torchrun/DDP)."""

from .config import TrainConfig
from .distributed import GlobalBatchNorm2d, dist_info, set_global_batchnorm
from .evaluate import EvalResult, evaluate
from .recalibrate import RecalibrationResult, recalibrate_bn
from .schedule import SCHEDULES
from .trainer import METRICS_FILE, MODEL_FILE, STATE_FILE, Objective, TrainResult, cross_entropy, model_meta, train

__all__ = [
    "EvalResult",
    "GlobalBatchNorm2d",
    "METRICS_FILE",
    "MODEL_FILE",
    "Objective",
    "RecalibrationResult",
    "SCHEDULES",
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "cross_entropy",
    "dist_info",
    "evaluate",
    "model_meta",
    "recalibrate_bn",
    "set_global_batchnorm",
    "train",
]
