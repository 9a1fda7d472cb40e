"""Gaps repaired from the site's archive, and backfills: on both stores, against a local
site that publishes stories when a test says and serves its archive (tests/storysite.py).

Plus the pure parts: an archive page's stories and next link, an article's source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from flask import Flask
from prometheus_client import REGISTRY as METRICS
from pytest_httpserver import HTTPServer

from feedbridge import create_app
from feedbridge.archive import EMPTY, MISSING, PAGE_LIMIT, SITE_FAILED, WALL, Walk
from feedbridge.article import parse_article
from feedbridge.bridge import FeedService
from feedbridge.cli import main
from feedbridge.config import PREFIX, Settings
from feedbridge.errors import Blocked, LayoutChanged
from feedbridge.model import ArticleKey
from feedbridge.politeness import Backoff
from feedbridge.scrape import archive_path, parse_archive, parse_listing
from feedbridge.sqlite_store import SQLiteStore
from tests.conftest import SITE, Clock
from tests.fixtures import build
from tests.servers import WebServer
from tests.storysite import StorySite, page, status
from tests.test_cli import read_until_closed

BASE = "https://kcnawatch.org"
ROOT = Path(__file__).resolve().parent.parent
VOK, KP = "vok-en", "kcna-kp-en"

# --- pure: the archive page and the article's source ------------------------------------


def saved_archive(n: int) -> bytes:
    return (SITE / "archive" / f"page-{n}.html").read_bytes()


def test_an_archive_page_lists_its_stories_newest_first_and_links_the_next() -> None:
    stories = build.archive_stories()
    first = parse_archive(saved_archive(1), page=1, base_url=BASE)
    assert first.has_next
    assert [str(i.key) for i in first.items] == [a.tsid for a in stories[:10]]
    assert [i.title for i in first.items] == [a.title for a in stories[:10]]
    assert [i.listed for i in first.items] == [a.day for a in stories[:10]]
    assert all(i.source is None for i in first.items), "the archive names no source"
    second = parse_archive(saved_archive(2), page=2, base_url=BASE)
    assert second.has_next
    assert [str(i.key) for i in second.items] == [a.tsid for a in stories[10:20]]
    last = parse_archive(saved_archive(7), page=7, base_url=BASE)
    assert not last.has_next
    assert [str(i.key) for i in last.items] == [a.tsid for a in stories[60:]]


def test_the_next_page_is_found_by_its_url_whatever_the_markup() -> None:
    bare = (
        b'<html><body><ul><li><a href="/newstream/1774175393-841384190/x/">A story</a></li>'
        b'</ul><div><a href="https://kcnawatch.org/newstream/page/4">older</a></div></body></html>'
    )
    assert parse_archive(bare, page=3, base_url=BASE).has_next
    assert not parse_archive(bare, page=4, base_url=BASE).has_next, "a link to itself is not next"
    head_link = bare.replace(b"<html>", b'<html><head><link rel="next" href="/newstream/page/2/">')
    assert parse_archive(head_link.replace(b"page/4", b"page/9"), page=1, base_url=BASE).has_next


def test_an_archive_page_without_stories_is_a_layout_change_and_a_wall_is_a_wall() -> None:
    with pytest.raises(LayoutChanged):
        parse_archive(b"<html><body><p>Nothing here</p></body></html>", page=1, base_url=BASE)
    wall = (build.VARIANTS / "signup-wall.html").read_bytes()
    with pytest.raises(Blocked):
        parse_archive(wall, page=1, base_url=BASE)


def test_the_archive_starts_at_newstream() -> None:
    assert (archive_path(1), archive_path(2)) == ("/newstream/", "/newstream/page/2/")


@pytest.mark.parametrize(
    ("page", "label"),
    [
        ("site/articles/1730538240-666693401.html", "Voice of Korea (EN)"),
        ("site/articles/1718962777-572976430.html", "KCNA.kp (En)"),
        ("site/articles/1719223822-402448226.html", "Pyongyang Times"),
        ("variants/vok-en-template-b.html", "Voice of Korea (EN)"),
        ("variants/vok-en-template-c.html", "Voice of Korea (EN)"),  # no date line
        ("variants/template-d.html", None),  # "Source: (En)": the name is a logo
    ],
)
def test_an_article_names_its_source(page: str, label: str | None) -> None:
    body = (build.HERE / page).read_bytes()
    assert parse_article(body, page_url=BASE + "/x/").source == label


# --- the walk, against a local site ------------------------------------------------------


@dataclasses.dataclass
class World:
    site: StorySite
    clock: Clock
    app: Flask

    @property
    def service(self) -> FeedService:
        service: FeedService = self.app.extensions["feedbridge"]
        return service

    def refresh(self, *slugs: str) -> None:
        for slug in slugs:
            self.service.refresh(self.service.registry[slug], force=True)

    def keys(self, slug: str) -> list[str]:
        """The category's feed as a reader gets it: every id, in order."""
        response = self.app.test_client().get(f"/feeds/{slug}.json?limit=500")
        assert response.status_code == 200
        return [item["id"] for item in json.loads(response.data)["items"]]

    def expected(self, source: str | None = None) -> list[str]:
        return [ArticleKey(a.ts, a.tsid.split("-")[1]).tag_uri for a in self.site.published(source)]

    def stored(self, slug: str) -> list[str]:
        """The category's stories as kept (reading its feed would refresh it)."""
        return [item.key.tag_uri for item in self.service.store.newest(slug, 500)]

    def status(self) -> dict[str, object]:
        response = self.app.test_client().get("/status")
        data: dict[str, object] = response.get_json()
        return data


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite, the Redis URL for Redis."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
def world_of(
    httpserver: HTTPServer, clock: Clock, backend: str | None, tmp_path: Path
) -> Iterator[Callable[..., World]]:
    apps: list[Flask] = []

    def build_world(
        site: StorySite | None = None, *, repair_after_gap: bool = True, **overrides: object
    ) -> World:
        """A bridge on ``site`` (default: a new one), its store the test's."""
        site = site or StorySite(httpserver, clock)
        settings = Settings(
            upstream_url=site.url, min_interval=0.0, fulltext=False, refresh=False,
            db=tmp_path / "feedbridge.db", redis_url=backend,
        )  # fmt: skip
        app = create_app(
            dataclasses.replace(settings, **overrides), clock=clock,
            backoff=Backoff(jitter=lambda: 1.0),
        )  # fmt: skip
        app.extensions["feedbridge"].repair_after_gap = repair_after_gap
        apps.append(app)
        return World(site, clock, app)

    yield build_world
    for app in apps:
        app.extensions["feedbridge"].drain(timeout=10)
        app.extensions["feedbridge"].store.close()
    httpserver.clear()


