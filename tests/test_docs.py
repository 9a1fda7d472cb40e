"""The docs say what the code does: commands, settings, routes and links."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from flask import Flask

from feedbridge.config import setting_descriptions

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
TEST_COMMAND = "python3 -m pytest"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_readme_opens_with_serving_and_testing() -> None:
    block = re.search(r"```sh\n(.*?)```", text(README), re.DOTALL)
    assert block is not None
    serve, test = block.group(1).splitlines()
    assert serve == (
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/feedbridge serve"
    )
    assert test == "bash .ci/run"
    assert f"`{TEST_COMMAND}`" in text(README)


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    commands = [
        line for line in text(ROOT / ".ci/run").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]  # fmt: skip
    assert commands[-1] == TEST_COMMAND


def test_the_readme_is_short() -> None:
    assert len(text(README).split()) <= 1200


def test_the_settings_table_is_the_one_config_declares() -> None:
    rows = ["| variable | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in setting_descriptions().items()]
    table = "\n".join(rows) + "\n"
    assert table in text(ROOT / "docs/operating.md"), f"docs/operating.md should have:\n{table}"


def test_the_procfile_line_is_quoted_as_it_is() -> None:
    line = text(ROOT / "Procfile").strip()
    assert f"  {line}\n" in text(ROOT / "docs/deploying.md")


def test_every_route_is_documented(app: Flask) -> None:
    docs = text(README) + text(ROOT / "docs/operating.md")
    routes = {rule.rule for rule in app.url_map.iter_rules()} - {"/static/<path:filename>"}
    for route in routes:
        shown = route.replace("<name>", "<category>.<format>")
        assert f"`{shown}`" in docs or f"`GET {shown}`" in docs, route


def test_every_module_is_in_the_map() -> None:
    contributing = text(ROOT / "docs/contributing.md")
    for module in sorted((ROOT / "feedbridge").glob("*.py")):
        if module.name not in ("__init__.py", "__main__.py"):
            assert f"`feedbridge/{module.name}`" in contributing, module.name


@pytest.mark.parametrize("doc", DOCS, ids=[path.name for path in DOCS])
def test_relative_links_lead_somewhere(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text(doc)):
        if not re.match(r"[a-z]+:", target):
            assert (doc.parent / target).exists(), target


@pytest.mark.parametrize("doc", DOCS, ids=[path.name for path in DOCS])
def test_commands_shown_are_shell_words(doc: Path) -> None:
    for block in re.findall(r"```sh\n(.*?)```", text(doc), re.DOTALL):
        shlex.split(block, comments=True)
