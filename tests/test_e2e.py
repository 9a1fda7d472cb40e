"""Real feed readers against the bridge, run as users run it.

The server starts from the ``Procfile``'s own command line (bound to 127.0.0.1 instead of
0.0.0.0), pointed at a local copy of the site; then newsboat, sfeed and rsstail (Debian
packages, installed by ``.ci/run``) read every category's feeds. A missing reader fails
the test in CI (``CI=true``) and skips it elsewhere, saying which package to install.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import requests
from pytest_httpserver import HTTPServer

from feedbridge.categories import load_registry
from feedbridge.text import parse_logfmt
from tests.conftest import FakeSite
from tests.feedspec import check_feed
from tests.fixtures.build import LISTINGS
from tests.servers import WebServer, wait_until
from tests.test_hostile import ESCAPES, raw_get

pytestmark = pytest.mark.e2e

REGISTRY = load_registry()
WORKERS = 2
# Readers print what they read; their locale decides how they decode it.
READER_ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def reader(name: str) -> str:
    """The path of a reader's binary; fails in CI and skips elsewhere when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is not installed: the end-to-end tests run it against the bridge "
            "(.ci/run installs the Debian packages newsboat, sfeed and rsstail)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class Story:
    """An item as the bridge's JSON Feed states it: what every reader must show."""

    id: str
    title: str
    url: str
    timestamp: int