def three_bursts(world: World) -> None:
    """Five stories of each source kept; then 45 in three bursts (30 of Voice of Korea,
    15 of KCNA.kp), more than a listing (11) or the home page (30) shows."""
    world.site.publish(VOK, 5)
    world.site.publish(KP, 5, at=world.clock.now + 5)
    world.clock.advance(60)
    world.refresh(VOK, KP, "all")
    for _ in range(3):
        world.clock.advance(20)
        world.site.publish(VOK, 10)
        world.site.publish(KP, 5, at=world.clock.now + 10)
    world.clock.advance(600)


def test_three_bursts_are_repaired_into_every_category_and_all(
    world_of: Callable[..., World],
) -> None:
    world = world_of()
    three_bursts(world)
    world.refresh(VOK, "all")  # both find a gap; the repair follows in the background
    world.service.drain(timeout=30)
    assert world.keys(VOK) == world.expected(VOK)  # 35: every one, once, newest first
    assert world.keys("all") == world.expected()  # 55
    assert world.keys(KP) == world.expected(KP), "one walk repairs every source it meets"
    assert world.status()["open_gaps"] == []
    stories = world.service.store.newest(VOK, 100)
    recovered = [s for s in stories if s.content_html]
    # 35 = 5 kept + 11 listed + 9 more on the home page (with their source's logo) + 10
    # that no page but the archive showed: read with their full text.
    assert len(recovered) == 10
    assert all(s.source == "Voice of Korea (EN)" for s in stories)
    counted = METRICS.get_sample_value("feedbridge_stories_recovered_total", {"category": VOK})
    assert counted is not None and counted >= 19
    assert METRICS.get_sample_value("feedbridge_gaps_open") == 0


