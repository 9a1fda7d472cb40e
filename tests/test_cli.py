"""The ``feedbridge`` command against the local copy of the site, healthy then broken."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner, Result
from flask import Flask
from werkzeug import Response

from feedbridge import server
from feedbridge.categories import load_registry
from feedbridge.cli import main
from feedbridge.config import PREFIX, SETTINGS
from feedbridge.feeds import OPML_MEDIA_TYPE, Format
from tests.conftest import FIXTURES, FakeSite
from tests.feedspec import check_feed, check_opml
from tests.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SLUGS = list(load_registry())
BASE = "https://example.org/kcna"
VOK_ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)
NAENARA_ANCHOR = (
    "/newstream/1635321782-640220161/"
    "enlarged-session-of-cabinet-plenary-meeting-reviews-third-quarterly-work/"
)
ALL_FILES = sorted(
    [f"feeds/{slug}.{fmt.value}" for slug in SLUGS for fmt in Format] + ["feeds.opml", "index.html"]
)
Invoke = Callable[..., Result]


@pytest.fixture
def env(site: FakeSite, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    """Settings for the fake site and a fresh store; every other FEEDBRIDGE_* unset."""
    unset: dict[str, str | None] = {setting.variable: None for setting in SETTINGS}
    return unset | {
        f"{PREFIX}UPSTREAM_URL": site.url,
        f"{PREFIX}MIN_INTERVAL": "0",
        f"{PREFIX}FULLTEXT": "0",
        f"{PREFIX}DB": str(tmp_path_factory.mktemp("store") / "cli.db"),
    }


@pytest.fixture
def invoke(env: dict[str, str | None]) -> Invoke:
    """Run ``feedbridge ARGS`` in-process; ``extra_env`` adds to or overrides ``env``."""

    def run(*args: str, extra_env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(
            main, list(args), env=env | (extra_env or {}), prog_name="feedbridge"
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def one_error_line(result: Result) -> str:
    """The whole of what a usage error prints: exit status 2 and one line."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# --- categories -------------------------------------------------------------------------


def test_categories_table(invoke: Invoke, site: FakeSite) -> None:
    result = invoke("categories")
    assert result.exit_code == 0, result.output
    header, *rows = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert header == ["slug", "title", "source label", "rss", "atom", "json"]
    assert [row[0] for row in rows] == SLUGS
    assert rows[SLUGS.index("vok-en")] == [
        "vok-en",
        "Voice of Korea (EN)",
        "Voice of Korea (EN)",
        *(f"http://127.0.0.1:8000/feeds/vok-en.{fmt}" for fmt in ("rss", "atom", "json")),
    ]
    assert rows[SLUGS.index("all")][1:3] == ["Latest articles from every source", "(every source)"]
    assert site.hits() == 0, "listing the categories never asks the site"


