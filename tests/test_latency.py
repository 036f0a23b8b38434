"""Interleaved latency comparison: medians, spreads and ratio against models of known duration,
and the verdict on a busy machine, from a faked CPU reader and from real busy processes."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

from secateurs import prune
from secateurs.cli import main
from secateurs.errors import ConfigError
from secateurs.io import save
from secateurs.measure import LoadWindow, compare_latency
from secateurs.measure import latency as latency_module
from secateurs.measure import load as load_module
from secateurs.models import create_model
from secateurs.pipeline import run as run_module

pytestmark = pytest.mark.usefixtures("one_thread")


class Sleeper(nn.Module):
    """A model whose forward takes a known time: sleeping uses no CPU, so its duration is the
    independent reference for the medians and their ratio, whatever else runs."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.seconds = ms / 1e3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class Clock:
    """Stands in for ``time`` in the latency module: only :class:`Ticker` moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Ticker(nn.Module):
    """A model whose every call takes exactly ``ms`` on the fake clock: no noise at all."""

    def __init__(self, clock: Clock, ms: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, ms / 1e3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.seconds
        return x


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(latency_module, "time", fake)
    return fake


def _quiet(monkeypatch) -> None:
    """The other processes used no CPU: the machine's busy time is exactly our own."""
    monkeypatch.setattr(load_module, "cpu_busy_seconds", load_module.own_cpu_seconds)


def _loaded(monkeypatch) -> None:
    """The other processes kept every core busy."""
    cores = os.cpu_count() or 1
    monkeypatch.setattr(
        load_module, "cpu_busy_seconds", lambda: load_module.own_cpu_seconds() + cores * time.monotonic()
    )


def test_medians_spreads_and_ratio_match_known_durations(monkeypatch):
    _quiet(monkeypatch)
    c = compare_latency(
        Sleeper(8),
        Sleeper(2),
        (3, 4, 4),
        batch_sizes=(1, 2),
        threads=1,
        budget_s=4,
        rel_ci=0.1,
        warmup=1,
        progress=False,
    )
    assert sorted(c.batches) == [1, 2] and c.threads == 1
    for b in c.batches.values():
        # sleep() returns no earlier than asked and wakes up within a few ms on a loaded machine
        assert 8 <= b.a.median_ms < 14 and 2 <= b.b.median_ms < 8
        assert b.a.p10_ms <= b.a.p25_ms <= b.a.median_ms <= b.a.p75_ms <= b.a.p90_ms
        assert b.b.p10_ms <= b.b.median_ms <= b.b.p90_ms
        assert b.a.samples == b.b.samples >= 15
        assert 8 / 8 < b.ratio <= 4.05 and b.ratio_ci[0] <= b.ratio <= b.ratio_ci[1]
    d = json.loads(json.dumps(c.to_dict()))
    assert d["threads"] == 1 and set(d["batches"]) == {"1", "2"} and d["load"]["busy"] is False


def _ticker_comparison(clock):
    """A 4 ms model against a 2 ms one on the fake clock, batch 1: a comparison whose medians
    settle, so that only the machine's load decides whether it is reliable."""
    return compare_latency(
        Ticker(clock, 4),
        Ticker(clock, 2),
        (3, 4, 4),
        batch_sizes=(1,),
        threads=1,
        budget_s=10,
        warmup=1,
        progress=False,
    )


def test_a_quiet_settled_comparison_is_reliable_and_printed_plainly(monkeypatch, clock):
    _quiet(monkeypatch)
    c = _ticker_comparison(clock)
    b = c.batches[1]
    assert b.stable and b.a.samples == 15  # it stopped as soon as the medians settled
    assert b.a.median_ms == pytest.approx(4) and b.b.median_ms == pytest.approx(2) and b.ratio == pytest.approx(2)
    assert c.reliable, c.reasons
    assert "unreliable" not in c.summary().lower() and "1 thread(s)" in c.summary()


def test_a_busy_reader_makes_the_same_comparison_unreliable(monkeypatch, clock):
    _loaded(monkeypatch)
    c = _ticker_comparison(clock)
    assert not c.reliable and c.load.busy and c.batches[1].stable
    assert any("the machine was busy" in r for r in c.reasons)
    text = c.summary()
    assert "-- unreliable" in text and "UNRELIABLE: " in text


@pytest.mark.parametrize(
    "others, cores, threads, busy",
    [
        (0.1, 2, 1, False),
        (0.7, 2, 1, True),
        (0.2, 2, 2, False),
        (0.3, 2, 2, True),
        (5.0, 8, 2, False),
        (5.7, 8, 2, True),
    ],
)
def test_busy_rule_by_hand(others, cores, threads, busy):
    """Busy when the others leave less than half of our free cores idle (at least 0.25 core)."""
    assert LoadWindow(others, None, cores, threads, 1.0, "/proc/stat").busy is busy


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ConfigError, match="budget_s=0"):
        compare_latency(Sleeper(1), Sleeper(1), (3, 4, 4), budget_s=0)
    with pytest.raises(ConfigError, match="threads=0"):
        compare_latency(Sleeper(1), Sleeper(1), (3, 4, 4), threads=0)


def _spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


@pytest.mark.skipif(load_module.cpu_busy_seconds() is None, reason="needs /proc/stat")
def test_prune_summary_flags_the_speedup_on_a_really_busy_machine(monkeypatch):
    """One spinning process per core beside the prune: its summary must not print the speed-up bare."""
    monkeypatch.setattr(run_module, "compare_latency", functools.partial(compare_latency, budget_s=3))
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=4, in_channels=3)
    procs = _spinners(os.cpu_count() or 1)
    try:
        time.sleep(0.5)  # let them start
        _, result = prune(
            model, "l1", macs_reduction=0.3, finetune="none", input_shape=(3, 32, 32), latency=True, device="cpu"
        )
    finally:
        _stop(procs)
    assert result.latency["load"]["busy"] is True and result.latency["reliable"] is False
    text = result.summary()
    assert "speed-up" in text and "-- unreliable" in text and "the machine was busy" in text
    assert set(result.before["latency_ms"]) == set(result.after["latency_ms"]) == {"1", "64"}


def test_measure_compare_cli(tmp_path, monkeypatch, capsys):
    _quiet(monkeypatch)
    torch.manual_seed(0)
    big = create_model("test_resnet", num_classes=4, in_channels=3)
    small, _ = prune(big, "l1", macs_reduction=0.5, finetune="none", input_shape=(3, 32, 32), latency=False)
    a, b = (
        save(big, tmp_path / "a.safetensors", {"input_shape": [3, 32, 32]}),
        save(small, tmp_path / "b.safetensors", {"input_shape": [3, 32, 32]}),
    )
    capsys.readouterr()
    assert (
        main(
            ["measure", "--compare", str(a), str(b), "--batch-sizes", "1", "--threads", "1", "--budget", "2", "--json"]
        )
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["checkpoints"] == [str(a), str(b)] and d["threads"] == 1 and list(d["batches"]) == ["1"]
    one = d["batches"]["1"]
    assert one["a"]["samples"] == one["b"]["samples"] >= 5 and isinstance(d["reliable"], bool)
    assert main(["measure", "--compare", str(a), str(b), "--from", str(a)]) == 2
    assert "not both" in capsys.readouterr().err