def test_a_repair_reads_only_what_it_needs(world_of: Callable[..., World]) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.refresh(VOK)
    assert [gap.category for gap in world.service.archive.gaps()] == [VOK]
    walked = world.service.repair()
    assert walked is not None and walked.complete and walked.closed == [VOK]
    # 50 new stories, 10 a page: back past the newest kept story of Voice of Korea.
    assert walked.pages == 6
    assert [world.site.hits(archive_path(n)) for n in range(1, 8)] == [1, 1, 1, 1, 1, 1, 0]
    story = world.site.published(VOK)[15]
    assert world.site.hits(story.path) == 1, "each unknown story's page is read once"
    known = world.site.published(VOK)[0]
    assert world.site.hits(known.path) == 0, "a story the listing gave is not read again"
    assert world.service.repair() is None, "nothing left to repair"


def test_a_recovered_story_is_the_story_a_listing_would_have_given(
    world_of: Callable[..., World],
) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.refresh(VOK)
    world.service.repair()
    story = world.site.published(VOK)[20]  # never in a listing the bridge read
    [recovered] = [s for s in world.service.store.newest(VOK, 100) if str(s.key) == story.tsid]
    # What the listing of its time showed: the source's anchor page, with it in "More From".
    anchor = build.render_article(build.ANCHORS[VOK][0], "a", [story]).encode()
    [listed] = parse_listing(anchor, label="Voice of Korea (EN)", base_url=world.site.url)
    article = parse_article(
        build.render_article(story, "a", []).encode(), page_url=world.site.url + story.path
    )
    expected = dataclasses.replace(
        listed, content_html=article.content_html, original_url=article.original_url
    )
    assert recovered == expected
    assert recovered.key.tag_uri == world.expected(VOK)[20]


def test_a_story_of_no_category_is_kept_in_all(world_of: Callable[..., World]) -> None:
    world = world_of(repair_after_gap=False)
    world.site.publish(VOK, 5)
    world.clock.advance(60)
    world.refresh(VOK)
    world.site.publish(VOK, 12)
    korean = world.site.publish("rodong-sinmun-kor", 3, at=world.clock.now + 20)
    world.clock.advance(60)
    world.refresh(VOK)
    walked = world.service.repair()
    assert walked is not None and walked.closed == [VOK]
    assert set(walked.recovered) == {VOK, "all"}
    keys = {ArticleKey(a.ts, a.tsid.split("-")[1]).tag_uri for a in korean}
    assert keys <= set(world.stored("all"))
    assert all(
        not keys & set(world.stored(slug)) for slug in world.service.registry if slug != "all"
    )


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (status(404), MISSING),
        (page((build.VARIANTS / "signup-wall.html").read_text()), WALL),
        (page("<html><body><p>The archive moved.</p></body></html>"), EMPTY),
    ],
)
def test_a_gap_the_archive_cannot_close_stays_open_and_is_reported(
    world_of: Callable[..., World], fault: Callable[..., object], why: str
) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.site.faults["/newstream/"] = fault  # type: ignore[assignment]
    world.refresh(VOK)
    walked = world.service.repair()
    assert walked is not None and walked.why == why and walked.closed == []
    [gap] = world.status()["open_gaps"]  # type: ignore[misc]
    assert (gap["category"], gap["why"]) == (VOK, why)
    assert gap["since"] is not None
    assert METRICS.get_sample_value("feedbridge_gaps_open") == 1
    assert len(world.keys(VOK)) == 16, "what the listings gave is still served"
    assert world.service.repair() is None, "not again before the back-off is over"


def test_the_page_limit_leaves_the_gap_open(world_of: Callable[..., World]) -> None:
    world = world_of(repair_after_gap=False, repair_pages=3)
    three_bursts(world)
    world.refresh(VOK)
    walked = world.service.repair()
    assert walked is not None and walked.why == PAGE_LIMIT and walked.pages == 3
    assert world.site.hits(archive_path(4)) == 0
    [gap] = world.status()["open_gaps"]  # type: ignore[misc]
    assert gap["why"] == PAGE_LIMIT
    assert len(world.keys(VOK)) == 16 + 9, "what the three pages held is kept"
    assert world.service.repair() is None, "the same pages are not read again for nothing"


