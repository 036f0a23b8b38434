"""Was the machine busy while we timed? The CPU time other processes took, measured.

A latency ratio taken while another process competes for the cores says more about the
scheduler than about the model (the same prune was reported 0.01x to 301x on a loaded
machine). The 1-minute load average is a poor witness for a timing of a few seconds: it
lags by a minute and counts our own threads. So on Linux the check reads ``/proc/stat``
(CPU time of the whole machine) and our own CPU time around the timing window: what is
left is the average number of cores the *other* processes used meanwhile. Elsewhere it
falls back to the load average read before the timing started.

The machine counts as busy when the others used more than the cores we left free
(``cpu_count - threads``) less half a core of slack, and at least a quarter of a core:

    with LoadMonitor(threads=2) as watch:
        ...  # the timing
    if watch.window.busy:
        print(watch.window.reason())
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from types import TracebackType

# Fields of the "cpu" line of /proc/stat that are not idle time: user nice system idle iowait
# irq softirq steal (guest and guest_nice are already inside user and nice).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def cpu_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return sum(int(fields[1 + i]) for i in _BUSY_FIELDS if 1 + i < len(fields)) / ticks


def own_cpu_seconds() -> float:
    """CPU seconds of this process, every thread (torch's intra-op pool included)."""
    t = os.times()
    return t.user + t.system


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


@dataclass(frozen=True)
class LoadWindow:
    """What the rest of the machine did during one timing window.

    Attributes:
        others_cores: average cores used by other processes (from ``/proc/stat``), or the
            load average before the window where ``/proc/stat`` is missing.
        load1: the 1-minute load average at the end of the window (for the record).
        cpu_count: logical cores of the machine.
        threads: the threads our timing used.
        seconds: length of the window.
        source: ``"/proc/stat"`` or ``"loadavg"``.
    """

    others_cores: float
    load1: float | None
    cpu_count: int
    threads: int
    seconds: float
    source: str

    @property
    def free_cores(self) -> int:
        return max(0, self.cpu_count - self.threads)

    @property
    def busy(self) -> bool:
        return self.others_cores > max(self.free_cores - 0.5, 0.25)

    def reason(self) -> str | None:
        """Why the window does not count as quiet, in words; None when it does."""
        if not self.busy:
            return None
        idle = max(0.0, self.free_cores - self.others_cores)
        return (
            f"the machine was busy: other processes used {self.others_cores:.1f} cores on average while we "
            f"timed on {self.threads} thread(s) of {self.cpu_count} cores, leaving {idle:.1f} idle"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "free_cores": self.free_cores, "busy": self.busy}


class LoadMonitor:
    """Context manager measuring the other processes' CPU use over its body; see the module."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.window: LoadWindow | None = None

    def __enter__(self) -> LoadMonitor:
        self._load_before = load_average()
        self._machine, self._own = cpu_busy_seconds(), own_cpu_seconds()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.window = self.stop()

    def stop(self) -> LoadWindow:
        seconds = max(time.monotonic() - self._t0, 1e-9)
        machine, own = cpu_busy_seconds(), own_cpu_seconds()
        if machine is not None and self._machine is not None:
            others = max(0.0, (machine - self._machine) - (own - self._own)) / seconds
            source = "/proc/stat"
        else:
            others, source = (self._load_before or 0.0), "loadavg"
        return LoadWindow(
            round(others, 3), load_average(), os.cpu_count() or 1, self.threads, round(seconds, 3), source
        )
