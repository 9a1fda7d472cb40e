"""What a buildpack reads: requirements.txt in step with pyproject.toml, .python-version,
app.json, the Procfile; and the licence the package declares."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import yaml
from flask import Flask
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from feedbridge.config import setting_descriptions

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMPILE = "uv pip compile pyproject.toml --python-version 3.11 -o requirements.txt"


def pins() -> dict[str, tuple[Version, str]]:
    """Each pinned package: its version, and what the lock says it is there for."""
    text = (ROOT / "requirements.txt").read_text()
    blocks = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)\n((?:    #.*\n)+)", text, re.MULTILINE)
    return {canonicalize_name(name): (Version(version), via) for name, version, via in blocks}


def test_requirements_txt_is_pyprojects_dependencies_pinned() -> None:
    """Out of step? Run the command in requirements.txt's header: COMPILE."""
    text = (ROOT / "requirements.txt").read_text()
    assert f"#    {COMPILE}\n" in text
    locked = pins()
    assert len(locked) == sum(1 for line in text.splitlines() if "==" in line)
    wanted = [Requirement(spec) for spec in PYPROJECT["project"]["dependencies"]]
    for requirement in wanted:
        version, _ = locked[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (requirement, version)
    direct = {name for name, (_, via) in locked.items() if "feedbridge (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in wanted}


def imported_top_levels(module: str) -> set[str]:
    """The top-level names of what ``module``'s source imports, wherever the import is
    (a worker imports its server inside ``try``), its relative imports left out."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return names


def test_a_plain_install_has_what_the_server_imports() -> None:
    """A buildpack installs requirements.txt only: what the Procfile's module imports, and
    what granian's process-per-worker server imports, must be pinned there, not come in
    with the test extras (gunicorn's gevent worker once needed an undeclared packaging)."""
    [module] = [
        word
        for word in shlex.split((ROOT / "Procfile").read_text().removeprefix("web:"))
        if word.startswith("feedbridge.")
    ]
    distributions = packages_distributions()
    needed = {
        canonicalize_name(distribution)
        for imported in (module, "granian.server.mp")
        for name in imported_top_levels(imported) - set(sys.stdlib_module_names)
        if name not in ("feedbridge", "_typeshed")
        for distribution in distributions[name]
    }
    assert "granian" in needed
    assert needed - set(pins()) == set()


def test_python_version_is_one_the_package_supports() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version)
    supported = Requirement(f"python{PYPROJECT['project']['requires-python']}").specifier
    assert supported.contains(Version(version))
    assert f"--python-version {version} " in COMPILE


def test_app_json_checks_health_and_sets_only_known_settings(app: Flask) -> None:
    manifest = json.loads((ROOT / "app.json").read_text())
    [check] = manifest["healthchecks"]["web"]
    assert app.test_client().get(check["path"]).status_code == 200
    assert set(manifest["env"]) <= set(setting_descriptions()) | {"REDIS_URL"}
    assert manifest["env"]["FORWARDED_ALLOW_IPS"]["value"] == "*"
    assert any(addon.startswith("heroku-redis") for addon in manifest["addons"])


def test_the_licence_is_the_one_declared() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n\nCopyright (c) 2026 feedbridge contributors\n")


# --- the container ------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def test_the_image_runs_the_procfiles_command_as_a_user_with_a_volume() -> None:
    web = (ROOT / "Procfile").read_text().strip().removeprefix("web: ")
    assert instructions("CMD") == [web]  # shell form: under sh, as a platform runs it
    version = (ROOT / ".python-version").read_text().strip()
    assert instructions("FROM") == [f"python:{version}-slim"]
    [user] = instructions("USER")
    assert user not in ("root", "0")
    assert instructions("VOLUME") == ["/data"]
    env = " ".join(instructions("ENV"))
    assert "FEEDBRIDGE_DB=/data/" in env
    runs = instructions("RUN")
    assert any("pip install -r requirements.txt" in run for run in runs)
    assert any("pip install --no-deps ." in run for run in runs)
    # The user is made before the volume, and owns it: a named volume takes its owner.
    assert any(re.search(rf"useradd .*\b{user}\b", run) for run in runs)
    assert any(f"chown {user} /data" in run for run in runs)


def test_compose_runs_the_image_with_redis_its_health_check_and_volume() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    web, redis = compose["services"]["web"], compose["services"]["redis"]
    assert web["build"] == "."
    assert web["environment"]["FEEDBRIDGE_REDIS_URL"].startswith("redis://redis:")
    assert set(web["environment"]) <= set(setting_descriptions())
    [volume] = web["volumes"]
    name, _, target = volume.partition(":")
    assert target == instructions("VOLUME")[0] and name in compose["volumes"]
    [healthcheck] = instructions("HEALTHCHECK")
    command = healthcheck.partition(" CMD ")[2]
    assert web["healthcheck"]["test"] == command
    assert "/healthz" in command
    assert redis["image"].startswith("redis:")