def test_categories_table_aligns_korean_titles(invoke: Invoke, tmp_path: Path) -> None:
    own = tmp_path / "categories.toml"
    own.write_text(
        '[categories.uriminzokkiri]\ntitle = "우리민족끼리"\nlabel = "Uriminzokkiri"\n'
        'anchors = ["/newstream/1700000000-123456789/x/"]\n',
        "utf-8",
    )
    result = invoke("categories", extra_env={f"{PREFIX}CATEGORIES_FILE": str(own)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    label_at = {_columns(line[: line.index(label)]) for line, label in
                ((lines[0], "source label"), (lines[-1], "Uriminzokkiri"))}  # fmt: skip
    assert len(label_at) == 1, f"the label column starts at one column: {lines}"


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


@pytest.mark.slow
def test_categories_into_a_closed_pipe_is_no_failure(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    many = tmp_path / "categories.toml"  # more than a pipe holds: the writer sees it close
    many.write_text(
        "".join(
            f'[categories.c{n}]\ntitle = "C{n}"\nlabel = "C{n}"\n'
            f'anchors = ["/newstream/1700000000-123456789/c{n}/"]\n'
            for n in range(2000)
        ),
        "utf-8",
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    environ |= {k: v for k, v in env.items() if v is not None} | {"PYTHONPATH": str(ROOT)}
    environ[f"{PREFIX}CATEGORIES_FILE"] = str(many)
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m feedbridge categories | head -1"],
        env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.startswith("slug")


def test_categories_json_with_public_url_and_own_file(invoke: Invoke, tmp_path: Path) -> None:
    own = tmp_path / "mine.toml"
    own.write_text(
        '[categories.uriminzokkiri]\ntitle = "Uriminzokkiri"\nlabel = "Uriminzokkiri"\n'
        'language = "ko"\nanchors = ["/newstream/1700000000-123456789/x/"]\n'
    )
    result = invoke(
        "categories",
        "--json",
        extra_env={f"{PREFIX}PUBLIC_URL": BASE + "/", f"{PREFIX}CATEGORIES_FILE": str(own)},
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["slug"] for row in rows] == [*SLUGS, "uriminzokkiri"]
    assert rows[-1] == {
        "slug": "uriminzokkiri",
        "title": "Uriminzokkiri",
        "label": "Uriminzokkiri",
        "language": "ko",
        "feeds": {fmt.value: f"{BASE}/feeds/uriminzokkiri.{fmt.value}" for fmt in Format},
    }
    assert rows[0]["slug"] == "all" and rows[0]["label"] is None
    # --base-url wins over the setting.
    result = invoke("categories", "--json", "--base-url", "http://feeds.test")
    assert (
        json.loads(result.stdout)[1]["feeds"]["atom"] == "http://feeds.test/feeds/kcna-kp-en.atom"
    )


def test_a_bad_categories_file_is_one_line(invoke: Invoke, tmp_path: Path) -> None:
    own = tmp_path / "mine.toml"
    own.write_text("[categories.Bad]\ntitle = 'x'\n")
    result = invoke("categories", extra_env={f"{PREFIX}CATEGORIES_FILE": str(own)})
    line = one_error_line(result)
    assert f"{PREFIX}CATEGORIES_FILE: {own}: [categories.Bad]: the slug must be" in line


DEEP = 5000  # past Python's recursion limit, which tomllib's parser recurses into


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * DEEP + "]" * DEEP,
        "x = " + "{a = " * DEEP + "1" + "}" * DEEP,
        "[categories.a]\ntitle = 'A'\nlabel = 'A'\nanchors = " + "[" * 50 + "]" * 50,
        "[[categories]]\ntitle = 'A'\n",
        "categories = 1\n",
        "[categories.a]\ntitle = ['A']\n",
        "[categories.a]\ntitle = 'A'\nlisting = { path = '/' }\n",
    ],
    ids=[
        "nested-arrays",
        "nested-tables",
        "nested-anchors",
        "array",
        "number",
        "list-title",
        "table-listing",
    ],
)
def test_a_categories_file_of_any_shape_is_one_line(
    invoke: Invoke, tmp_path: Path, text: str
) -> None:
    own = tmp_path / "mine.toml"
    own.write_text(text)
    result = invoke("categories", extra_env={f"{PREFIX}CATEGORIES_FILE": str(own)})
    assert f"{PREFIX}CATEGORIES_FILE: {own}: " in one_error_line(result)


# --- render one feed --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", Format)
def test_render_one_feed_to_stdout_is_what_the_server_sends(
    invoke: Invoke, make_app: Callable[..., Flask], fmt: Format
) -> None:
    result = invoke("render", "vok-en", "--format", fmt.value, "--base-url", BASE)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    check_feed(result.stdout_bytes, fmt.media_type, self_url=f"{BASE}/feeds/vok-en.{fmt.value}")
    served = make_app(public_url=BASE).test_client().get(f"/feeds/vok-en.{fmt.value}")
    assert result.stdout_bytes == served.data


def test_render_one_feed_to_a_file(invoke: Invoke, tmp_path: Path) -> None:
    target = tmp_path / "vok.atom"
    target.write_bytes(b"the previous version")
    result = invoke("render", "pyongyang-times", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == ""
    check_feed(
        target.read_bytes(),
        Format.ATOM.media_type,  # the default format
        self_url="http://127.0.0.1:8000/feeds/pyongyang-times.atom",
    )
    assert files_under(tmp_path) == ["vok.atom"], "no temporary file left behind"


def test_render_one_feed_of_a_broken_site(invoke: Invoke, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, (FIXTURES / "variants" / "empty-listing.html").read_bytes())
    result = invoke("render", "vok-en")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: vok-en.atom: HTTP 503: upstream failure: backing off after: "
        "the 'More From Voice of Korea (EN)' block lists no article\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give a category SLUG, or --all --out DIR"),
        (("nope",), "no category 'nope'; categories: all, kcna-kp-en,"),
        (("vok-en", "--format", "xml"), "Invalid value for '--format': 'xml' is not one of"),
        (("vok-en", "--out", "d"), "--out goes with --all; for one feed use -o FILE"),
        (("--all",), "--all needs --out DIR"),
        (("--all", "vok-en", "--out", "d"), "--all renders every feed"),
        (("--all", "--format", "rss", "--out", "d"), "--all renders every feed"),
        (("--all", "--out", "d", "--base-url", "ftp://x"), "must be an http:// or https:// URL"),
        (("--all", "--out", "d", "--base-url", "http://x/?a=1"), "must not have a query"),
        (("--bogus",), "No such option '--bogus'"),
    ],
)
def test_render_with_bad_arguments_is_one_line(
    invoke: Invoke, site: FakeSite, args: tuple[str, ...], message: str
) -> None:
    line = one_error_line(invoke("render", *args))
    assert message in line
    assert line.endswith("(see 'feedbridge render --help')")
    assert site.hits() == 0


