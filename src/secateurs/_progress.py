"""Progress for every loop a person waits on: a tqdm bar on a terminal, plain lines elsewhere.

A tqdm bar written to a log file or a CI console is either nothing (tqdm's ``disable=None``
draws only on a terminal) or a wall of carriage returns; a user who redirects the output of
a 24-minute epoch still wants to know it is moving. So off a terminal the same calls print
one line per ``interval_s`` seconds or per tenth of the loop, whichever comes first, after
the loop has run ``quiet_s`` seconds (short loops stay silent, as a bar would flash by).

    bar = progress(total=len(loader), desc="evaluating")
    for batch in loader:
        ...
        bar.update(1)
    bar.close()

Training epochs, evaluation, the latency comparison and BN recalibration go through
:func:`progress` (or :func:`tracked`), so their output looks the same; a new long loop
should too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between two lines off a terminal, and the silence before the first one; module
#: attributes so a test (or a caller that logs to a slow sink) can change them.
LINE_INTERVAL_S = 30.0
QUIET_S = 5.0


def _format_s(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class LineProgress:
    """The non-terminal form: ``desc: 120/400 (30%), 0:42 elapsed, ~1:38 left, loss=0.412``."""

    def __init__(self, total: int | None, desc: str, stream: TextIO, interval_s: float, quiet_s: float) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.interval_s, self.quiet_s = interval_s, quiet_s
        self.n, self.postfix = 0, ""
        self.start = self.last = time.monotonic()
        self.last_tenth = 0
        self.printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.start < self.quiet_s:
            return
        tenth = int(10 * self.n / self.total) if self.total else 0
        if now - self.last >= self.interval_s or tenth > self.last_tenth:
            self._line(now)
            self.last, self.last_tenth = now, tenth

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += f", {_format_s(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            text += f", ~{_format_s(elapsed * (self.total - self.n) / self.n)} left"
        if self.postfix:
            text += f", {self.postfix}"
        print(text, file=self.stream, flush=True)
        self.printed = True

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """A last line only if earlier ones were printed, so the log shows the loop ended."""
        if self.printed and self.total and self.n >= self.total and self.last_tenth < 10:
            self._line(time.monotonic())


class _Silent:
    """For ``enabled=False`` (other DDP ranks, ``progress=False``): the same calls, no output."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress(
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    stream: TextIO | None = None,
    interval_s: float | None = None,
    quiet_s: float | None = None,
) -> Any:
    """A progress reporter with ``update(n)``, ``set_postfix(**values)`` and ``close()``.

    Args:
        total: the number of steps, or None when unknown (no percentage then).
        desc: what is being waited for, e.g. ``"epoch 3/10"`` or ``"evaluating"``.
        enabled: False gives a reporter that prints nothing.
        stream: where to write (default ``sys.stderr``, so that stdout stays the result).
        interval_s, quiet_s: the line form's spacing and initial silence; default
            :data:`LINE_INTERVAL_S` and :data:`QUIET_S`.
    """
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, leave=False, file=stream, dynamic_ncols=True)
    return LineProgress(
        total,
        desc,
        stream,
        LINE_INTERVAL_S if interval_s is None else interval_s,
        QUIET_S if quiet_s is None else quiet_s,
    )


def tracked(items: Iterable, desc: str, total: int | None = None, enabled: bool = True) -> Iterator:
    """Iterate over ``items`` with a progress reporter (``total`` from ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = progress(total=total, desc=desc, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
