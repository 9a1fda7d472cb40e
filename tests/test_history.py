"""A bridge that remembers: every story kept, readers never waiting, one fetch per TTL.

A source here *publishes* over time: its "More From" block shows its newest eleven
stories, as the site's does, while the test publishes bursts and moves the clock. The
refresher's rounds are run by hand (``run_once``) on the test's clock; what needs real
processes (a refresher killed, the server's workers) is marked slow.
"""

from __future__ import annotations

import html
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from flask import Flask
from prometheus_client import REGISTRY as METRICS
from werkzeug import Request, Response

from feedbridge.categories import load_registry
from feedbridge.refresh import Outcome
from feedbridge.refresher import LEASE_TTL, Refresher
from tests.conftest import SITE, Clock, FakeSite, fill_the_disk, settle
from tests.feedspec import ATOM_NS, check_feed
from tests.servers import ROOT, WebServer, _Process, wait_until

REGISTRY = load_registry()
VOK = REGISTRY["vok-en"]
LABEL = "Voice of Korea (EN)"
LISTED = 11  # stories in a "More From" block
TTL = 600


class Source:
    """Voice of Korea publishing stories; its anchor page lists the newest eleven."""

    def __init__(self, site: FakeSite, clock: Clock) -> None:
        self.clock = clock
        self.stories: list[tuple[int, str, str]] = []  # ts, id, title; oldest first
        site.override(VOK.paths[0], self.page)

    def publish(self, count: int) -> None:
        for _ in range(count):
            n = len(self.stories) + 1
            ts = int(self.clock.now) - 3600 + n  # every story newer than the one before
            self.stories.append((ts, str(500_000_000 + n), f"Statement number {n}"))

    def titles(self, newest: int | None = None) -> list[str]:
        kept = [title for _, _, title in reversed(self.stories)]
        return kept[:newest]

    def page(self, _request: Request) -> Response:
        cards = "".join(
            f'<article class="clearfix"><div class="article-desc">'
            f'<h4><a href="/newstream/{ts}-{sid}/statement-{sid}/">{html.escape(title)}</a></h4>'
            f'<p class="article-excerpt">{html.escape(title)} was published today, and its'
            f" words are read by people who follow the news closely.</p>"
            f'<p class="articled-date"><span>March 20, 2026</span></p></div></article>'
            for ts, sid, title in reversed(self.stories[-LISTED:])
        )
        body = (
            "<html><head><title>An article</title></head><body>"
            f"<p>KCNA {LABEL}</p><h1>An article</h1>"
            f"<p>Date: 02/11/2024 | Source: {LABEL} | Read original version at source</p>"
            "<p>The body of the anchor article, long enough to be a body.</p>"
            f"<h3>More From {LABEL}</h3>{cards}<h3>More Articles</h3></body></html>"
        )
        return Response(body, content_type="text/html; charset=UTF-8")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings of the store the test runs on."""
    if request.param == "sqlite":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url")}


@pytest.fixture
def source(site: FakeSite, clock: Clock) -> Source:
    return Source(site, clock)


def feed_titles(app: Flask, query: str = "") -> list[str]:
    response = app.test_client().get(f"/feeds/vok-en.json{query}")
    assert response.status_code == 200, response.text
    return [item["title"] for item in json.loads(response.data)["items"]]


def gaps(slug: str) -> float:
    return METRICS.get_sample_value("feedbridge_listing_gaps_total", {"category": slug}) or 0.0


def test_bursts_while_nobody_reads_are_all_in_the_feed_and_a_wider_one_is_a_gap(
    make_app: Callable[..., Flask],
    backend: dict[str, object],
    source: Source,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(**backend)
    refresher = Refresher(app.extensions["feedbridge"])
    vok = [VOK]
    source.publish(LISTED)
    refresher.run_once(vok)
    for burst in (7, 10, 9):  # each smaller than the listing
        source.publish(burst)
        clock.advance(TTL)
        refresher.run_once(vok)
    assert feed_titles(app) == source.titles(), "every story, though 26 left the listing"
    assert len(source.titles()) == 37

    before = gaps("vok-en")
    caplog.set_level("WARNING", logger="feedbridge")
    source.publish(15)  # wider than the listing: four stories never listed at a refresh
    clock.advance(TTL)
    refresher.run_once(vok)
    assert gaps("vok-en") == before + 1
    [warning] = [r.getMessage() for r in caplog.records if "event=gap" in r.getMessage()]
    assert "category=vok-en" in warning and "since_previous_s=600" in warning
    kept = feed_titles(app)
    assert kept == source.titles(11) + source.titles()[15:]
    assert len(kept) == 48
    status = app.test_client().get("/status").json["categories"]["vok-en"]
    assert status["last_gap"] == {
        "at": status["last_refresh"],
        "since_previous_refresh_s": 600,
        "ongoing": True,
    }
    # Until the listings overlap again, the category is read twice as often.
    assert status["next_refresh_in_s"] == TTL // 2
    clock.advance(TTL // 2)
    source.publish(3)
    [result] = refresher.run_once(vok)
    assert (result.category, result.outcome, result.ok) == (VOK, Outcome.REFRESHED, True)
    status = app.test_client().get("/status").json["categories"]["vok-en"]
    assert (status["last_gap"]["ongoing"], status["next_refresh_in_s"]) == (False, TTL)
    assert feed_titles(app, "?limit=500")[:3] == source.titles(3)


def test_the_feed_lists_the_newest_of_the_history_and_limit_reaches_further(
    make_app: Callable[..., Flask], backend: dict[str, object], source: Source, clock: Clock
) -> None:
    app = make_app(feed_size=20, **backend)
    refresher = Refresher(app.extensions["feedbridge"])
    for _ in range(8):
        source.publish(5)
        clock.advance(TTL)
        refresher.run_once([VOK])
    assert feed_titles(app) == source.titles(20)
    assert feed_titles(app, "?limit=500") == source.titles()
    assert (
        feed_titles(app, "?q=number+3")
        == [t for t in source.titles() if "3" in t][:20]  # every word, anywhere
    )


def test_a_restart_with_the_site_down_serves_every_kept_feed_at_once(
    make_app: Callable[..., Flask],
    backend: dict[str, object],
    site: FakeSite,
    clock: Clock,
    tmp_path: Path,
) -> None:
    store = {"db": tmp_path / "kept.db", **backend}
    before = make_app(**store)
    Refresher(before.extensions["feedbridge"]).run_once()
    kept = {slug: before.test_client().get(f"/feeds/{slug}.atom").data for slug in REGISTRY}
    hits = site.hits()
    for category in REGISTRY.values():
        site.override(category.paths[0], Response("down", status=500))

    after = make_app(**store)  # the new process, on the same store
    client = after.test_client()
    for slug, body in kept.items():
        response = client.get(f"/feeds/{slug}.atom")
        assert (response.status_code, response.headers["X-Cache"]) == (200, "hit")
        assert response.data == body
    assert site.hits() == hits, "served from the store, without asking the site"
    clock.advance(TTL + 1)
    for slug, body in kept.items():
        response = client.get(f"/feeds/{slug}.atom")
        assert (response.status_code, response.headers["X-Cache"]) == (200, "stale")
        assert response.data == body
    settle(after)


def test_a_new_category_answers_after_its_listing_and_full_text_follows(
    make_app: Callable[..., Flask], backend: dict[str, object], site: FakeSite, clock: Clock
) -> None:
    """Article pages that take their time never hold a reader: the first answer has the
    excerpts, and each story is updated in place (Atom ``updated``, ETag) once read."""
    gate = threading.Event()
    articles = SITE / "articles"

    def slow(request: Request) -> Response:
        gate.wait(10)
        name = request.path.split("/")[2]
        return Response((articles / f"{name}.html").read_bytes(), content_type="text/html")

    app = make_app(fulltext=True, **backend)
    listing = app.extensions["feedbridge"].read_listing(VOK)
    for item in listing.items:
        site.override(item.path, slow)
    client = app.test_client()
    clock.advance(3 * 86_400)  # the saved stories are of the days after the clock's start
    try:
        first = client.get("/feeds/vok-en.atom")
        assert not gate.is_set(), "answered while every article page still hangs"
    finally:
        gate.set()
    assert (first.status_code, first.headers["X-Cache"]) == (200, "miss")
    atom = f"{{{ATOM_NS}}}"
    entries = check_feed(first.data, first.content_type).findall(f"{atom}entry")
    assert len(entries) == 11 and not any(e.find(f"{atom}content") is not None for e in entries)
    settle(app)
    second = client.get("/feeds/vok-en.atom")
    filled = check_feed(second.data, second.content_type).findall(f"{atom}entry")
    assert [e.findtext(f"{atom}id") for e in filled] == [e.findtext(f"{atom}id") for e in entries]
    assert all(e.find(f"{atom}content") is not None for e in filled)
    assert all(e.findtext(f"{atom}updated") > e.findtext(f"{atom}published") for e in filled), (
        "updated in place"
    )
    assert second.headers["ETag"] != first.headers["ETag"]


def test_the_refresher_reads_each_category_once_per_ttl(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    refresher = Refresher(make_app().extensions["feedbridge"])
    assert {r.outcome for r in refresher.run_once()} == {Outcome.REFRESHED}
    assert site.hits() == len(REGISTRY)
    clock.advance(TTL - 1)
    not_due = refresher.run_once()
    assert {(r.due, r.outcome, r.ok, str(r)) for r in not_due} == {(False, None, True, "not-due")}
    clock.advance(1)
    assert {r.outcome for r in refresher.run_once()} == {Outcome.REFRESHED}
    assert site.hits() == 2 * len(REGISTRY)


def test_a_refresher_without_the_lease_does_nothing(
    make_app: Callable[..., Flask], site: FakeSite, tmp_path: Path
) -> None:
    shared = tmp_path / "shared.db"
    one = Refresher(make_app(db=shared).extensions["feedbridge"], tick=0.05)
    two = Refresher(make_app(db=shared).extensions["feedbridge"], tick=0.05)
    one.start()
    try:
        wait_until(lambda: one.lease.held, "the first refresher's lease", 10)
        two.start()
        wait_until(lambda: site.hits() >= len(REGISTRY), "the first round", 10)
        assert not two.lease.held
    finally:
        one.stop()
        two.stop()
    assert site.hits() == len(REGISTRY)


# --- WebSub -----------------------------------------------------------------------------


class Hub:
    """A WebSub hub that records what publishers tell it."""

    def __init__(self, server: FakeSite) -> None:
        self.url = server.url + "/hub"
        self.notices: list[dict[str, list[str]]] = []
        self.status = 204
        server.override("/hub", self.receive)

    def receive(self, request: Request) -> Response:
        self.notices.append(parse_qs(request.get_data(as_text=True)))
        return Response(status=self.status)


def test_feeds_name_the_hub_and_the_hub_hears_of_new_stories(
    make_app: Callable[..., Flask], source: Source, clock: Clock, elsewhere: FakeSite
) -> None:
    hub = Hub(elsewhere)
    public = "https://feeds.example.org"
    app = make_app(websub_hub=hub.url, public_url=public)
    bridge, publisher = app.extensions["feedbridge"], app.extensions["feedbridge.websub"]
    source.publish(3)
    client = app.test_client()
    atom = check_feed(client.get("/feeds/vok-en.atom").data, "application/atom+xml")
    assert [link.get("href") for link in atom.findall(f"{{{ATOM_NS}}}link[@rel='hub']")] == [
        hub.url
    ]
    rss = check_feed(client.get("/feeds/vok-en.rss").data, "application/rss+xml")
    assert [link.get("href") for link in rss.iter(f"{{{ATOM_NS}}}link")] == [
        f"{public}/feeds/vok-en.rss",
        hub.url,
    ]
    assert json.loads(client.get("/feeds/vok-en.json").data)["hubs"] == [
        {"type": "WebSub", "url": hub.url}
    ]
    publisher.drain()
    topics = [f"{public}/feeds/vok-en.{fmt}" for fmt in ("rss", "atom", "json")]
    assert [(n["hub.mode"], n["hub.url"]) for n in hub.notices] == [
        (["publish"], [topic]) for topic in topics
    ]

    clock.advance(TTL)
    Refresher(bridge).run_once([VOK])  # nothing new: nothing to tell
    publisher.drain()
    assert len(hub.notices) == 3

    hub.status = 500  # a hub that fails is logged and counted, never felt by readers
    source.publish(1)
    clock.advance(TTL)
    Refresher(bridge).run_once([VOK])
    publisher.drain()
    assert len(hub.notices) == 6
    failed = METRICS.get_sample_value(
        "feedbridge_websub_notices_total", {"category": "vok-en", "outcome": "failed"}
    )
    assert failed and failed >= 3
    assert client.get("/feeds/vok-en.atom").status_code == 200


# --- real processes ----------------------------------------------------------------------


@pytest.fixture
def process_env(site: FakeSite, tmp_path: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")}
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
        "FEEDBRIDGE_CACHE_TTL": "1",
        "FEEDBRIDGE_DB": str(tmp_path / "shared.db"),
    }


def lease_holder(db: Path) -> str | None:
    try:
        with sqlite3.connect(db) as connection:
            row = connection.execute("SELECT token FROM leases WHERE name = 'refresher'").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


@pytest.mark.slow
def test_a_killed_refresher_s_lease_is_taken_over(
    process_env: dict[str, str], site: FakeSite
) -> None:
    db = Path(process_env["FEEDBRIDGE_DB"])
    argv = [sys.executable, "-m", "feedbridge", "refresh", "--loop"]
    with _Process(argv, env=process_env) as first:
        wait_until(lambda: lease_holder(db) is not None, "the first refresher's lease", 60)
        holder = lease_holder(db)
        with _Process(argv, env=process_env):
            wait_until(lambda: site.hits() > 2 * len(REGISTRY), "refreshes every second", 20)
            assert lease_holder(db) == holder, "the second waits while the first lives"
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
            wait_until(
                lambda: lease_holder(db) not in (None, holder),
                "the second refresher taking the lease over",
                LEASE_TTL + 15,
            )
            hits = site.hits()
            wait_until(lambda: site.hits() > hits, "refreshes by the second refresher", 20)


@pytest.mark.slow
def test_two_workers_fetch_each_category_once_per_ttl(
    process_env: dict[str, str], site: FakeSite
) -> None:
    env = {**process_env, "FEEDBRIDGE_CACHE_TTL": "3600"}
    env.pop("PYTHONPATH")
    with WebServer(env, workers=2) as server:
        urls = [
            f"{server.url}/feeds/{slug}.{fmt}"
            for slug in REGISTRY
            for fmt in ("rss", "atom", "json")
        ] * 4
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda url: requests.get(url, timeout=30), urls))
        assert {r.status_code for r in responses} == {200}
        wait_until(lambda: site.hits() >= len(REGISTRY), "every category read", 20)
        for category in REGISTRY.values():
            assert site.hits(category.paths[0]) == 1, category.slug
        assert site.hits() == len(REGISTRY)
        assert len(server.workers()) == 2


def test_a_full_disk_is_logged_and_shown_and_readers_are_still_served(
    make_app: Callable[..., Flask],
    source: Source,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    source.publish(LISTED)
    before = app.test_client().get("/feeds/vok-en.atom")
    fill_the_disk(app.extensions["feedbridge"].store, monkeypatch)
    source.publish(40)
    clock.advance(TTL)
    caplog.set_level("WARNING", logger="feedbridge")
    during = app.test_client().get("/feeds/vok-en.atom")
    settle(app)
    assert (during.status_code, during.headers["X-Cache"]) == (200, "stale")
    assert during.data == before.data
    assert "event=store_error" in caplog.text and "full" in caplog.text
    store_status = app.test_client().get("/status").json["store"]
    assert store_status["state"] == "degraded"
    assert store_status["problem"] == "database or disk is full"
    assert app.test_client().get("/feeds/vok-en.atom").status_code == 200
