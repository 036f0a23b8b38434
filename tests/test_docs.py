"""The generated docs page matches the parser, so docs/cli.md cannot drift from --help."""

from __future__ import annotations

from pathlib import Path

from secateurs._clidoc import render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_page_is_the_rendered_parser():
    assert (DOCS / "cli.md").read_text() == render(), (
        "docs/cli.md is out of date: run `python -m secateurs._clidoc > docs/cli.md`"
    )


def test_cli_page_names_every_command_and_prune_flag():
    from secateurs.cli import build_parser

    page = render()
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    for name, command in sub.choices.items():
        assert f"## `secateurs {name}`" in page
        for action in command._actions:
            for flag in action.option_strings if action.dest != "help" else ():
                assert f"`{flag}`" in page, (name, flag)