def test_a_repair_interrupted_by_the_site_resumes_and_loses_nothing(
    world_of: Callable[..., World],
) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.site.faults[archive_path(3)] = status(503)
    world.refresh(VOK, "all")
    walked = world.service.repair()
    assert walked is not None and walked.why == SITE_FAILED and walked.pages == 2
    assert {g["why"] for g in world.status()["open_gaps"]} == {SITE_FAILED}  # type: ignore[union-attr]
    del world.site.faults[archive_path(3)]
    assert world.service.repair() is None, "the back-off first"
    world.clock.advance(3600)
    walked = world.service.repair()
    assert walked is not None and walked.complete and sorted(walked.closed) == ["all", VOK]
    assert world.site.hits(archive_path(1)) == 1, "resumed where it stopped"
    assert world.site.hits(archive_path(3)) == 2
    assert world.keys(VOK) == world.expected(VOK)
    assert world.keys("all") == world.expected()


def test_a_gap_found_during_a_walk_is_not_closed_by_it(world_of: Callable[..., World]) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.site.faults[archive_path(3)] = status(503)
    world.refresh(VOK)
    assert world.service.repair() is not None  # stopped at page 3
    del world.site.faults[archive_path(3)]
    world.clock.advance(60)
    world.site.publish(KP, 35)  # more than the home page shows: a gap in "all"
    world.clock.advance(60)
    world.refresh("all")  # found after the walk read its page 1
    world.clock.advance(3600)
    walked = world.service.repair()
    assert walked is not None and walked.closed == [VOK]
    assert [g.category for g in world.service.archive.gaps()] == ["all"]
    walked = world.service.repair()  # a walk of its own, from page 1
    assert walked is not None and walked.closed == ["all"]
    assert world.keys("all") == world.expected()


def test_two_walkers_never_walk_at_once(world_of: Callable[..., World]) -> None:
    world = world_of(repair_after_gap=False)
    three_bursts(world)
    world.refresh(VOK)
    other = world_of(world.site, repair_after_gap=False)  # its own store connection
    gate = world.site.gate(archive_path(1))
    first = threading.Thread(target=world.service.repair)
    first.start()
    try:
        assert world.site.waiting.wait(10), "the first walker reads page 1"
        assert other.service.repair() is None, "the second does nothing while the first walks"
    finally:
        gate.set()
        first.join(30)
    assert world.site.hits(archive_path(1)) == 1
    assert world.keys(VOK) == world.expected(VOK)


def test_backfill_by_pages_interrupted_resumed_and_restarted(
    world_of: Callable[..., World],
) -> None:
    world = world_of()
    for n, source in enumerate((VOK, KP, "pyongyang-times")):
        world.site.publish(source, 20, at=world.clock.now - 3600 + n * 600)
    walked = world.service.archive.backfill(pages=2)
    assert walked.complete and walked.pages == 2
    assert len(world.stored("all")) == 20
    world.site.faults[archive_path(4)] = status(500)
    walked = world.service.archive.backfill(pages=6)
    assert walked.why == SITE_FAILED and walked.pages == 3, "a new backfill: pages 1 to 3"
    del world.site.faults[archive_path(4)]
    walked = world.service.archive.backfill(pages=6)
    assert walked.complete and walked.pages == 3, "resumed: pages 4 to 6"
    assert [world.site.hits(archive_path(n)) for n in range(1, 8)] == [2, 2, 1, 2, 1, 1, 0]
    assert world.stored("all") == world.expected()
    assert world.stored("pyongyang-times") == world.expected("pyongyang-times")
    world.site.faults[archive_path(2)] = status(500)
    assert world.service.archive.backfill(pages=6).why == SITE_FAILED
    del world.site.faults[archive_path(2)]
    walked = world.service.archive.backfill(pages=2, restart=True)
    assert walked.complete and world.site.hits(archive_path(1)) == 4, "from page 1 again"


