"""docs/cli.md, rendered from the parser and the config dataclasses themselves, so the page
cannot drift from what ``secateurs --help`` says (tests/test_docs.py compares them).

    python -m secateurs._clidoc > docs/cli.md
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

HEADER = """# The command line

Every command, its flags with their defaults and choices, the keys of a prune recipe, and
what a run directory holds. This page is generated from the parser
(`python -m secateurs._clidoc > docs/cli.md`); `secateurs COMMAND --help` prints the same.
"""

RUN_DIRECTORY = """## What a run directory holds

A `secateurs train --out DIR` run:

| file | what it is |
|---|---|
| `model.safetensors` | the trained model (weights, and the architecture as data: no pickle) |
| `state.safetensors` | optimizer, scheduler, RNG and epoch: what `--resume` continues from |
| `metrics.jsonl` | one line per epoch: losses, test top-1, epoch time |
| `run.json` | the command's configuration |

A `secateurs prune --out DIR` run:

| file | what it is |
|---|---|
| `model.safetensors` | the pruned model; it loads like any other checkpoint (`eval`, `measure`, `export`) |
| `metrics.json` | before/after params, MACs, top-1 and latency, and one record per round (what was removed, top-1 right after the cut, after BN recalibration, after fine-tuning) |
| `config.json` | the resolved configuration; `--resume` refuses a different one |
| `report.md`, `*.png` | the readable report and its plots (`secateurs report DIR` rebuilds them) |
| `progress.safetensors` | the state after every cut and round, for `--resume` |
| `finetune-<round>/` | each round's fine-tuning run (a train run directory) |
| `log.txt` | the run's log |
"""


def _cell(text: str | None) -> str:
    return " ".join((text or "").replace("|", "\\|").split()).replace("%%", "%")


def _flags(action: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        names += " {" + ", ".join(map(str, action.choices)) + "}"
    return names


def _command(name: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [
        f"## `secateurs {name}`",
        "",
        _cell(parser.description),
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        "| flag | what it does (default, choices) |",
        "|---|---|",
    ]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        help_text = (action.help or "") % {"default": action.default} if action.help else ""
        lines.append(f"| {_flags(action)} | {_cell(help_text)} |")
    if parser.epilog:
        lines += ["", "```text", parser.epilog.strip(), "```"]
    return lines + [""]


def _fields(cls: type) -> list[str]:
    lines = ["| key | default |", "|---|---|"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        lines.append(f"| `{f.name}` | `{default}` |")
    return lines


def render() -> str:
    """The whole page."""
    from .cli import build_parser
    from .pipeline import PruneConfig
    from .train import TrainConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = [HEADER]
    for name, command in sub.choices.items():
        out += _command(name, command)
    out += [
        "## Prune recipe keys",
        "",
        "A recipe (`secateurs prune --recipe FILE.yaml`) holds any of these keys; a flag given on the "
        "command line wins over the recipe.",
        "",
        *_fields(PruneConfig),
        "",
        "`finetune_train` takes these training keys (`epochs` is set per round from `finetune_epochs`):",
        "",
        *_fields(TrainConfig),
        "",
        RUN_DIRECTORY,
    ]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
