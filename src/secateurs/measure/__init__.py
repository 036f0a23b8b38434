"""How big, how much compute, how fast: parameter and MAC counts and latency of a model."""
from .latency import measure_latency
from .macs import MACS_COUNTERS, count_macs
from .params import count_params
from .report import Measurement, measure

__all__ = ["MACS_COUNTERS", "Measurement", "count_macs", "count_params", "measure", "measure_latency"]
