"""docs/methods.md and docs/architecture.md against the code they describe: every registered
method, option and default is on the page as the registries and dataclasses hold it, and
every file, package and table the pages name exists, so the pages cannot drift unnoticed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from secateurs.methods import METHODS, list_methods
from secateurs.methods._registry import NoOptions
from secateurs.pipeline import FINETUNE_MODES, PruneConfig

ROOT = Path(__file__).resolve().parent.parent
METHODS_PAGE = (ROOT / "docs" / "methods.md").read_text()
ARCHITECTURE_PAGE = (ROOT / "docs" / "architecture.md").read_text()
PACKAGE = ROOT / "src" / "secateurs"


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text`` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def section(name: str) -> str:
    """The text of the ``## `name`: ...`` section of docs/methods.md."""
    match = re.search(rf"^## `?{re.escape(name)}`?[:\s].*?(?=^## |\Z)", METHODS_PAGE, re.M | re.S)
    assert match, f"docs/methods.md has no section for {name!r}"
    return match.group(0)


def shown(value: object) -> str:
    """A default as the page writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`"
    return repr(value)


SUMMARY = {row[0].strip("`"): row for row in table_rows(METHODS_PAGE.split("\n## ")[0])[1:]}


def test_summary_table_lists_every_registered_method():
    assert sorted(SUMMARY) == list_methods()


@pytest.mark.parametrize("name", list_methods())
def test_summary_row_matches_the_registry(name):
    spec, row = METHODS[name], SUMMARY[name]
    assert row[2] == ("yes" if spec.needs_data else "no")
    rounds = len(PruneConfig(method=name, macs_reduction=0.5).schedule())
    assert int(row[3].split()[0]) == rounds
    assert row[4].startswith(f"`{spec.default_finetune}`")


@pytest.mark.parametrize("name", [n for n in list_methods() if METHODS[n].options is not NoOptions])
def test_every_option_of_a_method_is_documented_with_its_default(name):
    documented = {row[0]: row[1] for row in table_rows(section(name)) if row[0].startswith("`")}
    for f in dataclasses.fields(METHODS[name].options):
        assert f"`{f.name}`" in documented, f"{name} option {f.name} is not in docs/methods.md"
        assert documented[f"`{f.name}`"].startswith(shown(f.default)), (name, f.name, f.default)


@pytest.mark.parametrize("mode", sorted(FINETUNE_MODES))
def test_every_finetune_mode_and_option_is_documented(mode):
    page = section("Fine-tuning modes")
    assert f"**`{mode}`**" in page
    rows = [r for r in table_rows(page) if f"`{mode}`" in r[0]]
    options = FINETUNE_MODES[mode].options
    for f in dataclasses.fields(options):
        row = next((r for r in rows if r[1] == f"`{f.name}`"), None)
        assert row is not None, f"{mode} option {f.name} is not in docs/methods.md"
        assert row[2].startswith(shown(f.default)), (mode, f.name, f.default)


@pytest.mark.parametrize("page", [METHODS_PAGE, ARCHITECTURE_PAGE], ids=["methods", "architecture"])
def test_every_path_the_pages_name_exists_in_the_repository(page):
    paths = re.findall(r"`([\w./-]+/[\w.-]+\.(?:py|md))`", page)
    assert paths
    for p in paths:
        top = p.split("/")[0]
        where = ROOT / p if top in ("src", "benchmarks", "docs", "tests") else PACKAGE / p
        # docs/cli.md is rendered from the parser (secateurs._clidoc) and checked by test_docs.py.
        assert where.is_file() or p == "docs/cli.md", f"{p} does not exist"


def test_architecture_names_every_package():
    packages = sorted(d.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file())
    assert packages
    for name in packages:
        assert f"`{name}/`" in ARCHITECTURE_PAGE, name


def test_the_tables_a_layer_type_touches_exist_where_the_page_says():
    listed = re.findall(r"`([\w/]+\.py)`, `(\w+)`", ARCHITECTURE_PAGE)
    assert len(listed) >= 6
    for path, name in listed:
        assert re.search(rf"\b{name}\b", (PACKAGE / path).read_text()), f"{name} is not in {path}"
