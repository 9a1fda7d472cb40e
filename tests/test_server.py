"""The production server's launcher (feedbridge/server.py): what it refuses before any
worker starts, and the access lines the app writes under it."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import Client

from feedbridge.server import AccessLog
from feedbridge.text import parse_logfmt
from tests.servers import ROOT, WebServer, wait_until


def launch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedbridge.server", "--host", "127.0.0.1"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.slow
def test_a_bad_setting_stops_the_server_with_one_line() -> None:
    result = launch({"FEEDBRIDGE_CACHE_TTL": "abc"})
    assert result.returncode == 2
    assert result.stderr.startswith("feedbridge: FEEDBRIDGE_CACHE_TTL: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_store_that_cannot_open_stops_the_server_before_any_worker() -> None:
    result = launch({"FEEDBRIDGE_DB": "/proc/no/such/dir/feedbridge.db", "PORT": "1"})
    assert result.returncode == 2
    assert result.stderr.startswith("feedbridge: ") and result.stderr.count("\n") == 1
    assert "granian" not in result.stderr  # no server started


@pytest.fixture
def access_lines(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[dict[str, str]]]]:
    """The access lines written so far, read back."""
    with caplog.at_level(logging.INFO, logger="feedbridge.access"):
        yield lambda: [parse_logfmt(record.getMessage()) or {} for record in caplog.records]


def test_an_access_line_per_request(access_lines: Callable[[], list[dict[str, str]]]) -> None:
    app = Flask(__name__)
    app.add_url_rule("/feed", "feed", lambda: "abc")
    client = Client(AccessLog(app))
    client.get("/feed?limit=5", headers={"User-Agent": "NetNewsWire"})
    client.get("/nonesuch", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    first, second = access_lines()
    assert {k: first[k] for k in ("event", "method", "path", "status", "bytes", "agent")} == {
        "event": "access",
        "method": "GET",
        "path": "/feed?limit=5",
        "status": "200",
        "bytes": "3",
        "agent": "NetNewsWire",
    }
    assert float(first["duration_ms"]) >= 0
    assert (second["client"], second["path"], second["status"]) == (
        "203.0.113.7",
        "/nonesuch",
        "404",
    )


def test_the_access_line_shows_the_client_the_app_believed(
    access_lines: Callable[[], list[dict[str, str]]],
) -> None:
    """The app rewrites ``REMOTE_ADDR`` for a trusted proxy (feedbridge/proxy.py); the
    line is written after the app ran, so it shows the reader, not the proxy."""

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        environ["REMOTE_ADDR"] = "198.51.100.4"
        start_response("204 No Content", [])  # type: ignore[operator]
        return []

    Client(AccessLog(app)).get("/", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert [(line["client"], line["status"], line["bytes"]) for line in access_lines()] == [
        ("198.51.100.4", "204", "0")
    ]


@pytest.mark.slow
def test_workers_stop_when_their_master_is_killed() -> None:
    with WebServer({"FEEDBRIDGE_UPSTREAM_URL": "http://127.0.0.1:9"}, workers=2) as server:
        wait_until(lambda: len(server.workers()) == 2, "both workers")
        workers = server.workers()
        server.process.kill()
        server.process.wait(10)
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
            "the workers of a killed master to stop",
            timeout=15,
        )
