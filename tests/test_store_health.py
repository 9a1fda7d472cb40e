"""The store's health is the truth: what ``/status`` says of it, and what is logged.

:class:`~feedbridge.store.Health` on its own (a clock moved by hand), then a real
redis-server that evicts keys, refuses writes when full, or lost a category's members.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY as METRICS

from feedbridge import redis_store
from feedbridge.model import ArticleKey, Item
from feedbridge.redis_store import RedisStore, namespace
from feedbridge.store import LOG_EVERY, Health, Listing, StoreError
from tests.conftest import Clock
from tests.servers import RedisServer

BASE = "https://kcnawatch.org"


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "feedbridge.store"]


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health("test", down_event="down", up_event="up", clock=clock)


def test_a_failed_write_stays_until_a_write_succeeds(health: Health) -> None:
    health.failed("database or disk is full", writing=True)
    health.succeeded(writing=False)
    assert health.describe()["state"] == "degraded"
    assert health.describe()["problem"] == "database or disk is full"
    health.succeeded(writing=True)
    assert health.describe() == {"backend": "test", "state": "ok"}


def test_a_failed_read_goes_with_the_next_success(health: Health) -> None:
    health.failed("unreachable", writing=False)
    assert health.describe()["problem"] == "unreachable"
    health.succeeded(writing=False)
    assert health.describe()["state"] == "ok"


def test_each_change_is_logged_once_and_a_flapping_store_once_a_minute(
    health: Health, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "feedbridge.store")
    for _ in range(725):
        health.failed("unreachable", writing=False, detail="ConnectionError: refused")
        health.failed("unreachable", writing=False)
        health.succeeded(writing=False)
    assert events(caplog) == [
        'event=down problem=unreachable error="ConnectionError: refused"',
        "event=up",
    ]
    clock.advance(LOG_EVERY)
    health.failed("timeout", writing=False)
    health.failed("unreachable", writing=False)  # the same problem, still: not logged
    health.succeeded(writing=False)
    assert events(caplog)[2:] == ["event=down problem=timeout", "event=up"]


def test_a_set_up_problem_is_degraded_while_it_lasts_and_logged_on_each_change(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "feedbridge.store")
    for _ in range(3):
        health.set_up(("evicting", "policy a"))
    described = health.describe()
    assert (described["state"], described["problem"], described["reason"]) == (
        "degraded", "evicting", "policy a",
    )  # fmt: skip
    health.set_up(("evicting", "policy b"))
    health.set_up(None)
    assert health.describe()["state"] == "ok"
    assert events(caplog) == [
        'event=down problem=evicting reason="policy a"',
        'event=down problem=evicting reason="policy b"',
        "event=up",
    ]


# --- a real Redis ------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: its memory settings change."""
    with RedisServer() as server:
        yield server


def story(n: int, size: int = 0) -> Item:
    ts = 1_773_000_000 + n * 600
    return Item(
        key=ArticleKey(ts, str(100_000_000 + n)),
        title=f"Story {n}",
        path=f"/newstream/{ts}-{100_000_000 + n}/story-{n}/",
        excerpt="x" * size,
    )


def listing(numbers: range, size: int = 0) -> Listing:
    return Listing(items=tuple(story(n, size) for n in reversed(numbers)))


def test_an_evicting_redis_is_degraded_with_the_reason(
    own_redis: RedisServer, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "feedbridge.store")
    admin = redis.Redis.from_url(own_redis.url)
    store = RedisStore(own_redis.url, upstream_url=BASE, clock=clock, setup_check=0)
    store.merge("vok-en", listing(range(1, 4)), now=clock.now)
    assert store.describe() == {"backend": "redis", "state": "ok"}

    admin.config_set("maxmemory", "2mb")
    admin.config_set("maxmemory-policy", "allkeys-lru")
    for start in range(0, 400, 20):  # ~4 MB of stories into 2 MB
        store.merge("vok-en", listing(range(start, start + 20), size=10_000), now=clock.now)
    assert store.newest("vok-en", 500), "what is left is served"
    store.state("vok-en")
    described = store.describe()
    assert (described["state"], described["problem"]) == ("degraded", "evicting")
    assert "allkeys-lru" in str(described["reason"])
    assert int(described["evicted_keys"]) > 0  # type: ignore[call-overload]

    admin.config_set("maxmemory-policy", "allkeys-random")
    store.state("vok-en")
    assert "allkeys-random" in str(store.describe()["reason"])
    admin.config_set("maxmemory-policy", "volatile-lru")  # stories have no TTL
    store.state("vok-en")
    assert store.describe()["state"] == "ok"
    said = [e.split(" reason=")[0] for e in events(caplog)]
    assert said == ["event=redis_unavailable problem=evicting"] * 2 + ["event=redis_available"]
    store.close()


