"""The benchmark matrix (issue 12's protocol): every (model, variant, target, seed) cell is
one prune + fine-tune run from the same baseline with the same fine-tuning budget, written
as one small JSON as soon as it finishes; the report is rebuilt from those files only.

    .venv/bin/python benchmarks/matrix.py --profile converged --jobs 2          # CPU, fills over sittings
    .venv/bin/python benchmarks/matrix.py --profile converged --models resnet20 --budgets 50 --seeds 0
    .venv/bin/python benchmarks/matrix.py --profile gpu                         # one large GPU
    .venv/bin/python benchmarks/matrix.py --profile converged --list            # what is done, what is not
    .venv/bin/python benchmarks/report.py --profile converged                   # the report alone

A finished cell is never run again (delete its JSON to rerun it), so an interrupted matrix
loses at most the runs in flight. A cell in flight holds the lock of ``CELL.running`` beside
the results: another invocation skips it while the lock is held, and a killed run's lock goes
with its process. Cells of a model whose baseline is not finished are skipped
with a line naming it (``baselines.py`` finishes it); the others run. ``--jobs K`` runs K cells at once, each in its own process
(with one torch thread on the CPU; sharing the GPU in the gpu profile). Results go to
``results/matrix/PROFILE/``, the report to ``results/REPORT.md`` (``REPORT_PROFILE.md`` for the
other profiles).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _matrix_config import backfill, outdated, relabel, write_record
from _matrix_spec import PROFILES, Cell, Profile, cells, select
from baselines import CACHE, FIXED_ROOTS, convergence, ensure_baseline, run_dir
from baselines import PROFILES as BASELINES

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "matrix"


def baseline_facts(profile: Profile, model: str, cache: Path) -> dict[str, Any]:
    """What every cell records of its starting point, read from the finished baseline run."""
    from secateurs import count_macs, count_params, load, read_meta

    ckpt = ensure_baseline(model, profile.baselines, cache, progress=False, train=False)
    history = [json.loads(line) for line in (ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    net, shape = load(ckpt), tuple(read_meta(ckpt)["input_shape"])
    spec = {b.model: b for b in BASELINES[profile.baselines]}[model]
    return {
        "path": str(ckpt),
        "profile": profile.baselines,
        "epochs": len(history),
        "top1": history[-1].get("test_top1"),
        "params": count_params(net),
        "macs": count_macs(net, shape),
        "dataset": spec.dataset,
        "dataset_options": spec.dataset_options,
        **convergence(history),
    }


def _one_thread_env() -> dict[str, str]:
    """One torch CPU thread per process: K concurrent runs on K cores do not fight over them
    (on the GPU too, where the CPU only feeds batches and 16 processes share 16 cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_jobs(argvs: list[list[str]], jobs: int, env: dict[str, str], label: str) -> list[str]:
    """Run each argv as a process, ``jobs`` at a time; the labels of those that failed."""
    pending, running, failed = list(argvs), [], []
    while pending or running:
        while pending and len(running) < jobs:
            argv = pending.pop(0)
            running.append((argv, subprocess.Popen(argv, env=env), time.perf_counter()))
        time.sleep(0.2)
        for item in list(running):
            argv, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            name = argv[-1]
            ok = proc.returncode == 0
            print(
                f"[{label}] {name}: {'done' if ok else f'FAILED (exit {proc.returncode})'} "
                f"in {time.perf_counter() - t0:.0f}s; {len(pending)} waiting, {len(running)} running",
                file=sys.stderr,
                flush=True,
            )
            if not ok:
                failed.append(name)
    return failed


def unfinished_baselines(profile: Profile, models: list[str], cache: Path) -> dict[str, tuple[int, int]]:
    """``model -> (epochs done, epochs planned)`` for each of ``models`` whose baseline is not finished."""
    out = {}
    for model in models:
        metrics = run_dir(model, profile.baselines, cache) / "metrics.jsonl"
        spec = {b.model: b for b in BASELINES[profile.baselines]}[model]
        done = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if done < spec.epochs:
            out[model] = (done, spec.epochs)
    return out


def _train_baselines(profile: Profile, models: list[str], cache: Path, jobs: int, env: dict[str, str]) -> None:
    """Train the profile's missing baselines, ``jobs`` at a time. Committed ones (the converged
    baselines) are left to baselines.py: hours of training, possibly running already, are never
    started behind the user's back (their cells are then skipped)."""
    todo = sorted(unfinished_baselines(profile, models, cache))
    if not todo or profile.baselines in FIXED_ROOTS:
        return
    script = str(Path(__file__).resolve())  # ensure_baseline only: no tables written, no timing
    argvs = [
        [sys.executable, script, "--profile", profile.name, "--cache", str(cache), "--train-baseline", m] for m in todo
    ]
    failed = run_jobs(argvs, jobs, env, "baseline")
    if failed:
        raise SystemExit(f"baseline training failed for {', '.join(failed)}; see the log above")


class CellBusy(Exception):
    """Another process holds the cell's claim: the cell is running elsewhere."""


def running_pid(claim: Path) -> int | None:
    """The process holding ``claim`` (``CELL.running``) locked, or None: no claim, or nobody
    holds its lock (a finished or killed run leaves the file, never the lock)."""
    try:
        fd = os.open(claim, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


@contextmanager
def claimed(claim: Path) -> Iterator[None]:
    """Hold ``claim``'s exclusive lock (``flock``) while the cell runs; raise :class:`CellBusy`
    when another process holds it. The kernel drops the lock when the process ends, however it
    ends, so a killed run's claim is free again with nothing to clean up."""
    claim.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(claim, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CellBusy(claim.stem) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for --list; the lock is the claim
        yield
    finally:
        os.close(fd)  # releases the lock


def _run_one(args: argparse.Namespace, profile: Profile) -> int:
    """``--run-cell NAME``: the worker process of one cell."""
    from _matrix_run import run_cell

    found = [c for c in cells(profile) if c.name == args.run_cell]
    if not found:
        raise SystemExit(f"--run-cell {args.run_cell!r} is not a cell of profile {profile.name!r} (see --list)")
    cell = found[0]
    out = args.results / profile.name / f"{cell.name}.json"
    try:
        with claimed(out.with_suffix(".running")):
            if out.exists():  # finished by another invocation since this one listed it
                print(f"{cell.name}: already done", file=sys.stderr)
                return 0
            facts = baseline_facts(profile, cell.model, args.cache)
            result = run_cell(cell, profile, Path(facts["path"]), facts, out)
    except CellBusy:
        print(f"{cell.name}: running elsewhere, skipped", file=sys.stderr)
        return 0
    print(
        f"{cell.name}: top-1 {result.top1}, cut {result.top1_cut_raw} -> {result.top1_cut} (recalibrated), "
        f"{100 * result.achieved:.1f}% reduction, {result.wall_s:.0f}s",
        file=sys.stderr,
    )
    return 0


def _status(folder: Path, name: str) -> str:
    """``done``, ``stale`` (run under an older definition of its variant, or of a default it
    resolves to: ``_matrix_config.outdated``; delete it to rerun),
    ``running (pid N)`` or ``not run``: what a cell's files say now."""
    result = folder / f"{name}.json"
    if result.exists():
        return "stale" if outdated(json.loads(result.read_text())) else "done"
    pid = running_pid(folder / f"{name}.running")
    return "not run" if pid is None else f"running (pid {pid})"


def _backfill(folder: Path, chosen: list[Cell]) -> int:
    """Write :func:`backfill`'s resolution into each chosen result that recorded none."""
    written = 0
    for cell in chosen:
        path = folder / f"{cell.name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        now = backfill(record)
        if now is not None:
            record["resolved"] = now
            write_record(path, record)
            written += 1
    print(f"backfilled {written} results in {folder}", file=sys.stderr)
    return 0


def _relabel(folder: Path, chosen: list[Cell], variant: str) -> int:
    """Move each chosen result to ``variant``'s cell after :func:`relabel`'s check (rewritten in
    place when it is the same cell). Every result is checked before any is written, so a refusal
    moves nothing; a target cell that holds another result or has a run in flight is named and
    left alone."""
    moves: list[tuple[Path, Path, dict[str, Any]]] = []
    busy: list[str] = []
    for cell in chosen:
        path = folder / f"{cell.name}.json"
        if not path.exists():
            continue
        record = relabel(json.loads(path.read_text()), variant)
        target = folder / f"{record['cell']}.json"
        if (target.exists() and target != path) or running_pid(folder / f"{record['cell']}.running"):
            busy.append(target.stem)
        else:
            moves.append((path, target, record))
    for path, target, record in moves:
        write_record(target, record)
        if target != path:
            path.unlink()
    print(f"relabelled {len(moves)} results as {variant}", file=sys.stderr)
    if busy:
        print(f"not moved, the cell has a result already or a run in flight: {' '.join(busy)}", file=sys.stderr)
    return 1 if busy else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="converged")
    p.add_argument("--cells", nargs="+", help="cell names or shell patterns, e.g. 'resnet20__l1__*'")
    p.add_argument("--models", nargs="+")
    p.add_argument("--methods", nargs="+", help="variants, e.g. l1 tp-magnitude hnsi-single-stage")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--budgets", nargs="+", help="targets: 50 (= macs50), macs75, params15, own")
    p.add_argument("--jobs", type=int, help="concurrent runs (default: the profile's)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results root (PROFILE/ below it)")
    p.add_argument("--report", type=Path, help="default: results/REPORT.md (converged), REPORT_PROFILE.md")
    p.add_argument("--cache", type=Path, default=CACHE, help="where baselines not committed are trained")
    p.add_argument("--list", action="store_true", help="list the selected cells, done or not, and stop")
    p.add_argument("--no-report", action="store_true")
    once = p.add_mutually_exclusive_group()
    once.add_argument(
        "--backfill",
        action="store_true",
        help="record today's resolution in the selected results that hold none, and stop "
        "(only while their method defaults are today's: before changing one)",
    )
    once.add_argument(
        "--relabel",
        metavar="VARIANT",
        help="move the selected results to VARIANT's cells (same model, target, seed), each only if "
        "it ran exactly what VARIANT resolves to today, and stop",
    )
    p.add_argument("--run-cell", help=argparse.SUPPRESS)
    p.add_argument("--train-baseline", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    if args.run_cell:
        return _run_one(args, profile)
    if args.train_baseline:
        ensure_baseline(args.train_baseline, profile.baselines, args.cache, progress=False)
        return 0
    chosen = select(list(cells(profile)), args.cells, args.models, args.methods, args.seeds, args.budgets)
    folder = args.results / profile.name
    try:  # a refusal names the result and the way out (relabel then moves nothing; backfill keeps those done)
        if args.backfill:
            return _backfill(folder, chosen)
        if args.relabel:
            return _relabel(folder, chosen, args.relabel)
    except ValueError as e:
        raise SystemExit(f"matrix.py: {e}") from None
    status = {c.name: _status(folder, c.name) for c in chosen}
    todo = [c for c in chosen if status[c.name] == "not run"]
    count = Counter(v.split(" (")[0] for v in status.values())
    if args.list:
        for c in chosen:
            print(f"{status[c.name]:<7}  {c.name}")
        print(
            f"{count['done']} of {len(chosen)} selected cells done, {count['running']} running, {count['stale']} stale"
        )
        return 0
    if profile.device == "cuda" and todo:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                f"profile {profile.name!r} runs on a CUDA GPU, and torch {torch.__version__} sees none; "
                "on the CPU use --profile converged (or tiny, to try the harness)"
            )
    jobs = args.jobs or profile.jobs
    env = _one_thread_env()
    print(
        f"profile {profile.name}: {len(chosen)} cells selected, {count['done']} done, "
        f"{count['running']} running elsewhere, {count['stale']} stale (delete them to rerun), "
        f"{len(todo)} to run, {jobs} at a time",
        file=sys.stderr,
    )
    failed: list[str] = []
    if todo:
        models = sorted({c.model for c in todo})
        _train_baselines(profile, models, args.cache, jobs, env)
        waiting = unfinished_baselines(profile, models, args.cache)
        for model, (done, total) in waiting.items():
            skipped = sum(c.model == model for c in todo)
            print(
                f"skipping {skipped} {model} cells: its {profile.baselines} baseline has {done} of {total} epochs "
                f"(finish it: python benchmarks/baselines.py --profile {profile.baselines} --models {model})",
                file=sys.stderr,
            )
        todo = [c for c in todo if c.model not in waiting]
        for model in sorted({c.model for c in todo}):  # a broken baseline stops here, not in every worker
            baseline_facts(profile, model, args.cache)
        script = str(Path(__file__).resolve())
        common = ["--profile", profile.name, "--results", str(args.results), "--cache", str(args.cache)]
        failed = run_jobs([[sys.executable, script, *common, "--run-cell", c.name] for c in todo], jobs, env, "cell")
    if not args.no_report:
        from report import build_report, default_report

        report = args.report or default_report(profile.name)
        build_report(profile, args.results, report)
        print(f"report: {report}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} cells failed (their logs are above; rerun to retry): {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
