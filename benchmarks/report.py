"""REPORT.md, rebuilt from the matrix's result files only (nothing is rerun or reopened):
per model and target, accuracy mean ± std over seeds right after the cut (before and after
BN recalibration) and after fine-tuning, params, MACs, b64 speed-up, the difference from
``l1`` (``l1-noft`` where no ``l1`` ran) with its significance; a plot of accuracy against MACs reduction; the papers' claims.

    .venv/bin/python benchmarks/report.py --profile converged

A cell of the profile with no result file is shown as "not run", never filled in. Beside the
markdown, ``REPORT.json`` holds the same statistics for programs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from _common import machine_line, markdown_table
from _matrix_auto import auto_rows
from _matrix_choice import HEADERS as CHOICE_HEADERS
from _matrix_choice import choice_rows
from _matrix_claims import Stat, difference, pair_claim_rows, probability_claim_rows
from _matrix_config import outdated
from _matrix_spec import PROFILES, VARIANTS, Profile, cell_name, cells
from _side_results import side_results

from secateurs._atomic import atomic_write

HERE = Path(__file__).resolve().parent
HEADERS = [
    "variant",
    "seeds",
    "reduction (%)",
    "params (M)",
    "MACs (M)",
    "top-1 cut, raw (%)",
    "top-1 cut, BN recal. (%)",
    "top-1 final (%)",
    "vs reference",
    "b64 speed-up",
    "FT epochs",
]


def default_report(profile: str) -> Path:
    """REPORT.md for the CPU protocol; the other profiles' reports sit beside it."""
    return HERE / "results" / ("REPORT.md" if profile == "converged" else f"REPORT_{profile}.md")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (a report names no outside file)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return path.name


