"""Shared fixtures: a real local HTTP server playing KCNA Watch, and an app pointed at it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from hypothesis import settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from feedbridge import create_app
from feedbridge.app import open_store
from feedbridge.config import Settings
from feedbridge.politeness import Backoff
from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import Store
from tests.servers import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
SITE = FIXTURES / "site"
ARTICLE = re.compile(r"^/newstream/(\d+-\d+)(?:/|$)")
ARCHIVE = re.compile(r"^/newstream/(?:page/(\d+)/)?$")
Handler = Callable[[Request], Response]

# Tests that start a process (redis-server, Chromium, a feed reader, the server) are slow:
# those through these fixtures are marked here, the others where they are written.
_PROCESS_FIXTURES = frozenset({"redis_server", "redis_url", "tls_redis", "chromium"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _PROCESS_FIXTURES or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)


# Hypothesis: the same examples on every CI run; fresh ones elsewhere. No deadline: the
# machines are small and shared, and a slow example is not a wrong one.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, max_examples=100)
# A quarter of the examples at a developer's desk, for a fast loop; CI runs them all.
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(autouse=True)
def _store_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever reads the environment gets a store file of this test's own, never the
    working directory's ``feedbridge.db`` (nor one in the test's ``tmp_path``)."""
    monkeypatch.setenv("FEEDBRIDGE_DB", str(tmp_path_factory.mktemp("store") / "env.db"))


def loaded_by(imports: str, watched: tuple[str, ...]) -> list[str]:
    """Which of the ``watched`` modules ``import {imports}`` loads, in a fresh interpreter."""
    code = f"import sys, {imports}; print('\\n'.join(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


class Clock:
    """A wall clock the tests move by hand."""

    def __init__(self, start: float = 1_774_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSite:
    """The saved pages of the site, served over real HTTP, with faults on demand.

    ``/`` is the home page; ``/newstream/<ts>-<id>/<any slug>/`` is that article's saved
    page, whatever the slug, as the real site redirects to the canonical one;
    ``/newstream/`` and ``/newstream/page/<n>/`` the archive's saved pages.
    """

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.url = server.url_for("").rstrip("/")
        self.requests: list[Request] = []
        self._overrides: dict[str, Handler] = {}
        self._lock = threading.Lock()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    def override(self, path: str, handler: Handler | Response | str | bytes) -> None:
        """Answer ``path`` (exact) with ``handler``: a function, a response or an HTML body."""
        if not callable(handler) or isinstance(handler, Response):
            response = (
                handler
                if isinstance(handler, Response)
                else Response(handler, content_type="text/html; charset=UTF-8")
            )
            self._overrides[path] = lambda _request: response
        else:
            self._overrides[path] = handler

    def hits(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        override = self._overrides.get(request.path)
        if override is not None:
            return override(request)
        if request.path == "/":
            return _page(SITE / "home.html")
        archive = ARCHIVE.match(request.path)
        if archive:  # the saved pages of the archive (1, 2 and the last)
            return _page(SITE / "archive" / f"page-{archive.group(1) or 1}.html")
        match = ARTICLE.match(request.path)
        if match:
            return _page(SITE / "articles" / f"{match.group(1)}.html")
        return Response("not found", status=404)


def _page(path: Path) -> Response:
    if not path.is_file():
        return Response(
            "<html><body>Page not found</body></html>", status=404, mimetype="text/html"
        )
    return Response(path.read_bytes(), content_type="text/html; charset=UTF-8")


def settle(app: Flask) -> None:
    """Let the app's background work (refreshes, then full text) finish."""
    app.extensions["feedbridge"].drain(timeout=10)


@pytest.fixture
def site(httpserver: HTTPServer) -> Iterator[FakeSite]:
    yield FakeSite(httpserver)
    httpserver.clear()


@pytest.fixture
def elsewhere(httpserver_ipv4: HTTPServer) -> Iterator[FakeSite]:
    """A second server, on another host and port: the bridge must never fetch from it."""
    yield FakeSite(httpserver_ipv4)
    httpserver_ipv4.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(
    site: FakeSite, clock: Clock, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Flask]]:
    """Build an app on the fake site, its store in a fresh file; keyword arguments
    override settings. The refresher is off: a test refreshes when it says so."""
    apps: list[Flask] = []

    def build(wrap_store: Callable[[Store], Store] | None = None, **overrides: object) -> Flask:
        defaults = Settings(
            upstream_url=site.url,
            min_interval=0.0,
            fulltext=False,
            db=tmp_path_factory.mktemp("store") / "feedbridge.db",
            refresh=False,
        )
        settings = dataclasses.replace(defaults, **overrides)
        # ``wrap_store``: the store the settings name, seen through a wrapper of the test's.
        store = wrap_store(open_store(settings, clock)) if wrap_store else None
        app = create_app(settings, clock=clock, backoff=Backoff(jitter=lambda: 1.0), store=store)
        app.testing = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["feedbridge"].drain(timeout=5)
        app.extensions["feedbridge"].store.close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def start_redis(tls: bool = False) -> RedisServer:
    """A redis-server; missing, it fails the run in CI and skips the test elsewhere."""
    try:
        return RedisServer(tls=tls)
    except FileNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}: .ci/run installs it", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session."""
    with start_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


def fill_the_disk(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's file can grow no further, as on a full disk: its connection is opened
    again (every thread of the process shares it), limited to the pages the file holds
    now (SQLite's per-connection ``max_page_count``)."""
    with contextlib.closing(sqlite3.connect(store.path)) as own:
        pages = own.execute("PRAGMA page_count").fetchone()[0]
    connect = sqlite3.connect

    def limited(database: object, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(database, *args, **kwargs)  # type: ignore[arg-type]
        if Path(str(database)) == store.path:
            connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", limited)
    store.close()