def test_backfill_since_a_day_keeps_nothing_older(world_of: Callable[..., World]) -> None:
    world = world_of(keep_days=30)
    day = 86_400.0
    world.site.publish(VOK, 5, at=world.clock.now - 40 * day)  # past what is kept
    world.site.publish(VOK, 5, at=world.clock.now - 10 * day)  # before the day asked for
    recent = world.site.publish(VOK, 12, at=world.clock.now - 2 * day)
    since = build.datetime.fromtimestamp(world.clock.now - 3 * day, build.KST).date()
    walked = world.service.archive.backfill(since=since)
    assert walked.complete
    assert world.stored(VOK) == [
        ArticleKey(a.ts, a.tsid.split("-")[1]).tag_uri for a in reversed(recent)
    ]
    walked = world.service.archive.backfill(restart=True)
    assert walked.complete, "to the end of what is kept"
    assert len(world.stored(VOK)) == 17
    assert world.site.hits(archive_path(3)) == 0, "the 40-day-old page is not asked for"


def test_a_walk_note_survives_json() -> None:
    walk = Walk("backfill", 1.5, page=3, stop=ArticleKey(1, "2"), since=build.RENDERED,
                pages=9, reached=ArticleKey(0, ""), failures=2, retry_at=4.0)  # fmt: skip
    assert Walk.from_json(walk.to_json()) == walk


# --- the command: feedbridge backfill ----------------------------------------------------


