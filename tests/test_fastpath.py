"""The cached feed's fast path: the same answers as the feed view, prepared once, and
other processes' changes seen within STATE_CHECK of the test's clock."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from flask import Flask, request_started
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder, run_wsgi_app

from feedbridge import observe
from feedbridge.bridge import FeedService
from feedbridge.errors import HTTPStatusError
from feedbridge.feeds import Format
from feedbridge.model import ArticleKey, Item
from feedbridge.prepared import Prepared
from feedbridge.redis_store import RedisStore
from feedbridge.refresh import Outcome
from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import STATE_CHECK, Failure, Listing, Store
from tests.conftest import Clock, FakeSite, settle

FEED = "/feeds/vok-en.atom"
Answer = tuple[str, list[tuple[str, str]], bytes]


@contextmanager
def routed(app: Flask) -> Iterator[list[object]]:
    """The requests the Flask app itself dispatched within the block."""
    seen: list[object] = []

    def count(_sender: Flask, **_extra: object) -> None:
        seen.append(_sender)

    with request_started.connected_to(count, app):
        yield seen


def call(wsgi: Callable[..., object], method: str = "GET", **headers: str) -> Answer:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    environ = EnvironBuilder(path=FEED, method=method, headers=named).get_environ()
    body, status, sent = run_wsgi_app(wsgi, environ, buffered=True)  # type: ignore[arg-type]
    return status, sorted(sent.to_wsgi_list()), b"".join(body)


def view(app: Flask) -> Callable[..., object]:
    """The app without its middleware: every feed answered by the feed view."""
    return lambda environ, start_response: Flask.wsgi_app(app, environ, start_response)


def test_the_fast_path_answers_as_the_view_does(app: Flask, clock: Clock) -> None:
    first = dict(call(app.wsgi_app)[1])
    assert first["X-Cache"] == "miss"
    clock.advance(100)
    etag, modified = first["ETag"], first["Last-Modified"]
    cases = [
        ({}, "200 OK"),
        ({"Accept_Encoding": "gzip, deflate"}, "200 OK"),
        ({"Accept_Encoding": "gzip;q=0"}, "200 OK"),
        ({"If_None_Match": etag}, "304 NOT MODIFIED"),
        ({"If_None_Match": f'"other", {etag.removeprefix("W/")}'}, "304 NOT MODIFIED"),
        ({"If_None_Match": "*"}, "304 NOT MODIFIED"),
        ({"If_None_Match": '"other"', "If_Modified_Since": modified}, "200 OK"),
        ({"If_Modified_Since": modified}, "304 NOT MODIFIED"),
        ({"If_Modified_Since": "Sun, 22 Mar 2026 10:29:52 GMT"}, "200 OK"),
        ({"If_Modified_Since": "not a date"}, "200 OK"),
    ]
    for method in ("GET", "HEAD"):
        for headers, status in cases:
            with routed(app) as dispatched:
                fast = call(app.wsgi_app, method, **headers)
            assert not dispatched, "answered before routing"
            assert fast == call(view(app), method, **headers), (method, headers)
            assert fast[0] == status
            assert {("X-Cache", "hit"), ("Cache-Control", "public, max-age=500")} <= set(fast[1])
            assert ("X-Content-Type-Options", "nosniff") in fast[1]
            assert ("Vary", "Accept-Encoding") in fast[1]


def test_what_the_fast_path_does_not_hold_goes_to_the_app(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    with routed(app) as dispatched:
        assert client.get(FEED).headers["X-Cache"] == "miss"  # nothing held yet
        assert client.get(FEED + "?limit=5").status_code == 200  # a selection
        assert client.post(FEED).status_code == 405
        assert client.get("/feeds/vok-en.rss").status_code == 200  # another rendering
        assert client.get(FEED, headers={"Host": "elsewhere.example"}).status_code == 200
        assert client.get(FEED, headers={"Host": "a b"}).status_code == 400  # no host
        clock.advance(601)
        assert client.get(FEED).headers["X-Cache"] == "stale"  # due: the view refreshes
    assert len(dispatched) == 7
    settle(app)
    with routed(app) as dispatched:
        assert client.get(FEED).headers["X-Cache"] == "hit"
    assert dispatched == []


def test_forwarded_headers_are_read_before_the_fast_path(app: Flask) -> None:
    client = app.test_client()
    forwarded = {"X-Forwarded-Host": "feeds.example.org", "X-Forwarded-Proto": "https"}
    for _ in range(2):
        response = client.get(FEED, headers=forwarded)
        assert b'href="https://feeds.example.org/feeds/vok-en.atom"' in response.data
    assert response.headers["X-Cache"] == "hit"
    assert b"https://feeds.example.org" not in client.get(FEED).data
    stranger = client.get(FEED, headers=forwarded, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert b"https://feeds.example.org" not in stranger.data


def test_an_answer_is_prepared_once_per_rendering_and_root(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    first = client.get(FEED)
    made: list[Prepared] = []
    original = Prepared.of

    def counted(*args: object) -> Prepared:
        made.append(original(*args))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(Prepared, "of", counted)
    for encoding in ("gzip", "identity", "gzip"):
        client.get(FEED, headers={"Accept-Encoding": encoding})
    assert made == []
    client.get(FEED, headers={"Host": "elsewhere.example"})
    assert len(made) == 1
    service: FeedService = app.extensions["feedbridge"]
    served = service.fresh(service.registry["vok-en"], Format.ATOM, "http://localhost/")
    assert served is not None
    prepared = served.prepared
    assert prepared.always == (("ETag", first.headers["ETag"]), ("Vary", "Accept-Encoding"))
    assert dict(prepared.plain) == {
        "Last-Modified": first.headers["Last-Modified"],
        "Content-Type": "application/atom+xml; charset=utf-8",
        "Content-Length": str(len(first.data)),
    }
    assert gzip.decompress(prepared.gzipped) == prepared.body == first.data
    assert dict(prepared.compressed)["Content-Length"] == str(len(prepared.gzipped))


# --- other processes' changes ----------------------------------------------------------


def newer_story() -> Item:
    ts = 1_774_500_000
    return Item(
        key=ArticleKey(ts, "300000001"),
        title="A story another process read",
        path=f"/newstream/{ts}-300000001/another/",
        source="Voice of Korea (EN)",
    )


def other_store(app: Flask, redis_url: str | None, clock: Clock) -> Store:
    """The app's store as another process opens it."""
    settings = app.config["FEEDBRIDGE"]
    if redis_url is not None:
        return RedisStore(redis_url, upstream_url=settings.upstream_url, clock=clock)
    return SQLiteStore(settings.db, clock=clock)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def test_another_process_s_change_is_served_within_the_state_check(
    make_app: Callable[..., Flask], request: pytest.FixtureRequest, clock: Clock, backend: str
) -> None:
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    app = make_app(redis_url=redis_url)
    client = app.test_client()
    before = client.get(FEED)
    assert client.get(FEED).headers["X-Cache"] == "hit"  # the state as read now
    other = other_store(app, redis_url, clock)
    try:
        kept = other.newest("vok-en", 50)
        other.merge("vok-en", Listing(items=(newer_story(), *kept)), now=clock.now)
    finally:
        other.close()
    clock.advance(STATE_CHECK / 2)
    within = client.get(FEED)
    assert (within.headers["X-Cache"], within.data) == ("hit", before.data)
    clock.advance(STATE_CHECK)
    after = client.get(FEED)
    assert after.headers["X-Cache"] == "hit"
    assert after.headers["ETag"] != before.headers["ETag"]
    assert b"A story another process read" in after.data