# --- render --all -----------------------------------------------------------------------


def test_render_all_then_again_with_a_broken_category(
    invoke: Invoke, site: FakeSite, tmp_path: Path
) -> None:
    out = tmp_path / "www"
    result = invoke("render", "--all", "--out", str(out), "--base-url", BASE)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr == "", "quiet when not on a terminal"
    assert files_under(out) == ALL_FILES
    for slug in SLUGS:
        for fmt in Format:
            body = (out / "feeds" / f"{slug}.{fmt.value}").read_bytes()
            check_feed(body, fmt.media_type, self_url=f"{BASE}/feeds/{slug}.{fmt.value}")
    opml = check_opml((out / "feeds.opml").read_bytes())
    assert [o.get("xmlUrl") for o in opml.iter("outline")] == [
        f"{BASE}/feeds/{slug}.atom" for slug in SLUGS
    ]
    index = (out / "index.html").read_text()
    assert f'href="{BASE}/feeds/vok-en.rss"' in index
    # Each category was fetched once for its three formats, one request at a time.
    assert site.hits(VOK_ANCHOR) == 1
    assert site.hits() == len(SLUGS)
    umask = os.umask(0)
    os.umask(umask)
    modes = {stat.S_IMODE((out / name).stat().st_mode) for name in ALL_FILES}
    assert modes == {0o666 & ~umask}, "readable as a web server expects, like any new file"

    before = {name: (out / name).read_bytes() for name in ALL_FILES}
    site.override(VOK_ANCHOR, (FIXTURES / "variants" / "empty-listing.html").read_bytes())
    # The store keeps what the first run read: the broken page is not even asked for.
    hits = site.hits()
    result = invoke("render", "--all", "--out", str(out), "--base-url", BASE)
    assert result.exit_code == 0, result.output
    assert site.hits() == hits
    vok = [f"feeds/vok-en.{fmt.value}" for fmt in Format]
    assert {name: (out / name).read_bytes() for name in vok} == {n: before[n] for n in vok}

    # A store that never read the category has nothing to render instead.
    fresh_store = {f"{PREFIX}DB": str(tmp_path / "fresh.db")}
    result = invoke("render", "--all", "--out", str(out), "--base-url", BASE, extra_env=fresh_store)
    assert result.exit_code == 1
    assert result.stdout == ""
    failed = [f"feeds/vok-en.{fmt.value}" for fmt in Format]
    lines = result.stderr.splitlines()
    assert [line.split(" not written: ")[0] for line in lines[:-1]] == failed
    # The refresh before rendering failed, and is not tried again for each page.
    for line in lines[:-1]:
        assert "HTTP 503: upstream failure: backing off after: the 'More From" in line
    assert lines[-1] == f"Error: 3 of {len(ALL_FILES)} files not written"
    # The failed feeds keep their last good files; the others were written again (the
    # front page too, which now has no headlines for the failed category).
    assert files_under(out) == ALL_FILES, "no temporary file left behind"
    (tmp_path / "fresh.db").unlink()
    feeds = set(ALL_FILES) - {"index.html"}
    assert {name: (out / name).read_bytes() for name in feeds} == {n: before[n] for n in feeds}
    assert "Successes made in tree planting" not in (out / "index.html").read_text()


