"""Install feedbridge each way its docs say, each in a fresh virtual environment, and
prove that each install runs, against a local stand-in for the site.

1. the lock file alone (``pip install -r requirements.txt``), as a buildpack does: the
   ``Procfile``'s ``web:`` line, run under ``sh`` from a copy of the repository, answers
   ``/healthz`` and a feed, and stops on SIGTERM;
2. the package alone (``pip install .``): ``feedbridge serve --workers 2`` answers too;
3. every ``feedbridge`` command the docs show resolves (``--help`` exits 0) from the
   install it belongs to (``python -m feedbridge`` from the lock-file one, the
   ``feedbridge`` script from the package one), and ``refresh`` runs once.

The copy of the repository is ``git archive`` of the working tree's tracked files (what
a platform receives from ``git push``). Standard library only: it runs before anything
is installed. Run by .ci/run; exit status 1 and a line on what failed otherwise.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WAIT = 60.0  # seconds, at most, for a server to answer or to stop
# A feedbridge invocation in the docs: the installed script (bare or by path) or the
# module, then the command and its words up to the end of the line or a shell operator.
INVOCATION = re.compile(
    r"(?:(?<![\w/.-])|(?<=/bin/))(?P<program>python3? -m feedbridge|feedbridge)"
    r"(?P<args>(?: +[^\s|;&)`'\"$]+)+)"
)
# Each command with --help, in one process: click parses its words (an unknown command
# or option fails) and exits 0 on --help before it runs anything.
RESOLVE = """
import ast, sys, click
from feedbridge.cli import main
for args in ast.literal_eval(sys.argv[1]):
    try:
        main.main([*args, "--help"], standalone_mode=False)
    except click.ClickException as exc:
        sys.exit(f"{args}: {exc.format_message()}")
"""
SUBCOMMAND = re.compile(r"[a-z][a-z-]*")


@dataclass(frozen=True)
class DocCommand:
    """A command the docs give: ``module`` when it runs as ``python -m feedbridge`` (the
    lock-file install, which has no ``feedbridge`` script), else the script."""

    module: bool
    args: tuple[str, ...]
    where: str

    def __str__(self) -> str:
        program = "python -m feedbridge" if self.module else "feedbridge"
        return f"{program} {shlex.join(self.args)} ({self.where})"


def doc_commands() -> list[DocCommand]:
    """Every feedbridge command in the docs' code (blocks and inline), once each.

    Synopses (``[--json]``) and placeholders (``SLUG…``) are descriptions, not steps:
    left out.
    """
    found: dict[tuple[bool, tuple[str, ...]], DocCommand] = {}
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        code = re.findall(r"```[^\n]*\n(.*?)```", text, re.DOTALL)
        code += re.findall(
            r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.DOTALL)
        )
        for snippet in code:
            for line in snippet.splitlines():
                for match in INVOCATION.finditer(line):
                    args = tuple(shlex.split(match["args"], comments=True))
                    if not SUBCOMMAND.fullmatch(args[0]) or re.search(r"[\[\]…<>]", line):
                        continue
                    module = match["program"] != "feedbridge"
                    found.setdefault((module, args), DocCommand(module, args, doc.name))
    return list(found.values())


# --- processes and waits ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str, budget: float = WAIT) -> str:
    """The body of a 200 answer from ``url``, asking again until ``budget`` seconds pass."""
    deadline = time.monotonic() + budget
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: str = response.read().decode()
                return body
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"install-paths: {url}: no answer in {budget:.0f}s: {exc}"
                ) from None
            time.sleep(0.2)


def run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(
            f"install-paths: {shlex.join(argv)} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )


@contextmanager
def serving(argv: list[str], *, cwd: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """A server started from ``argv``; stopped on leaving, and it must stop on SIGTERM."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        except BaseException:
            process.kill()
            process.wait(WAIT)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            raise SystemExit(f"install-paths: {shlex.join(argv)} did not stop on SIGTERM") from None


def check_serves(base: str) -> None:
    assert get(f"{base}/healthz").strip() == "ok"
    feed = get(f"{base}/feeds/all.atom")
    if "<entry>" not in feed:
        raise SystemExit(f"install-paths: {base}/feeds/all.atom has no entry:\n{feed[:500]}")


