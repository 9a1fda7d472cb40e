"""A programmable KCNA Watch over real HTTP: stories published at chosen times, served
from one story list the way the site serves them (tests/fixtures/build.py's markup).

* each source's anchor page (the registry's first path): its "More From <label>" block
  lists the ``listing`` newest stories of that source;
* ``/``: the ``home`` newest stories of every source;
* ``/newstream/`` and ``/newstream/page/<n>/``: the archive, ``page_size`` a page, newest
  first, a next link until the last page, then 404;
* ``/newstream/<ts>-<id>/<slug>/``: a published story's article page (``Source: <label> |``).

Only what is published by the injected clock's time is shown. ``faults`` answers chosen
paths otherwise (a function, a status, or a page), and ``gate`` holds a path's answer
until released: a process can be caught mid-walk without any sleep.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from feedbridge.categories import load_registry
from tests.conftest import Clock
from tests.fixtures import build

ARTICLE = re.compile(r"^/newstream/(\d+-\d+)(?:/|$)")
ARCHIVE = re.compile(r"^/newstream/(?:page/(\d+)/?)?$")
REGISTRY = load_registry()
# The key of build.py's sources by the label the registry gives them.
SOURCE_OF = {build.SOURCES[key].label: key for key in build.SOURCES}
GATE_WAIT = 30.0  # seconds a gated request waits at the most


class StorySite:
    def __init__(
        self,
        server: HTTPServer,
        clock: Clock,
        *,
        page_size: int = 10,
        listing: int = 11,
        home: int = 30,
    ) -> None:
        self.server = server
        self.url = server.url_for("").rstrip("/")
        self.clock = clock
        self.page_size, self.listing, self.home = page_size, listing, home
        self.stories: list[build.Article] = []
        self.requests: list[str] = []
        self.faults: dict[str, Callable[[Request], Response]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.waiting = threading.Event()  # set when a request waits at a gate
        self._anchors = {
            category.paths[0]: SOURCE_OF[category.label]
            for category in REGISTRY.values()
            if category.label in SOURCE_OF
        }
        self._lock = threading.Lock()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    # --- what is published -----------------------------------------------------------

    def publish(self, source: str, count: int, *, at: float | None = None) -> list[build.Article]:
        """``count`` new stories of ``source`` (a build.py source key, e.g. "vok-en"),
        ingested one second apart from ``at`` (default: now)."""
        start = int(self.clock() if at is None else at)
        made = []
        for i in range(count):
            n = len(self.stories) + i + 1
            ts = start + i
            day = datetime.fromtimestamp(ts, build.KST).date()
            label = build.SOURCES[source].label
            made.append(
                build.Article(
                    source,
                    f"{ts}-{300_000_000 + n * 7919}",
                    f"Report {n} from {label.split(' (')[0]}",
                    day,
                    (
                        f"Pyongyang, {day:%B} {day.day} -- Working people made fresh successes "
                        f"in the drive number {n} for the national economic plan.",
                        "Officials and workers are stepping up production with great zeal.",
                    ),
                )
            )
        with self._lock:
            self.stories.extend(made)
        return made

    def published(self, source: str | None = None) -> list[build.Article]:
        """What is out by now, newest first; of ``source`` only when given."""
        now = self.clock()
        with self._lock:
            shown = [a for a in self.stories if a.ts <= now and source in (None, a.source)]
        return sorted(shown, key=lambda a: a.ts, reverse=True)

    def hits(self, path: str) -> int:
        with self._lock:
            return self.requests.count(path)

    def gate(self, path: str) -> threading.Event:
        """Hold every request of ``path`` until the returned event is set."""
        self.gates[path] = threading.Event()
        return self.gates[path]

    # --- serving ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request.path)
        gate = self.gates.get(request.path)
        if gate is not None:
            self.waiting.set()
            gate.wait(GATE_WAIT)
        fault = self.faults.get(request.path)
        if fault is not None:
            return fault(request)
        if request.path == "/":
            return _html(build.render_home(self.published()[: self.home]))
        source = self._anchors.get(request.path)
        if source is not None:
            anchor = build.ANCHORS[source][0]
            listed = self.published(source)[: self.listing]
            return _html(build.render_article(anchor, "a", listed))
        page = ARCHIVE.match(request.path)
        if page is not None:
            return self._archive(int(page.group(1) or 1))
        article = ARTICLE.match(request.path)
        if article is not None:
            story = next((a for a in self.published() if a.tsid == article.group(1)), None)
            if story is not None:
                listed = self.published(story.source)[: self.listing]
                return _html(build.render_article(story, "a", listed))
        return Response("<html><body>Page not found</body></html>", 404, mimetype="text/html")

    def _archive(self, page: int) -> Response:
        stories = self.published()
        last = max(1, -(-len(stories) // self.page_size))
        if page > last:
            return Response("<html><body>Page not found</body></html>", 404, mimetype="text/html")
        chunk = stories[(page - 1) * self.page_size : page * self.page_size]
        return _html(build.render_archive(chunk, page, last_page=last))


def _html(body: str) -> Response:
    return Response(body, content_type="text/html; charset=UTF-8")


def status(code: int, body: str = "") -> Callable[[Request], Response]:
    """A fault: answer with ``code``."""
    return lambda _request: Response(body or f"status {code}", code, mimetype="text/html")


def page(body: str) -> Callable[[Request], Response]:
    """A fault: answer 200 with ``body``."""
    return lambda _request: _html(body)