def test_render_all_into_a_directory_that_cannot_be_made(invoke: Invoke, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = one_error_line(invoke("render", "--all", "--out", str(blocker / "www")))
    assert line.startswith(f"Error: --out: cannot create {blocker / 'www'}: Not a directory")


def run_command(*args: str, env: dict[str, str | None], **popen: object) -> subprocess.Popen:
    """``python -m feedbridge ARGS`` as its own process, with this worktree's package."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    environ |= {k: v for k, v in env.items() if v is not None}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "feedbridge", *args], env=environ, cwd=ROOT, **popen
    )


@pytest.mark.slow
def test_render_all_from_cron_prints_nothing(env: dict[str, str | None], tmp_path: Path) -> None:
    process = run_command(
        "render",
        "--all",
        "--out",
        str(tmp_path),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stdout, stderr) == (0, b"", b"")
    assert files_under(tmp_path) == ALL_FILES


@pytest.mark.slow
def test_render_all_on_a_terminal_shows_progress(
    env: dict[str, str | None], tmp_path: Path
) -> None:
    controller, terminal = pty.openpty()
    try:
        process = run_command(
            "render",
            "--all",
            "--out",
            str(tmp_path),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        shown = read_until_closed(controller, deadline=time.monotonic() + 60)
        assert process.wait(timeout=10) == 0, shown
    finally:
        os.close(controller)
    assert "Rendering" in shown and "100%" in shown
    assert f"Wrote {len(ALL_FILES)} files to {tmp_path}" in shown
    assert files_under(tmp_path) == ALL_FILES


def read_until_closed(fd: int, *, deadline: float) -> str:
    chunks = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        pytest.fail("the command did not finish in time")
    return b"".join(chunks).decode("utf-8", "replace")


# --- check ------------------------------------------------------------------------------


def test_check_a_healthy_site(invoke: Invoke, site: FakeSite) -> None:
    result = invoke("check")
    assert result.exit_code == 0, result.output
    *lines, archive, summary = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [[slug, "ok"] for slug in SLUGS]
    vok = lines[SLUGS.index("vok-en")]
    assert vok.endswith("11 items, newest 2026-03-22 10:29:53 UTC")
    assert archive.split() == ["(archive)", "ok", "10", "items,", "newest", "2026-03-22",
                               "14:07:40", "UTC"]  # fmt: skip
    assert summary == f"{len(SLUGS)} of {len(SLUGS)} categories ok"
    assert site.hits() == len(SLUGS) + 1, "the listings and archive page 1"


def test_check_says_plainly_when_the_archive_is_not_where_we_think(
    invoke: Invoke, site: FakeSite
) -> None:
    site.override("/newstream/", Response("not found", status=404))
    result = invoke("check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert all(outcome["error"] is None for outcome in report["categories"])
    assert report["ok"] is False and report["archive"]["error"].startswith("http: ")
    assert "The archive is not where the bridge looks for it" in result.stderr


def test_check_reads_listings_only_even_with_full_text_on(invoke: Invoke, site: FakeSite) -> None:
    result = invoke("check", extra_env={f"{PREFIX}FULLTEXT": "1"})
    assert result.exit_code == 0, result.output
    assert site.hits() == len(SLUGS) + 1


def test_check_a_broken_site(invoke: Invoke, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, (FIXTURES / "variants" / "empty-listing.html").read_bytes())
    site.override("/", (FIXTURES / "variants" / "challenge.html").read_bytes())
    site.override(NAENARA_ANCHOR, Response("down for maintenance", status=500))
    result = invoke("check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    outcomes = {outcome["slug"]: outcome for outcome in report["categories"]}
    assert list(outcomes) == SLUGS
    assert outcomes["vok-en"] == {
        "slug": "vok-en",
        "items": 0,
        "newest": None,
        "error": "layout: the 'More From Voice of Korea (EN)' block lists no article",
    }
    assert outcomes["all"]["error"].startswith("blocked: ")
    assert outcomes["naenara-en"]["error"].startswith("http: ")
    assert "500" in outcomes["naenara-en"]["error"]
    healthy = [slug for slug in SLUGS if slug not in ("vok-en", "all", "naenara-en")]
    for slug in healthy:
        assert outcomes[slug]["error"] is None
        assert outcomes[slug]["items"] > 0
        assert outcomes[slug]["newest"].endswith("+00:00")
    assert outcomes["kcna-co-jp-en"]["newest"].startswith("2026-02-13T")

    result = invoke("check")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[SLUGS.index("vok-en")].split()[:3] == ["vok-en", "FAILED", "layout:"]
    assert lines[-2].split()[:2] == ["(archive)", "ok"]
    assert lines[-1] == f"{len(SLUGS) - 3} of {len(SLUGS)} categories ok"


def test_check_an_unreachable_site(invoke: Invoke) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = invoke(
        "check", "--json", extra_env={f"{PREFIX}UPSTREAM_URL": f"http://127.0.0.1:{port}"}
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    errors = [outcome["error"] for outcome in [*report["categories"], report["archive"]]]
    assert all(error.startswith("unreachable: ") for error in errors), errors


# --- refresh ----------------------------------------------------------------------------


def test_refresh_reads_every_category_into_the_store_and_render_uses_it(
    invoke: Invoke, site: FakeSite
) -> None:
    result = invoke("refresh")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", ""), result.output
    assert site.hits() == len(SLUGS)
    hits = site.hits()
    assert invoke("render", "vok-en").exit_code == 0
    assert site.hits() == hits, "rendered from the store"
    assert invoke("refresh", "vok-en", "all").exit_code == 0
    assert site.hits() == hits + 2, "once: named categories are read now, fresh or not"


def test_refresh_of_a_broken_category_fails_with_status_1(invoke: Invoke, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, (FIXTURES / "variants" / "empty-listing.html").read_bytes())
    result = invoke("refresh")
    assert result.exit_code == 1
    assert result.stderr == "vok-en: FAILED (layout)\n"
    assert site.hits() == len(SLUGS)


def test_refresh_of_an_unknown_category_is_one_line(invoke: Invoke, site: FakeSite) -> None:
    assert "no category 'nope'" in one_error_line(invoke("refresh", "nope"))
    assert site.hits() == 0


@pytest.mark.slow
def test_refresh_on_a_terminal_shows_progress(env: dict[str, str | None]) -> None:
    controller, terminal = pty.openpty()
    try:
        process = run_command(
            "refresh", "vok-en", env=env, stdin=subprocess.DEVNULL, stdout=terminal,
            stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        shown = read_until_closed(controller, deadline=time.monotonic() + 60)
        assert process.wait(timeout=10) == 0, shown
    finally:
        os.close(controller)
    assert "vok-en: refreshed" in shown


@pytest.mark.slow
def test_refresh_loop_on_a_terminal_shows_each_round_and_stops_on_sigterm(
    env: dict[str, str | None],
) -> None:
    controller, terminal = pty.openpty()
    try:
        process = run_command(
            "refresh", "--loop", env=env | {f"{PREFIX}CACHE_TTL": "1"},
            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        shown = ""
        deadline = time.monotonic() + 30
        while shown.count("vok-en: refreshed") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                shown += os.read(controller, 65536).decode("utf-8", "replace")
        assert shown.count("vok-en: refreshed") >= 2, shown  # two rounds, a second apart
        assert "Ctrl-C stops" in shown
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        os.close(controller)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a database at all" * 100, "file is not a database"),
        (None, "no such directory"),
    ],
)
def test_a_bad_store_stops_every_command_with_one_line(
    invoke: Invoke, site: FakeSite, tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / ("corrupt.db" if content else "missing/s.db")
    if content:
        path.write_bytes(content)
    for args in (("refresh",), ("render", "vok-en"), ("check",)):
        line = one_error_line(invoke(*args, extra_env={f"{PREFIX}DB": str(path)}))
        assert line.startswith(f"Error: {PREFIX}DB: {path}: ") and says in line, line
    assert site.hits() == 0


# --- settings and help, for every command ------------------------------------------------

COMMANDS = [
    ("categories",),
    ("render", "vok-en"),
    ("render", "--all", "--out", "d"),
    ("check",),
    ("refresh",),
    ("backfill",),
]


@pytest.mark.parametrize("args", [*COMMANDS, ("serve",)])
def test_a_bad_setting_is_one_line_and_status_2(
    invoke: Invoke, site: FakeSite, args: tuple[str, ...]
) -> None:
    line = one_error_line(invoke(*args, extra_env={f"{PREFIX}CACHE_TTL": "abc"}))
    assert line == (
        f"Error: {PREFIX}CACHE_TTL: must be a whole number from 1 to 315360000 (got 'abc') "
        f"(see 'feedbridge {args[0]} --help')"
    )
    assert site.hits() == 0


@pytest.mark.parametrize(
    "command", ["categories", "render", "check", "refresh", "backfill", "serve"]
)
def test_help_explains_every_setting(invoke: Invoke, command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    for setting in SETTINGS:
        assert f"{setting.variable}: " in result.stdout
    for shown in ("(default 600; 1 to 315360000)", "(default 8000; 1 to 65535)"):
        assert shown in " ".join(result.stdout.split())


def test_unknown_command_is_one_line(invoke: Invoke) -> None:
    assert "No such command 'publish'" in one_error_line(invoke("publish"))


# --- serve ------------------------------------------------------------------------------


def test_procfile_runs_the_server_as_serve_workers_does() -> None:
    kind, _, command = (ROOT / "Procfile").read_text().strip().partition(": ")
    assert kind == "web"
    # The same module; serve adds the address and the workers, the Procfile has them
    # from the platform ($PORT, WEB_CONCURRENCY).
    procfile = shlex.split(command)
    served = server.command("127.0.0.1", 8000, 2)
    assert procfile[:2] == ["exec", "python"]
    assert served[: len(procfile) - 2] == procfile[2:]
    assert served[len(procfile) - 2 :] == [
        "--host", "127.0.0.1", "--port", "8000", "--workers", "2"
    ]  # fmt: skip


@pytest.mark.slow
def test_serve_with_workers_runs_the_server(env: dict[str, str | None], tmp_path: Path) -> None:
    port = free_port()
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # What the options say wins over the platform's variables, even unreadable ones.
        overridden = {**env, "WEB_CONCURRENCY": "abc", "PORT": "99999"}
        process = run_command(
            "serve", "--workers", "2", "--port", str(port), env=overridden,
            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, stderr.read_text()
            try:
                return requests.get(f"{url}/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, "feedbridge serve --workers 2", timeout=30)
        response = requests.get(f"{url}/feeds/vok-en.atom", timeout=10)
        assert response.status_code == 200, response.text
        check_feed(
            response.content, response.headers["Content-Type"], self_url=f"{url}/feeds/vok-en.atom"
        )
        opml = requests.get(f"{url}/feeds.opml", timeout=10)
        assert opml.headers["Content-Type"].startswith(OPML_MEDIA_TYPE)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    # The command became the server's master (exec), which stopped its workers, exit 0.
    assert process.returncode == 0, stderr.read_text()
    log = stderr.read_text()
    assert log.count("Spawning worker-") == 2, log
    assert f"Listening at: http://127.0.0.1:{port}" in log
    assert "level=warning" not in log, log  # a start as chosen, no warning
    assert "method=GET path=/feeds/vok-en.atom status=200" in log


def test_render_all_writes_full_text(invoke: Invoke, tmp_path: Path) -> None:
    """Static files hold what a server would serve: full text read before rendering."""
    out = tmp_path / "www"
    result = invoke("render", "--all", "--out", str(out), extra_env={f"{PREFIX}FULLTEXT": "1"})
    assert result.exit_code == 0, result.output
    feed = json.loads((out / "feeds" / "vok-en.json").read_bytes())
    assert all("content_html" in item for item in feed["items"])