def test_this_process_s_own_refresh_is_served_at_once(
    app: Flask, site: FakeSite, clock: Clock
) -> None:
    client = app.test_client()
    client.get(FEED)
    clock.advance(601)
    assert client.get(FEED).headers["X-Cache"] == "stale"
    settle(app)  # the refresh, by this process
    assert client.get(FEED).headers["Cache-Control"] == "public, max-age=600"
    assert site.hits() == 2


def test_a_clock_set_back_does_not_keep_what_was_read(tmp_path: Path, clock: Clock) -> None:
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    other = SQLiteStore(tmp_path / "s.db", clock=clock)
    try:
        assert not store.state("vok-en").seen
        other.merge("vok-en", Listing(items=(newer_story(),)), now=clock.now)
        assert not store.state("vok-en").seen  # within STATE_CHECK
        clock.advance(-3600)
        assert store.state("vok-en").seen
    finally:
        store.close()
        other.close()


def test_a_refresh_decides_on_the_state_it_reads_under_its_lease(
    app: Flask, site: FakeSite, clock: Clock
) -> None:
    """Another process's failure, recorded within STATE_CHECK: the due category is not
    fetched again while that process's back-off lasts."""
    service: FeedService = app.extensions["feedbridge"]
    vok = service.registry["vok-en"]
    app.test_client().get(FEED)
    clock.advance(601)
    assert service.due(vok)
    other = other_store(app, None, clock)
    try:
        failed = HTTPStatusError("the site said 500", upstream_status=500)
        other.save_failure("vok-en", Failure(1, failed, clock.now, clock.now + 60))
    finally:
        other.close()
    assert service.due(vok), "what this process read holds within STATE_CHECK"
    assert service.refresh(vok) is Outcome.BACKING_OFF
    assert site.hits() == 1


