"""The Redis store: values that survive the trip, one fetch among processes, Redis going away.

Two caches on two RedisStores of one server stand for two processes in most tests; the
last ones run the real thing, gunicorn servers started as the Procfile says.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
import redis
import requests
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Request, Response

from feedbridge import bridge as bridge_module
from feedbridge.bridge import Rendered
from feedbridge.cache import Backoff, Entry, Failure, FeedCache, State
from feedbridge.categories import load_registry
from feedbridge.errors import (
    BackingOff,
    Blocked,
    HTTPStatusError,
    LayoutChanged,
    NotHTML,
    TooLarge,
    Unreachable,
    UpstreamError,
    UpstreamTimeout,
)
from feedbridge.model import ArticleKey, Item
from feedbridge.redis_store import (
    RedisStore,
    failure_from_dict,
    failure_to_dict,
    item_from_dict,
    item_to_dict,
)
from feedbridge.scrape import parse_home, parse_listing
from feedbridge.upstream import Upstream
from tests.conftest import SITE, Clock, FakeSite
from tests.feedspec import check_feed
from tests.servers import Gunicorn, RedisServer, free_port, wait_until

REGISTRY = load_registry()
BASE = "https://kcnawatch.org"


def fixture_items() -> list[Item]:
    """Every item the saved pages give, the way the bridge reads them."""
    items = parse_home((SITE / "home.html").read_bytes(), base_url=BASE)
    for category in REGISTRY.values():
        if category.label is None:
            continue
        path = category.paths[0]
        page = SITE / "articles" / f"{path.split('/')[2]}.html"
        items += parse_listing(page.read_bytes(), label=category.label, base_url=BASE)
    return items


def test_every_item_of_the_saved_pages_survives_json() -> None:
    items = fixture_items()
    assert len(items) > 50
    for item in items:
        assert item_from_dict(json.loads(json.dumps(item_to_dict(item)))) == item


def test_the_json_form_has_every_field_of_an_item() -> None:
    """A field added to Item must be added to its JSON form too, or Redis would drop it."""
    item = fixture_items()[0]
    assert set(item_to_dict(item)) == {field.name for field in dataclasses.fields(Item)}


_text = st.text(max_size=40)
_items = st.builds(
    Item,
    key=st.builds(ArticleKey, st.integers(0, 2**40), st.text("0123456789", min_size=1)),
    title=_text,
    path=_text,
    excerpt=_text,
    listed=st.none() | st.dates(date(1990, 1, 1), date(2100, 1, 1)),
    thumbnail=st.none() | _text,
    source=st.none() | _text,
    content_html=st.none() | _text,
    original_url=st.none() | _text,
)


@given(_items)
def test_any_item_survives_json(item: Item) -> None:
    assert item_from_dict(json.loads(json.dumps(item_to_dict(item)))) == item


@pytest.mark.parametrize(
    "error",
    [
        HTTPStatusError("429", upstream_status=429, retry_after=120.0),
        HTTPStatusError("500", upstream_status=500),
        UpstreamTimeout("slow"),
        Unreachable("down"),
        Blocked("wall"),
        NotHTML("pdf"),
        TooLarge("big"),
        LayoutChanged("no items"),
        BackingOff("later", retry_after=30.0),
        UpstreamError("internal error: boom"),
    ],
)
def test_a_failure_comes_back_as_the_same_error(error: UpstreamError) -> None:
    failure = Failure(3, error, 1_774_000_000.5, 1_774_000_120.5)
    back = failure_from_dict(json.loads(json.dumps(failure_to_dict(failure))))
    assert (back.count, back.at, back.retry_at) == (3, failure.at, failure.retry_at)
    assert type(back.error) is type(error)
    assert (str(back.error), back.error.status, back.error.retry_after) == (
        str(error),
        error.status,
        error.retry_after,
    )


def test_an_entry_read_by_another_process_is_the_same(redis_url: str, clock: Clock) -> None:
    items = tuple(fixture_items()[:12])
    entry = Entry(items, "v1", clock.now, '"etag"', "Sun, 22 Mar 2026 00:00:00 GMT", "/")
    RedisStore(redis_url, clock=clock).save("all", entry, 600)
    assert RedisStore(redis_url, clock=clock).load("all") == entry


def test_a_fresh_entry_once_read_is_served_from_memory(redis_url: str, clock: Clock) -> None:
    """Only a stale entry is ever replaced, so a fresh one needs no trip to Redis."""
    reader = RedisStore(redis_url, clock=clock, local_for=600)
    writer = RedisStore(redis_url, clock=clock)
    writer.save("k", Entry((), "v1", clock.now), 3600)
    assert reader.load("k").version == "v1"  # type: ignore[union-attr]
    writer.save("k", Entry((), "v2", clock.now + 1), 3600)
    assert reader.load("k").version == "v1"  # type: ignore[union-attr]
    clock.advance(600)
    assert reader.load("k").version == "v2"  # type: ignore[union-attr]


def test_an_unreadable_entry_is_no_entry(redis_url: str, clock: Clock) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset("feedbridge:entry:all", mapping={"meta": '{"format": 0}', "items": "[]"})
    client.set("feedbridge:failure:all", "not json")
    store = RedisStore(redis_url, clock=clock)
    assert store.load("all") is None
    assert store.failure("all") is None
    assert store.describe()["state"] == "ok"  # Redis answered: the value was the problem


# Locks


def test_a_lock_is_released_only_by_its_holder(redis_url: str) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)
    assert one.try_lock("k", "token-1", 60)
    assert not two.try_lock("k", "token-2", 60)
    two.unlock("k", "token-2")  # not its lock: nothing happens
    assert one.locked("k") and two.locked("k")
    one.unlock("k", "token-1")
    assert not two.locked("k")


def test_an_expired_lock_taken_by_another_is_not_released_by_the_first(redis_url: str) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)
    client = redis.Redis.from_url(redis_url)
    assert one.try_lock("k", "token-1", 60)
    client.pexpire("feedbridge:lock:k", 1)  # the holder took longer than its lock lasts
    wait_until(lambda: not client.exists("feedbridge:lock:k"), "lock expiry", 5)
    assert two.try_lock("k", "token-2", 60)
    one.unlock("k", "token-1")
    assert client.get("feedbridge:lock:k") == b"token-2"


# Two caches on one Redis: what two processes do


class Loader:
    """Counts calls, can hold them at a gate, and fails with ``error`` when set."""

    def __init__(self, version: str = "v1") -> None:
        self.calls = 0
        self.version = version
        self.error: Exception | None = None
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, previous: Entry | None) -> Entry:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(10)
        if self.error:
            raise self.error
        return Entry(items=(), version=self.version)


@pytest.fixture
def pair(redis_url: str, clock: Clock) -> tuple[FeedCache, FeedCache]:
    def cache() -> FeedCache:
        return FeedCache(
            ttl=600,
            stale_ttl=3600,
            clock=clock,
            backoff=Backoff(30, 1800, lambda: 1.0),
            store=RedisStore(redis_url, clock=clock),
            lock_ttl=30,
            poll_interval=0.01,
        )

    return cache(), cache()


def test_a_miss_in_another_process_waits_for_the_fetch_running(
    pair: tuple[FeedCache, FeedCache],
) -> None:
    one, two = pair
    first, second = Loader("v1"), Loader("v2")
    first.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        leading = pool.submit(one.get, "k", first)
        assert first.entered.wait(10)
        waiting = pool.submit(two.get, "k", second)
        wait_until(lambda: "k" in two._inflight, "the second process's lookup", 10)
        first.gate.set()
        lookups = [leading.result(10), waiting.result(10)]
    assert [lookup.entry.version for lookup in lookups] == ["v1", "v1"]
    assert {lookup.state for lookup in lookups} == {State.MISS}
    assert (first.calls, second.calls) == (1, 0)


def test_a_stale_entry_is_served_while_another_process_refreshes(
    pair: tuple[FeedCache, FeedCache], clock: Clock
) -> None:
    one, two = pair
    first, second = Loader("v1"), Loader("v2")
    one.get("k", first)
    clock.advance(601)
    first.gate.clear()
    first.entered.clear()
    assert one.get("k", first).state is State.STALE
    assert first.entered.wait(10)  # one's refresh holds the lock
    stale = two.get("k", second)
    two.drain(10)
    assert (stale.state, stale.entry.version) == (State.STALE, "v1")
    first.gate.set()
    one.drain(10)
    assert (first.calls, second.calls) == (2, 0)
    assert two.get("k", second).state is State.HIT


def test_a_failure_in_another_process_is_passed_on_not_repeated(
    pair: tuple[FeedCache, FeedCache],
) -> None:
    one, two = pair
    first, second = Loader(), Loader()
    first.error = HTTPStatusError("the site answered 500", upstream_status=500)
    first.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        leading = pool.submit(one.get, "k", first)
        assert first.entered.wait(10)
        waiting = pool.submit(two.get, "k", second)
        wait_until(lambda: "k" in two._inflight, "the second process's lookup", 10)
        first.gate.set()
        for future in (leading, waiting):
            with pytest.raises(HTTPStatusError) as raised:
                future.result(10)
            assert raised.value.status == 502
    assert (first.calls, second.calls) == (1, 0)
    assert two.failure("k").count == 1  # type: ignore[union-attr]
    with pytest.raises(BackingOff):
        two.get("k", second)


def test_the_lock_of_a_holder_that_died_expires(
    pair: tuple[FeedCache, FeedCache], redis_url: str
) -> None:
    _, two = pair
    client = redis.Redis.from_url(redis_url)
    client.set("feedbridge:lock:k", "a-dead-worker", px=60_000)
    load = Loader()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(two.get, "k", load)
        assert not load.entered.wait(0.2)  # it waits for the holder
        client.pexpire("feedbridge:lock:k", 1)  # the holder's time is up
        assert waiting.result(10).state is State.MISS
    assert load.calls == 1


def test_the_sites_retry_after_is_shared(redis_url: str, site: FakeSite) -> None:
    path = "/newstream/1730538240-666693401/x/"
    site.override(path, Response("slow down", status=429, headers={"Retry-After": "300"}))
    one, two = (Upstream(site.url, min_interval=0, closure=RedisStore(redis_url)) for _ in range(2))
    with pytest.raises(HTTPStatusError):
        one.fetch(path)
    with pytest.raises(BackingOff) as backing_off:
        two.fetch(path)
    assert 299 < backing_off.value.retry_after <= 300  # type: ignore[operator]
    assert site.hits(path) == 1


# The app on Redis


def test_two_apps_on_one_redis_fetch_and_render_once(
    make_app: Callable[..., Flask],
    redis_url: str,
    site: FakeSite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, two = make_app(redis_url=redis_url), make_app(redis_url=redis_url)
    first = one.test_client().get("/feeds/vok-en.atom")
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
    renders = []
    monkeypatch.setattr(
        bridge_module, "render", lambda *args, **kw: renders.append(args) or b"never"
    )
    second = two.test_client().get("/feeds/vok-en.atom")
    assert second.headers["X-Cache"] == "hit"
    assert (second.data, second.headers["ETag"]) == (first.data, first.headers["ETag"])
    assert renders == []
    assert site.hits() == 1
    assert two.test_client().get("/status").json["cache"] == {"backend": "redis", "state": "ok"}


def test_an_unreadable_shared_rendering_is_made_and_saved_again(
    make_app: Callable[..., Flask], redis_url: str
) -> None:
    first = make_app(redis_url=redis_url).test_client().get("/feeds/vok-en.atom")
    client = redis.Redis.from_url(redis_url)
    memos = list(client.scan_iter("feedbridge:memo:*"))
    assert len(memos) == 1
    client.set(memos[0], b"not a rendering")
    second = make_app(redis_url=redis_url).test_client().get("/feeds/vok-en.atom")
    assert (second.status_code, second.data) == (200, first.data)
    repaired = Rendered.from_bytes(client.get(memos[0]))  # type: ignore[arg-type]
    assert (repaired.body, repaired.etag) == (first.data, first.headers["ETag"])


def test_redis_unreachable_from_the_start_serves_from_memory(
    make_app: Callable[..., Flask], site: FakeSite, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    responses = [app.test_client().get("/feeds/vok-en.rss") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["X-Cache"] for r in responses] == ["miss", "hit", "hit"]
    check_feed(responses[0].data, responses[0].content_type)
    status = app.test_client().get("/status").json
    assert status["cache"]["state"] == "degraded"
    assert status["cache"]["serving_from"] == "memory"
    assert "Connection" in status["cache"]["error"]
    assert status["categories"]["vok-en"]["items"] == 11
    events = [r.message.split()[0] for r in caplog.records if r.name.startswith("feedbridge")]
    assert events.count("event=redis_unavailable") == 1  # once, not once per operation
    assert site.hits() == 1


def test_redis_stopped_mid_run_readers_are_still_served(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    with RedisServer() as server:
        app = make_app(redis_url=server.url)
        client = app.test_client()
        assert client.get("/feeds/vok-en.atom").status_code == 200
        server.stop()
        served = client.get("/feeds/vok-en.atom")  # from the mirror in memory
        new = client.get("/feeds/pyongyang-times.json")  # from the site
    assert (served.status_code, served.headers["X-Cache"]) == (200, "hit")
    assert (new.status_code, new.headers["X-Cache"]) == (200, "miss")
    check_feed(new.data, new.content_type)
    assert client.get("/status").json["cache"]["state"] == "degraded"


def test_the_store_goes_back_to_redis_when_it_returns(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    entry = Entry(items=(), version="v1", fetched_at=clock.now)
    port = free_port()
    with RedisServer(port) as server:
        store = RedisStore(server.url, clock=clock, retry_interval=0)
        server.stop()
        store.save("k", entry, 600)
        assert store.load("k") == entry  # from memory
        assert store.describe()["state"] == "degraded"
    with RedisServer(port):
        assert store.load("k") is None  # the new Redis is empty, and used
        assert store.describe() == {"backend": "redis", "state": "ok"}
    assert [r.message.split()[0] for r in caplog.records if r.name.startswith("feedbridge")] == [
        "event=redis_unavailable",
        "event=redis_available",
    ]


# Real processes


@pytest.fixture
def gunicorn_env(site: FakeSite) -> dict[str, str]:
    return {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
        "FEEDBRIDGE_LOG_LEVEL": "WARNING",
    }


def test_two_servers_of_two_workers_fetch_each_category_once(
    site: FakeSite, gunicorn_env: dict[str, str]
) -> None:
    slugs = ["all", "kcna-kp-en", "vok-en", "pyongyang-times", "naenara-en", "minju-choson-en"]

    def urls_of(server: Gunicorn) -> list[str]:
        return [f"{server.url}/feeds/{s}.{fmt}" for s in slugs for fmt in ("rss", "atom", "json")]

    with RedisServer() as redis_server:
        env = {
            **gunicorn_env,
            "FEEDBRIDGE_REDIS_URL": redis_server.url,
            "FEEDBRIDGE_PUBLIC_URL": "https://feeds.example.org",  # the same self links
        }
        with Gunicorn(env) as one, Gunicorn(env) as two:
            urls = (urls_of(one) + urls_of(two)) * 4
            with ThreadPoolExecutor(32) as pool:
                responses = list(pool.map(lambda url: requests.get(url, timeout=30), urls))
            assert len(responses) == 144
            assert {r.status_code for r in responses} == {200}
            for slug in slugs:
                assert site.hits(REGISTRY[slug].paths[0]) == 1, slug
            assert site.hits() == len(slugs)
            for response in responses[:18]:
                check_feed(response.content, response.headers["Content-Type"])
            assert len({r.headers["ETag"] for r in responses}) == 18  # both serve the same

            counts = [_metrics(server) for server in (one, two)]
            fetched = sum(c.get(("feedbridge_upstream_requests_total", "ok"), 0) for c in counts)
            looked_up = sum(
                value
                for c in counts
                for (name, _), value in c.items()
                if name == "feedbridge_cache_lookups_total"
            )
            assert (fetched, looked_up) == (len(slugs), 144)
            statuses = [s.json() for s in (requests.get(f"{x.url}/status") for x in (one, two))]
            assert statuses[0]["categories"] == statuses[1]["categories"]
            assert statuses[0]["cache"] == {"backend": "redis", "state": "ok"}

            redis_server.stop()
            with ThreadPoolExecutor(16) as pool:
                after = list(pool.map(lambda url: requests.get(url, timeout=30), urls[:36]))
            assert {r.status_code for r in after} == {200}
            degraded = requests.get(f"{one.url}/status").json()["cache"]
            assert degraded["state"] == "degraded"


def test_a_worker_killed_while_fetching_leaves_a_lock_that_expires(
    site: FakeSite, gunicorn_env: dict[str, str], redis_url: str
) -> None:
    anchor = REGISTRY["vok-en"].paths[0]
    release = threading.Event()

    def stuck(request: Request) -> Response:
        release.wait(10)
        return Response((SITE / "articles" / "1730538240-666693401.html").read_bytes())

    site.override(anchor, stuck)
    lock = redis.Redis.from_url(redis_url)
    # TIMEOUT=1: a fetch lock lasts 3 anchors x 1 s + 1 s.
    env = {**gunicorn_env, "FEEDBRIDGE_REDIS_URL": redis_url, "FEEDBRIDGE_TIMEOUT": "1"}
    with Gunicorn(env) as server, ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(requests.get, f"{server.url}/feeds/vok-en.atom", timeout=30)
        wait_until(lambda: site.hits(anchor) == 1, "the fetch", 10)
        assert lock.exists("feedbridge:lock:vok-en")
        for pid in server.workers():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(requests.ConnectionError):
            doomed.result(10)
        release.set()
        site.override(anchor, (SITE / "articles" / "1730538240-666693401.html").read_bytes())
        assert lock.exists("feedbridge:lock:vok-en")  # nobody released it
        response = requests.get(f"{server.url}/feeds/vok-en.atom", timeout=30)
    assert response.status_code == 200
    check_feed(response.content, response.headers["Content-Type"])
    assert site.hits(anchor) == 2
    assert not lock.exists("feedbridge:lock:vok-en")


def _metrics(server: Gunicorn) -> dict[tuple[str, str], float]:
    """Sample values of the server's /metrics, by name and the last label's value."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = list(sample.labels.values())[-1] if sample.labels else ""
            key = (sample.name, label)
            values[key] = values.get(key, 0) + sample.value
    return values