def test_writes_refused_for_memory_stay_degraded_until_one_succeeds(
    own_redis: RedisServer, clock: Clock
) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    store = RedisStore(own_redis.url, upstream_url=BASE, clock=clock, setup_check=0)
    store.merge("vok-en", listing(range(1, 4)), now=clock.now)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used + 50_000))  # noeviction: Redis's default
    with pytest.raises(StoreError):
        for start in range(4, 400, 20):
            store.merge("vok-en", listing(range(start, start + 20), size=10_000), now=clock.now)
    assert store.describe()["problem"] == "out-of-memory"
    assert len(store.newest("vok-en", 500)) == 3, "reads go on; the refused merge wrote nothing"
    assert store.describe()["state"] == "degraded", "a read says nothing of writes"
    admin.config_set("maxmemory", "0")
    store.merge("vok-en", listing(range(500, 501)), now=clock.now)
    assert store.describe() == {"backend": "redis", "state": "ok"}
    store.close()


def test_members_or_stories_found_gone_are_counted_once(redis_url: str, clock: Clock) -> None:
    store = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    store.merge("kcna-en", listing(range(1, 6)), now=clock.now)
    before = METRICS.get_sample_value("feedbridge_stories_lost_total", {"category": "kcna-en"})
    members = f"{namespace(BASE)}members:kcna-en"
    redis.Redis.from_url(redis_url).zrem(members, str(story(1).key), str(story(2).key))
    assert store.state("kcna-en").stories == 3
    assert store.state("kcna-en").stories == 3
    after = METRICS.get_sample_value("feedbridge_stories_lost_total", {"category": "kcna-en"})
    assert (after or 0) - (before or 0) == 2
    store.merge("kcna-en", listing(range(6, 7)), now=clock.now)
    store.state("kcna-en")
    again = METRICS.get_sample_value("feedbridge_stories_lost_total", {"category": "kcna-en"})
    assert again == after, "new members are no loss"

    redis.Redis.from_url(redis_url).delete(f"{namespace(BASE)}story:{story(6).key}")
    assert [item.title for item in store.newest("kcna-en", 50)] == ["Story 5", "Story 4", "Story 3"]
    assert store.state("kcna-en").stories == 3
    gone = METRICS.get_sample_value("feedbridge_stories_lost_total", {"category": "kcna-en"})
    assert (gone or 0) - (after or 0) == 1, "a member whose story was evicted is lost too"
    store.close()


def test_search_looks_at_the_newest_keep_stories_only(redis_url: str, clock: Clock) -> None:
    store = RedisStore(redis_url, upstream_url=BASE, clock=clock, search_depth=30)
    store.merge("vok-en", listing(range(1, 101)), now=clock.now)
    assert [i.title for i in store.newest("vok-en", 50, ["story"])] == [
        f"Story {n}" for n in range(100, 70, -1)
    ]
    store.close()


def test_a_merge_written_under_it_every_time_gives_up_as_a_store_error(
    redis_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client writes the category between every read and write: the merge tries
    WATCH_TRIES times, then fails as a store error, never looping for ever."""
    store = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    store.merge("vok-en", listing(range(1, 3)), now=clock.now)
    other = redis.Redis.from_url(redis_url)
    plan_merge = redis_store.plan_merge
    tries: list[int] = []

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        other.hset(f"{namespace(BASE)}category:vok-en", "etag", f"x{len(tries)}")
        return plan_merge(*args, **kwargs)

    monkeypatch.setattr(redis_store, "plan_merge", meanwhile)
    with pytest.raises(StoreError):
        store.merge("vok-en", listing(range(3, 5)), now=clock.now)
    assert len(tries) == redis_store.WATCH_TRIES
    assert store.describe()["problem"] == "contention"
    assert store.state("vok-en").stories == 2, "nothing half written"
    store.close()


def test_stories_an_older_feedbridge_left_without_full_text_are_still_pending(
    redis_url: str, clock: Clock
) -> None:
    """Before the index, a story wanting full text had ``full_text_retry_at`` in its hash."""
    store = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    store.merge("vok-en", listing(range(1, 4)), now=clock.now)
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{namespace(BASE)}index:wanting", f"{namespace(BASE)}schema:")
    for n, retry_at in ((1, 0), (2, clock.now + 300)):
        client.hset(f"{namespace(BASE)}story:{story(n).key}", "full_text_retry_at", retry_at)
    fresh = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    assert [p.item.key for p in fresh.pending("vok-en", now=clock.now, limit=10)] == [story(1).key]
    later = fresh.pending("vok-en", now=clock.now + 300, limit=10)
    assert [p.item.key for p in later] == [story(2).key, story(1).key]
    store.close()
    fresh.close()
