"""What every benchmark shares: the machine description and the results writer."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from secateurs._atomic import atomic_write
from secateurs.measure import LoadMonitor, LoadWindow

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Enough to tell whether two tables were measured on comparable machines."""
    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def machine_line(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (
        f"{m['cpu']} ({m['cpu_count']} cores, torch threads {m['torch_threads']}, "
        f"{m.get('memory_gib', '?')} GiB){gpu}; torch {m['torch']}, Python {m['python']}; {m['date']}"
    )


def timing_watch() -> LoadMonitor:
    """Watch the rest of the machine while a benchmark times something, with the rule the
    library's latency verdict uses (:mod:`secateurs.measure.load`): ``with timing_watch() as
    w: ...``, then :func:`busy_note` of ``w.window`` for the report."""
    return LoadMonitor(torch.get_num_threads())


def busy_note(window: LoadWindow) -> str | None:
    """A sentence for the report when the timings ran on a busy machine; None when it was quiet."""
    reason = window.reason()
    return (
        None
        if reason is None
        else (
            f"**Timings unreliable**: {reason} (over the {window.seconds:.0f} s of "
            "timing); rerun on an idle machine before quoting them."
        )
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How the report says it was made: ``python benchmarks/SCRIPT`` and its arguments."""
    return f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def speedup_cells(base_ms: dict[str, float] | None, ms: dict[str, float] | None, batches=("1", "64")) -> list[str]:
    """The speed-up columns of a results table: the unpruned model's median latency over this
    model's, per batch size (``"-"`` where either was not measured). ``speedup_cells(base, base)``
    is the unpruned row's ``1.00x``."""
    return [f"{base_ms[b] / ms[b]:.2f}x" if ms and base_ms else "-" for b in batches]


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``results/NAME.json`` and ``results/NAME.md`` (both name the machine and command),
    each atomically: an interrupted benchmark leaves the previous pair, never a truncated file."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    atomic_write(js, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
    atomic_write(md, lambda tmp: tmp.write_text(markdown.rstrip() + "\n"))
    return js, md


def write_report(
    name: str, data: dict[str, Any], title: str, intro: str, sections: Sequence[str], missing: Sequence[str] = ()
) -> str:
    """The markdown report (title, machine, command, intro, sections, runs not in the cache),
    written with ``data`` as ``results/NAME.{md,json}`` and printed."""
    md = "\n\n".join(
        [
            f"# {title}",
            f"Machine: {machine_line(data['machine'])}",
            f"Command: `{data['command']}`",
            intro,
            *sections,
            *([f"Not run (not in the cache): {'; '.join(missing)}."] if missing else []),
        ]
    )
    write_results(name, data, md)
    print(md)
    return md