@pytest.mark.slow
def test_a_flushed_redis_is_noticed_within_the_state_check(
    make_app: Callable[..., Flask], redis_url: str, site: FakeSite, clock: Clock
) -> None:
    app = make_app(redis_url=redis_url)
    client = app.test_client()
    kept = client.get(FEED)
    assert client.get(FEED).headers["X-Cache"] == "hit"  # the state as read now
    redis.Redis.from_url(redis_url).flushall()
    assert client.get(FEED).headers["X-Cache"] == "hit"  # within the bound
    clock.advance(STATE_CHECK)
    flushed = client.get(FEED)
    assert (flushed.headers["X-Cache"], flushed.data) == ("stale", kept.data)
    settle(app)  # the refresh puts the category back
    assert client.get(FEED).headers["X-Cache"] == "hit"
    assert site.hits() == 2


# --- counting ---------------------------------------------------------------------------


def hits(category: str) -> float:
    labels = {"category": category, "result": "hit"}
    return REGISTRY.get_sample_value("feedbridge_cache_lookups_total", labels) or 0.0


def test_hits_are_counted_in_the_process_and_added_to_the_metrics_at_a_flush() -> None:
    tally = observe.Tally(every=3600)  # its own flusher waits an hour
    before = hits("tally-test")
    for _ in range(5):
        tally.add("tally-test", "hit")
    assert hits("tally-test") == before, "kept in the process"
    tally.flush()
    assert hits("tally-test") == before + 5
    tally.flush()
    assert hits("tally-test") == before + 5, "counted once"


def test_a_scrape_adds_the_process_s_hits_first(app: Flask) -> None:
    client = app.test_client()
    client.get(FEED)
    observe.TALLY.flush()
    before = hits("vok-en")
    for _ in range(5):
        client.get(FEED)
    assert client.get("/metrics").status_code == 200
    assert hits("vok-en") == before + 5


def test_a_forked_process_adds_its_own_counts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = observe.Tally(every=3600)
    before = hits("tally-fork")
    tally.add("tally-fork", "hit")  # the parent's, not flushed yet
    monkeypatch.setattr(observe.os, "getpid", lambda: -1)  # now in a forked child
    tally.flush()
    assert hits("tally-fork") == before, "the parent's count is the parent's to add"
    tally.add("tally-fork", "hit")
    tally.flush()
    assert hits("tally-fork") == before + 1