def backfill_command(
    world: World, *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """``feedbridge backfill ARGS`` as a process of its own, on the world's site and store."""
    settings = world.app.config["FEEDBRIDGE"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    environ |= {
        f"{PREFIX}UPSTREAM_URL": world.site.url,
        f"{PREFIX}DB": str(settings.db),
        f"{PREFIX}MIN_INTERVAL": "0",
        f"{PREFIX}FULLTEXT": "0",
        "PYTHONPATH": str(ROOT),
    }
    if settings.redis_url:
        environ[f"{PREFIX}REDIS_URL"] = settings.redis_url
    environ |= env or {}
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | popen
    return subprocess.Popen(
        [sys.executable, "-m", "feedbridge", "backfill", *args],
        env=environ, cwd=ROOT, stdin=subprocess.DEVNULL, text=True, **streams,
    )  # fmt: skip


def expire_leases(world: World) -> None:
    """What the passing of a dead process's lease time does (without waiting for it)."""
    store = world.service.store
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE leases SET expires = 0")
    else:
        with redis.Redis.from_url(world.app.config["FEEDBRIDGE"].redis_url) as client:
            client.delete(*client.keys("feedbridge:*:lease:*"))


@pytest.mark.slow
def test_backfill_killed_mid_walk_resumes_and_loses_nothing(
    world_of: Callable[..., World],
) -> None:
    world = world_of()
    for n, source in enumerate((VOK, KP, "pyongyang-times")):
        world.site.publish(source, 20, at=world.clock.now - 3600 + n * 600)
    gate = world.site.gate(archive_path(4))
    first = backfill_command(world, "--pages", "6")
    try:
        assert world.site.waiting.wait(60), "the backfill reads pages 1 to 3, then waits"
        first.kill()  # SIGKILL: no clean-up of any kind
        first.communicate(timeout=10)  # and its pipes closed
    finally:
        gate.set()
    assert first.returncode == -signal.SIGKILL
    assert world.stored("all") == world.expected()[:30]
    expire_leases(world)
    second = backfill_command(world, "--pages", "6")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert err.splitlines() == [f"page {n} of 6: {10 * (n - 3)} stories filed" for n in (4, 5, 6)]
    assert out == "Read 3 archive pages; 30 stories filed.\n"
    assert [world.site.hits(archive_path(n)) for n in range(1, 7)] == [1, 1, 1, 2, 1, 1]
    assert world.stored("all") == world.expected()
    for source in (VOK, KP, "pyongyang-times"):
        assert world.stored(source) == world.expected(source)


@pytest.mark.slow
def test_a_server_told_to_stop_ends_at_once_while_a_repair_walks(
    world_of: Callable[..., World],
) -> None:
    """SIGTERM, as on every deploy, mid-walk: the worker ends without waiting for the
    repair (it resumes from its last page next time). Its pool's threads were joined at
    exit, so a walk held the worker until the platform's 30 s ran out."""
    world = world_of()
    three_bursts(world)
    settings: Settings = world.app.config["FEEDBRIDGE"]
    gate = world.site.gate(archive_path(2))
    env = {
        f"{PREFIX}UPSTREAM_URL": world.site.url, f"{PREFIX}MIN_INTERVAL": "0",
        f"{PREFIX}FULLTEXT": "0", f"{PREFIX}REFRESH": "0", f"{PREFIX}DB": str(settings.db),
        f"{PREFIX}TIMEOUT": "120",  # the page held longer than the wait for the worker
        **({f"{PREFIX}REDIS_URL": settings.redis_url} if settings.redis_url else {}),
    }  # fmt: skip
    try:
        with WebServer(env, workers=1) as server:
            # Due long ago (the site's clock is behind): refreshed in the background, the
            # refresh finds the gap, and its repair reads page 1 and waits at page 2.
            assert requests.get(f"{server.url}/feeds/{VOK}.atom", timeout=30).ok
            assert world.site.waiting.wait(60), "no repair reached page 2"
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=20) == 0, server.output()
    finally:
        gate.set()
    assert world.site.hits(archive_path(3)) == 0, "the walk went no further"


@pytest.mark.slow
def test_backfill_while_another_process_walks_exits_1(world_of: Callable[..., World]) -> None:
    world = world_of()
    world.site.publish(VOK, 12, at=world.clock.now - 600)
    gate = world.site.gate(archive_path(1))
    # The first waits for page 1 as long as the test holds it (a minute at the most).
    walking = backfill_command(world, env={f"{PREFIX}TIMEOUT": "60"})
    try:
        assert world.site.waiting.wait(60)
        other = backfill_command(world, "--since", "2026-03-01")
        out, err = other.communicate(timeout=60)
    finally:
        gate.set()
        walking.communicate(timeout=60)
    assert (other.returncode, out) == (1, "")
    assert err == "Another process is walking the archive: try again later.\n"
    assert world.site.hits(archive_path(1)) == 1
    assert walking.returncode == 0
    assert world.stored(VOK) == world.expected(VOK)


@pytest.mark.slow
def test_backfill_says_when_the_site_fails_and_exits_1(world_of: Callable[..., World]) -> None:
    world = world_of()
    world.site.publish(VOK, 25, at=world.clock.now - 600)
    world.site.faults[archive_path(2)] = status(500)
    failed = backfill_command(world)
    out, err = failed.communicate(timeout=60)
    assert (failed.returncode, out) == (1, "")
    assert err.splitlines()[-1].startswith("Stopped at page 2 (site-failed: the site answered 500")
    assert err.splitlines()[-1].endswith("; 10 stories filed. Run it again to resume.")


@pytest.mark.slow
def test_backfill_on_a_terminal_draws_a_bar(world_of: Callable[..., World]) -> None:
    world = world_of()
    world.site.publish(VOK, 30, at=world.clock.now - 600)
    controller, terminal = pty.openpty()
    try:
        process = backfill_command(world, "--pages", "3", stdout=terminal, stderr=terminal)
        os.close(terminal)
        shown = read_until_closed(controller, deadline=time.monotonic() + 60)
        assert process.wait(timeout=10) == 0, shown
    finally:
        os.close(controller)
    assert "\r[##########--------------------] 1/3 pages, 10 stories filed" in shown
    assert "\r[##############################] 3/3 pages, 30 stories filed" in shown
    assert "Read 3 archive pages; 30 stories filed." in shown


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--pages", "2", "--since", "2026-03-01"), "--pages and --since: give one of them"),
        (("--since", "yesterday"), "'yesterday' is no day of the form YYYY-MM-DD"),
        (("--pages", "0"), "0 is not in the range"),
    ],
)
def test_backfill_with_bad_arguments_is_one_line_and_status_2(
    args: tuple[str, ...], says: str
) -> None:
    result = CliRunner().invoke(main, ["backfill", *args])
    assert result.exit_code == 2
    [line] = result.output.splitlines()
    assert line.startswith("Error: ") and says in line, line
