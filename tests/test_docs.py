"""The docs say what the code does: commands, settings, routes and links."""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from feedbridge.cli import main
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


def test_python_modules_shown_are_there() -> None:
    """Each ``python3 -m MODULE`` of the docs' shell blocks names a module there is (the
    bench's, the package's, the standard library's, a test tool's); the ``feedbridge``
    commands themselves are resolved below."""
    shown = {
        (doc.name, words[index + 1])
        for doc in DOCS
        for block in re.findall(r"```sh\n(.*?)```", text(doc), re.DOTALL)
        for line in block.splitlines()
        for words in [shlex.split(line, comments=True)]
        for index, word in enumerate(words[:-1])
        if word == "-m" and index > 0 and Path(words[index - 1]).name.startswith("python")
    }
    assert ("contributing.md", "bench.run") in shown
    missing = [(doc, module) for doc, module in shown if importlib.util.find_spec(module) is None]
    assert missing == []


# --- commands and units the docs give as steps --------------------------------------------

INSTALL_PATHS = runpy.run_path(str(ROOT / ".ci/install_paths.py"), run_name="install_paths")


def test_every_command_shown_resolves() -> None:
    """Each ``feedbridge`` command the docs show parses (an unknown command or option
    fails); .ci/install_paths.py resolves them again from the installs themselves."""
    commands = INSTALL_PATHS["doc_commands"]()
    assert any(command.args[:2] == ("refresh", "--loop") for command in commands)
    for command in commands:
        result = CliRunner().invoke(main, [*command.args, "--help"])
        assert result.exit_code == 0, (str(command), result.output)


def test_procfile_lines_shown_run_from_a_lock_file_install() -> None:
    """A platform installs requirements.txt, not the package: no ``feedbridge`` script,
    only ``gunicorn`` and the module from the repository's copy."""
    lines = [
        line
        for doc in DOCS
        for block in re.findall(r"```\n(.*?)```", text(doc), re.DOTALL)
        for line in block.splitlines()
        if re.match(r"(web|worker|release|clock): ", line)
    ]
    assert any(line.startswith("worker: ") for line in lines)
    for line in lines:
        words = shlex.split(line.partition(": ")[2])
        program = words[1:2] if words[0] == "exec" else words[:1]
        assert program == ["gunicorn"] or words[1:4] == ["python", "-m", "feedbridge"], line


def test_the_systemd_unit_has_a_state_directory_it_works_in() -> None:
    [unit] = re.findall(r"```ini\n(.*?)```", text(ROOT / "docs/deploying.md"), re.DOTALL)
    service = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"
    variables = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in unit.splitlines()
        if line.startswith("Environment=")
    )
    assert set(variables) <= set(setting_descriptions())
    assert Path(variables["FEEDBRIDGE_DB"]).parent == Path(service["WorkingDirectory"])
    assert service["ExecStart"].split()[1:3] == ["serve", "--workers"]


def test_no_test_count_to_go_stale() -> None:
    assert re.search(r"\b\d+ tests\b", text(ROOT / "docs/contributing.md")) is None
