"""How big, how much compute, how fast: parameter and MAC counts and latency of a model."""

from .compare import LatencyComparison, compare_latency, default_threads
from .latency import measure_latency
from .load import LoadMonitor, LoadWindow
from .macs import count_macs
from .params import count_params
from .report import Measurement, measure

__all__ = [
    "LatencyComparison",
    "LoadMonitor",
    "LoadWindow",
    "Measurement",
    "compare_latency",
    "count_macs",
    "count_params",
    "default_threads",
    "measure",
    "measure_latency",
]