# --- the install paths --------------------------------------------------------------------


def make_venv(path: Path, *requirements: str, cwd: Path) -> subprocess.Popen[bytes]:
    """Create a venv at ``path`` and install into it, in the background: with this
    Python's pip (``--python``), which saves installing pip into each venv; pip's cache
    is its usual one (``PIP_CACHE_DIR``, else ``~/.cache/pip``)."""
    python = shlex.quote(sys.executable)
    pip = f"{python} -m pip --python {path}/bin/python install --quiet"
    script = f"{python} -m venv --without-pip {path} && {pip} {shlex.join(requirements)}"
    return subprocess.Popen(["sh", "-c", script], cwd=cwd)


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="feedbridge-install.") as temporary:
        work = Path(temporary)
        repo = work / "repo"
        repo.mkdir()
        # The tracked files as they are now, committed or not.
        tree = subprocess.run(
            ["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "archive", tree or "HEAD"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x"], cwd=repo, input=archive, check=True)
        # Both installs at once: each waits mostly on pip.
        lock, package = work / "lock", work / "package"
        installs = [
            make_venv(lock, "-r", "requirements.txt", cwd=repo),
            make_venv(package, ".", cwd=repo),
        ]
        if any(install.wait(600) != 0 for install in installs):
            raise SystemExit("install-paths: an install failed (its output is above)")
        installed = time.monotonic()
        print(f"install-paths: both installs {installed - started:.0f}s", flush=True)

        site = work / "site"
        site.mkdir()
        (site / "index.html").write_bytes((ROOT / "tests/fixtures/site/home.html").read_bytes())
        site_port = free_port()
        stand_in = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(site_port)],
            cwd=site,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            get(f"http://127.0.0.1:{site_port}/")

            def env(venv: Path, **extra: str) -> dict[str, str]:
                """Nothing of this machine's settings: the venv first on PATH, the
                stand-in site, a store of the run's own."""
                return {
                    "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
                    "HOME": str(work),
                    "FEEDBRIDGE_UPSTREAM_URL": f"http://127.0.0.1:{site_port}",
                    "FEEDBRIDGE_MIN_INTERVAL": "0",
                    "FEEDBRIDGE_FULLTEXT": "0",
                    "FEEDBRIDGE_DB": str(work / f"{venv.name}.db"),
                    **extra,
                }

            # 1. The lock file alone: the Procfile's web line, as a platform runs it.
            [web] = [
                line.removeprefix("web:").strip()
                for line in (repo / "Procfile").read_text().splitlines()
                if line.startswith("web:")
            ]
            port = free_port()
            with serving(
                ["sh", "-c", web], cwd=repo, env=env(lock, PORT=str(port)), port=port
            ) as base:
                check_serves(base)
            print(
                f"install-paths: Procfile web line ok {time.monotonic() - installed:.0f}s",
                flush=True,
            )
            # 2. The package alone: serve --workers 2.
            port = free_port()
            with serving(
                ["feedbridge", "serve", "--workers", "2", "--port", str(port)],
                cwd=work,
                env=env(package),
                port=port,
            ) as base:
                check_serves(base)
            # 3. Every command of the docs, from the install it belongs to: each program
            # runs once for real (a refresh), the commands resolve in one process each.
            commands = doc_commands()
            run(["python", "-m", "feedbridge", "refresh", "all"], cwd=repo, env=env(lock))
            run(["feedbridge", "refresh", "all"], cwd=work, env=env(package))
            for venv, module, cwd in ((lock, True, repo), (package, False, work)):
                argvs = [list(c.args) for c in commands if c.module is module]
                run(["python", "-c", RESOLVE, repr(argvs)], cwd=cwd, env=env(venv))
        finally:
            stand_in.terminate()
            stand_in.wait(WAIT)
    done = time.monotonic()
    print(
        f"install-paths: ok: installs {installed - started:.0f}s, servers and "
        f"{len(commands)} doc commands {done - installed:.0f}s"
    )


if __name__ == "__main__":
    main()