def load_results(folder: Path, set_aside: list[str] | None = None) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """``(model, target, variant)`` -> the records of its seeds (sorted by seed). Records of
    an older definition of their variant, or of a default it resolves to, are left out (their cell names go to ``set_aside``):
    averaging them with current runs would mix two variants under one name."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        if outdated(r):
            if set_aside is not None:
                set_aside.append(r["cell"])
            continue
        groups[(r["model"], r["target"], r["variant"])].append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def _stat_text(runs: list[dict], key: str, scale: float = 1.0, digits: int = 2) -> str:
    s = Stat.of([None if r.get(key) is None else r[key] * scale for r in runs])
    return "n/a" if s is None else s.text(digits)


def _row(variant: str, runs: list[dict], reference: list[dict] | None) -> tuple[list[str], dict[str, Any]]:
    """A table row and its figures for REPORT.json."""
    top1, ref = Stat.of([r["top1"] for r in runs]), Stat.of([r["top1"] for r in reference or []])
    diff = difference(top1, ref) if top1 and ref and reference is not runs else None
    row = [
        variant,
        str(len(runs)),
        _stat_text(runs, "achieved", 100, 1),
        _stat_text(runs, "params", 1e-6, 3),
        _stat_text(runs, "macs", 1e-6, 1),
        _stat_text(runs, "top1_cut_raw"),
        _stat_text(runs, "top1_cut"),
        _stat_text(runs, "top1"),
        "-" if diff is None else diff.text(),
        _stat_text(runs, "speedup_b64"),
        str(runs[0]["finetune_epochs"]),
    ]
    figures = {
        "seeds": [r["seed"] for r in runs],
        "top1": top1.__dict__ if top1 else None,
        "diff_vs_reference": None if diff is None else diff.__dict__,
    }
    return row, figures


def model_tables(
    profile: Profile, groups: dict, set_aside: Collection[str] = ()
) -> tuple[list[str], dict[str, Any], list[str]]:
    """The markdown sections per (model, target), their figures, and the cells not run (a
    cell whose result is ``set_aside`` is listed there instead: it will not run again)."""
    order: dict[tuple[str, str], list[str]] = {}
    planned: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for c in cells(profile):
        order.setdefault((c.model, c.target), [])
        if c.variant not in order[(c.model, c.target)]:
            order[(c.model, c.target)].append(c.variant)
        planned[(c.model, c.target, c.variant)].append(c.seed)
    for m, t, v in groups:  # results of cells no longer in the profile are still shown
        order.setdefault((m, t), [])
        if v not in order[(m, t)]:
            order[(m, t)].append(v)
    sections, figures, missing = [], {}, []
    for (model, target), variants in order.items():
        runs_of = {v: groups.get((model, target, v), []) for v in variants}
        ref_name = next((v for v in ("l1", "l1-noft") if runs_of.get(v)), None)
        reference = runs_of.get(ref_name) if ref_name else None
        any_run = next((rs[0] for rs in runs_of.values() if rs), None)
        rows = []
        if any_run:
            b = any_run["baseline"]
            rows.append(
                [
                    "(unpruned)",
                    "-",
                    "-",
                    f"{b['params'] / 1e6:.3f}",
                    f"{b['macs'] / 1e6:.1f}",
                    "-",
                    "-",
                    f"{b['top1']:.2f}",
                    "-",
                    "1.00",
                    "-",
                ]
            )
        for v in variants:
            done = {r["seed"] for r in runs_of[v]}
            missing += [
                f"{model} {v} {target} seed {s}"
                for s in planned.get((model, target, v), [])
                if s not in done and cell_name(model, v, target, s) not in set_aside
            ]
            if not runs_of[v]:
                rows.append([v, "0", "not run", *["-"] * (len(HEADERS) - 3)])
                continue
            row, fig = _row(v, runs_of[v], reference)
            rows.append(row)
            figures[f"{model}/{target}/{v}"] = fig
        command = f"python benchmarks/matrix.py --profile {profile.name} --models {model} --budgets {target}"
        sections.append(
            f"### {model}, {target}\n\nCommand: `{command}`; reference for the difference: "
            f"`{ref_name or 'none run'}`\n\n" + markdown_table(HEADERS, rows)
        )
    return sections, figures, missing


def plot(groups: dict, path: Path) -> str:
    """Final top-1 against MACs reduction (mean ± std over seeds), one panel per model; the
    markdown that shows it, or says why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Plot not drawn: matplotlib is not installed (`pip install -e '.[bench]'`)."
    models = sorted({m for m, t, _ in groups if t.startswith("macs")})
    if not models:
        return "Plot not drawn: no MACs-target run yet."
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    colours = plt.get_cmap("tab20").colors  # more variants than the default cycle's 10 colours
    for ax, model in zip(axes[0], models):
        for i, v in enumerate(sorted({v for m, t, v in groups if m == model and t.startswith("macs")})):
            pts = sorted(
                (
                    (Stat.of([100 * r["achieved"] for r in rs]), y)
                    for (m, t, vv), rs in groups.items()
                    if m == model and vv == v and t.startswith("macs")
                    if (y := Stat.of([r["top1"] for r in rs])) is not None  # None: no run recorded a final top-1
                ),
                key=lambda p: p[0].mean,
            )
            if not pts:
                continue
            ax.errorbar(
                [x.mean for x, _ in pts],
                [y.mean for _, y in pts],
                yerr=[y.std or 0 for _, y in pts],
                marker="osD^v<>"[i % 7],
                color=colours[i % len(colours)],
                capsize=3,
                label=v,
            )
        ax.set(
            title=model, xlabel="MACs reduction (%; kernel-sparse for hnsi)", ylabel="test top-1 after fine-tuning (%)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return f"![top-1 against MACs reduction]({path.name})"


def _header(profile: Profile, groups: dict, folder: Path) -> list[str]:
    runs = [r for rs in groups.values() for r in rs]
    machines = sorted({machine_line(r["machine"]).rsplit(";", 1)[0] for r in runs})
    cpu_h, wall_h = sum(r["cpu_s"] for r in runs) / 3600, sum(r["wall_s"] for r in runs) / 3600
    seeds = sorted({r["seed"] for r in runs})
    recal = sorted({str(r["bn_recalibration"]) for r in runs})
    layouts = Counter("channels-last" if r["budget"].get("channels_last") else "NCHW" for r in runs)
    bases = {r["model"]: r["baseline"] for r in runs}
    conv = {None: "not enough epochs to tell", True: "converged", False: "NOT converged"}
    base_text = "; ".join(
        f"{m}: {b.get('epochs', '?')} epochs, top-1 {b['top1']:.2f}%, "
        f"{conv[b.get('converged')]}"
        + ("" if b.get("last_gain") is None else f" (last 3 epochs {b['last_gain']:+.2f} point/epoch)")
        for m, b in sorted(bases.items())
    )
    variants = sorted({r["variant"] for r in runs})
    return [
        f"Profile `{profile.name}`: {profile.summary}. {len(runs)} runs in "
        f"`{_shown(folder)}/`; seeds {seeds or 'none yet'}.",
        f"Fine-tuning, the same for every variant (a variant's share is in its FT epochs): "
        f"{profile.budget.describe()}. BN recalibration batches recorded: {', '.join(recal) or '-'}. "
        f"Memory layout of the fine-tuning (the same arithmetic in another order): "
        f"{', '.join(f'{k} in {n} run' + 's' * (n != 1) for k, n in sorted(layouts.items())) or '-'}.",
        f"Baselines: {base_text or 'none yet'}.",
        f"Total CPU time of the runs: {cpu_h:.2f} h (wall, summed over runs: {wall_h:.2f} h).",
        "Machines: " + ("; ".join(machines) if machines else "none yet"),
        "Variants: " + "; ".join(f"`{v}`: {VARIANTS[v].summary}" for v in variants if v in VARIANTS),
        "Columns: mean ± std over seeds (sample std). *raw*: right after the last cut, before BN "
        "recalibration; *BN recal.*: after it (n/a: not recorded). *final*: after fine-tuning (after the cut "
        "for FT epochs 0). *vs reference*: difference of the final means; `*` marks it significant (larger than "
        "twice the combined standard error, shown as 2SE, with at least 3 seeds on each side). Reduction: of the target's metric (kernel-sparse "
        "MACs for hnsi; params for a method's own threshold, `own`). Speed-up: b64 latency of the baseline "
        "over the pruned model, timed alternately in the same run.",
    ]


def build_report(profile: Profile, results: Path, out: Path) -> str:
    """Write ``out`` (markdown), its plot and ``out``.json from ``results/PROFILE/*.json``."""
    set_aside: list[str] = []
    groups = load_results(results / profile.name, set_aside)
    sections, figures, missing = model_tables(profile, groups, set_aside)
    planned = {(c.model, c.target, c.variant) for c in cells(profile)}
    claims = pair_claim_rows(groups, planned) + probability_claim_rows(groups, planned)
    claim_md = markdown_table(["paper", "claim", "where", "our numbers (top-1 %)", "status"], claims)
    picture = plot(groups, out.parent / f"matrix_{profile.name}.png")
    auto, auto_summary = auto_rows(groups)
    choice, choice_summary = choice_rows(groups)
    auto_head = ["model", "target", "seed", "picked (held-out top-1)", "best after FT (top-1)", "same?"]
    auto_md = markdown_table([*auto_head, "selection s", "auto final top-1"], auto) if auto else ""
    md = "\n\n".join(
        [
            f"# Which pruning method? The matrix, profile `{profile.name}`",
            *_header(profile, groups, results / profile.name),
            f"Rebuild this report: `python benchmarks/report.py --profile {profile.name}`; fill the matrix: "
            f"`python benchmarks/matrix.py --profile {profile.name}`.",
            "## Which method?",
            "Among the variants fine-tuned with the whole budget (`_matrix_choice.py`). " + choice_summary,
            markdown_table(CHOICE_HEADERS, choice) if choice else "No fine-tuned run yet.",
            "## Claims",
            "Status from the runs above: *met* / *not met* when the difference is significant, "
            "*not significant* when it is within twice the combined standard error, *too few seeds* when a "
            "side has fewer than 3 (no test is made; 2SE is still shown from 2), *not run yet* when a side has "
            "no run. With 3 seeds a side, twice the combined standard error is a lenient test: about an 82-88% "
            "two-sided level under Welch's t (2 to 4 degrees of freedom), not 95%; a side whose seeds agree to "
            "the test set's 0.01-point resolution sits at the lenient end (`_matrix_claims.py`). mlft's row "
            "also needs less fine-tuning wall time than tft at E epochs: *not met (wall time)* otherwise.",
            claim_md,
            "## auto's pick",
            "`auto` chooses before fine-tuning, on held-out training samples; its pick is checked against the "
            "finals of its candidates' own one-round runs on the same seed: *no* once any of them ends above the "
            "pick, *yes* only when every candidate's run is there (`_matrix_auto.py`). " + auto_summary,
            auto_md,
            "## Accuracy against MACs reduction",
            picture,
            "## Tables",
            *sections,
            "## Not run",
            ("; ".join(missing) + ".") if missing else "Every cell of the profile has a result.",
            *(
                [
                    "Set aside (run under an older definition of their variant or of a method default; delete them to rerun): "
                    + ", ".join(f"`{c}`" for c in set_aside)
                    + "."
                ]
                if set_aside
                else []
            ),
            *(["## Beside the matrix", "\n".join(side)] if (side := side_results(out.parent)) else []),
        ]
    )
    atomic_write(out, lambda tmp: tmp.write_text(md + "\n"))
    data = {
        "profile": profile.name,
        "figures": figures,
        "choice": choice,
        "claims": claims,
        "auto": auto,
        "missing": missing,
        "set_aside": set_aside,
    }
    atomic_write(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="converged")
    p.add_argument("--results", type=Path, default=HERE / "results" / "matrix")
    p.add_argument("--report", type=Path, help="default: results/REPORT.md (converged), REPORT_PROFILE.md")
    args = p.parse_args(argv)
    report = args.report or default_report(args.profile)
    build_report(PROFILES[args.profile], args.results, report)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