@dataclass
class LiveBridge:
    """The server of the bridge on the saved site, and what it logged."""

    site: FakeSite
    server: WebServer
    _stories: dict[str, list[Story]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def feed_url(self, slug: str, fmt: str) -> str:
        return f"{self.url}/feeds/{slug}.{fmt}"

    def get_feed(self, slug: str, fmt: str) -> bytes:
        """The feed's bytes, spec-checked."""
        url = self.feed_url(slug, fmt)
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, response.text
        check_feed(response.content, response.headers["Content-Type"], self_url=url)
        return response.content

    def stories(self, slug: str) -> list[Story]:
        if slug not in self._stories:
            feed = json.loads(self.get_feed(slug, "json"))
            self._stories[slug] = [
                Story(
                    item["id"],
                    item["title"],
                    item["url"],
                    int(datetime.fromisoformat(item["date_published"]).timestamp()),
                )
                for item in feed["items"]
            ]
        return self._stories[slug]

    def statuses(self, target: str, agent: str) -> list[int]:
        """Statuses the bridge logged for ``target`` requested by a client named ``agent``."""
        lines = self.server.output().splitlines()  # the access log is on its output
        found = (parse_logfmt(line) or {} for line in lines)
        return [
            int(f["status"])
            for f in found
            if f.get("event") == "access" and f["path"] == target and f["agent"].startswith(agent)
        ]


@pytest.fixture(scope="module")
def bridge() -> Iterator[LiveBridge]:
    """The server as the Procfile runs it, on the saved site; stopped with the module."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    site = FakeSite(server)
    env = {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
    }
    try:
        with WebServer(env, workers=WORKERS) as server:
            yield LiveBridge(site, server)
    finally:
        server.stop()


def run(
    argv: list[str], *, input: bytes | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a reader; with ``home``, in that directory, which is also its HOME."""
    env = {**os.environ, **READER_ENV, **({"HOME": str(home)} if home else {})}
    return subprocess.run(argv, input=input, cwd=home, env=env, capture_output=True, timeout=60)


# --- newsboat ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subscriptions(bridge: LiveBridge, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Feed URL by category, as newsboat imported them from the bridge's OPML."""
    newsboat = reader("newsboat")
    home = tmp_path_factory.mktemp("newsboat-import")
    response = requests.get(f"{bridge.url}/feeds.opml", timeout=30)
    root = check_feed(response.content, response.headers["Content-Type"])
    (home / "feeds.opml").write_bytes(response.content)
    (home / "config").touch()
    result = run(
        [newsboat, "-i", "feeds.opml", "-u", "urls", "-C", "config", "-c", "cache.db"],
        home=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # One subscription a line: the URL, then perhaps tags and a "~title".
    urls = [line.split()[0] for line in (home / "urls").read_text().splitlines() if line.strip()]
    assert urls == [outline.get("xmlUrl") for outline in root.iter("outline")]
    by_slug = {PurePosixPath(urlsplit(url).path).stem: url for url in urls}
    assert set(by_slug) == set(REGISTRY)
    return by_slug


@pytest.mark.parametrize("slug", REGISTRY)
def test_newsboat_reads_each_category_and_reloads_with_conditional_gets(
    bridge: LiveBridge, subscriptions: dict[str, str], slug: str, tmp_path: Path
) -> None:
    newsboat = reader("newsboat")
    url = subscriptions[slug]
    assert url == bridge.feed_url(slug, "atom")
    bridge.get_feed(slug, "atom")  # the feed newsboat reads, spec-checked
    (tmp_path / "urls").write_text(url + "\n")
    (tmp_path / "config").touch()
    expected = sorted((s.id, s.title, s.url) for s in bridge.stories(slug))
    for reload in (1, 2, 3):
        log = tmp_path / f"reload-{reload}.log"
        # One cache per feed: newsboat's item ids are global within a cache.
        result = run(
            [newsboat, "-u", "urls", "-C", "config", "-c", "cache.db", "-x", "reload",
             "-l", "4", "-d", log.name],
            home=tmp_path,
        )  # fmt: skip
        # newsboat exits 0 even when a fetch fails: its log says so.
        assert result.returncode == 0, result.stderr.decode()
        errors = [line for line in log.read_text().splitlines() if "ERROR" in line]
        assert not errors, errors
        with closing(sqlite3.connect(tmp_path / "cache.db")) as db:
            rows = db.execute("SELECT guid, title, url FROM rss_item WHERE deleted = 0").fetchall()
        assert sorted(rows) == expected, f"after reload {reload}"
    target = f"/feeds/{slug}.atom"
    wait_until(lambda: len(bridge.statuses(target, "newsboat/")) == 3, "three logged requests", 10)
    statuses = bridge.statuses(target, "newsboat/")
    # From its third reload on a fresh cache, newsboat asks conditionally: nothing new.
    assert statuses[0] == 200 and statuses[-1] == 304, statuses
    assert statuses[statuses.index(304) :] == [304] * (3 - statuses.index(304)), statuses
    # However often readers poll, each worker fetched the listing once at most.
    assert bridge.site.hits(REGISTRY[slug].paths[0]) <= WORKERS


# --- sfeed and rsstail ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["rss", "atom"])
@pytest.mark.parametrize("slug", REGISTRY)
def test_sfeed_parses_every_feed(bridge: LiveBridge, slug: str, fmt: str) -> None:
    sfeed, sfeed_plain = reader("sfeed"), reader("sfeed_plain")
    parsed = run([sfeed], input=bridge.get_feed(slug, fmt))
    assert parsed.returncode == 0, parsed.stderr.decode()
    # sfeed's TSV: timestamp, title, link, content, content-type, id, author, enclosure, …
    rows = [line.split("\t") for line in parsed.stdout.decode().splitlines()]
    got = [(int(row[0]), row[1], row[2], row[5]) for row in rows]
    assert got == [(s.timestamp, s.title, s.url, s.id) for s in bridge.stories(slug)]
    shown = run([sfeed_plain], input=parsed.stdout)
    assert shown.returncode == 0, shown.stderr.decode()
    assert len(shown.stdout.decode().splitlines()) == len(rows)


@pytest.mark.parametrize("fmt", ["rss", "atom"])
@pytest.mark.parametrize("slug", REGISTRY)
def test_rsstail_parses_every_feed_strictly(bridge: LiveBridge, slug: str, fmt: str) -> None:
    rsstail = reader("rsstail")
    bridge.get_feed(slug, fmt)  # the same bytes rsstail reads, spec-checked
    # One shot, with links; rsstail exits 2 on XML it cannot parse.
    result = run([rsstail, "-u", bridge.feed_url(slug, fmt), "-1", "-l"])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    titles = [line.removeprefix("Title: ") for line in lines if line.startswith("Title: ")]
    links = [line.removeprefix("Link: ") for line in lines if line.startswith("Link: ")]
    assert len(lines) == len(titles) + len(links)
    stories = bridge.stories(slug)
    assert titles == [s.title for s in stories]
    assert links == [s.url for s in stories]


def test_the_feeds_hold_the_saved_sites_items(bridge: LiveBridge) -> None:
    """The expectations above come from the bridge; here they meet the saved site."""
    titles = [story.title for story in bridge.stories("vok-en")]
    assert titles == [article.title for article in LISTINGS["vok-en"]]
    for slug in REGISTRY:
        assert len(bridge.stories(slug)) >= 6, slug
        assert all(s.url.startswith(bridge.site.url + "/newstream/") for s in bridge.stories(slug))


# --- escapes, under the server ---------------------------------------------------------


@pytest.mark.parametrize(
    "target", ESCAPES, ids=[t if len(t) < 60 else f"{t[:40]}...{len(t)}-chars" for t in ESCAPES]
)
def test_the_server_answers_escaping_paths_with_404_and_no_fetch(
    bridge: LiveBridge, elsewhere: FakeSite, target: str
) -> None:
    before = bridge.site.hits()
    address = ("127.0.0.1", int(bridge.url.rsplit(":", 1)[1]))
    status, content_type, _ = raw_get(
        address, target.format(elsewhere=elsewhere.url.removeprefix("http://"))
    )
    assert status == 404
    assert content_type == "text/plain; charset=utf-8"
    assert bridge.site.hits() == before
    assert elsewhere.hits() == 0
