"""The cache on its own: single flight, stale-while-revalidate, stale-if-error, back-off.

Every test runs on both stores: this process's memory and a real Redis server.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedbridge.cache import Backoff, Entry, FeedCache, MemoryStore, State, Store
from feedbridge.errors import BackingOff, HTTPStatusError, UpstreamTimeout
from feedbridge.redis_store import RedisStore
from tests.conftest import Clock


def entry(version: str = "v1") -> Entry:
    return Entry(items=(), version=version)


class Loader:
    """Counts calls; fails with ``error`` when set; can hold callers at a gate."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.version = "v1"
        self.previous: list[Entry | None] = []

    def __call__(self, previous: Entry | None) -> Entry:
        self.calls += 1
        self.previous.append(previous)
        self.gate.wait(5)
        if self.error:
            raise self.error
        return entry(self.version)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, clock: Clock) -> Store:
    if request.param == "memory":
        return MemoryStore(clock=clock)
    return RedisStore(request.getfixturevalue("redis_url"), clock=clock)


@pytest.fixture
def cache(clock: Clock, store: Store) -> FeedCache:
    return FeedCache(
        ttl=600, stale_ttl=3600, clock=clock, backoff=Backoff(30, 1800, lambda: 1.0), store=store
    )


def test_miss_then_hit_until_the_ttl(cache: FeedCache, clock: Clock) -> None:
    load = Loader()
    first = cache.get("k", load)
    assert (first.state, first.fresh_for) == (State.MISS, 600)
    clock.advance(599)
    second = cache.get("k", load)
    assert (second.state, round(second.fresh_for)) == (State.HIT, 1)
    assert load.calls == 1


def test_concurrent_misses_share_one_fetch(cache: FeedCache) -> None:
    load = Loader()
    load.gate.clear()
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(cache.get, "k", load) for _ in range(50)]
        for _ in range(5000):  # at most 5 s for the leader to be inside the loader
            if load.calls:
                break
            threading.Event().wait(0.001)
        load.gate.set()
        results = [f.result(5) for f in futures]
    assert load.calls == 1
    assert {r.entry.version for r in results} == {"v1"}


def test_expired_entry_is_served_stale_while_one_refresh_runs(
    cache: FeedCache, clock: Clock
) -> None:
    load = Loader()
    cache.get("k", load)
    clock.advance(601)
    load.gate.clear()
    load.version = "v2"
    stale = [cache.get("k", load) for _ in range(5)]
    assert {s.state for s in stale} == {State.STALE}
    assert stale[0].age == 601 and stale[0].entry.version == "v1"
    load.gate.set()
    cache.drain(5)
    assert load.calls == 2
    assert load.previous[-1] is not None  # the refresh may ask the site conditionally
    fresh = cache.get("k", load)
    assert (fresh.state, fresh.entry.version) == (State.HIT, "v2")


def test_outage_serves_stale_then_backs_off(cache: FeedCache, clock: Clock) -> None:
    load = Loader()
    cache.get("k", load)
    clock.advance(700)
    load.error = UpstreamTimeout("slow")
    assert cache.get("k", load).state is State.STALE
    cache.drain(5)
    assert load.calls == 2
    failure = cache.failure("k")
    assert failure is not None and failure.count == 1 and failure.retry_at == clock.now + 30
    # Within the back-off no request refreshes; stale keeps being served with its age.
    clock.advance(29)
    lookup = cache.get("k", load)
    cache.drain(5)
    assert (lookup.state, lookup.age, load.calls) == (State.STALE, 729, 2)
    clock.advance(2)
    cache.get("k", load)
    cache.drain(5)
    assert load.calls == 3
    assert cache.failure("k").count == 2  # type: ignore[union-attr]
    assert cache.failure("k").retry_at == clock.now + 60  # type: ignore[union-attr]


def test_failure_with_nothing_stale_is_raised_and_not_cached(
    cache: FeedCache, clock: Clock
) -> None:
    load = Loader()
    load.error = HTTPStatusError("500", upstream_status=500)
    with pytest.raises(HTTPStatusError):
        cache.get("k", load)
    with pytest.raises(BackingOff) as backing_off:
        cache.get("k", load)
    assert backing_off.value.status == 503 and backing_off.value.retry_after == 30
    assert load.calls == 1
    clock.advance(30)
    load.error = None
    assert cache.get("k", load).state is State.MISS
    # Resolved: no back-off left, and the count starts again; the error is remembered.
    resolved = cache.failure("k")
    assert resolved is not None and (resolved.count, resolved.retry_at) == (0, 0.0)
    assert str(resolved.error) == "500"
    clock.advance(601)
    load.error = HTTPStatusError("500 again", upstream_status=500)
    assert cache.get("k", load).state is State.STALE
    cache.drain(5)
    assert cache.failure("k").count == 1  # type: ignore[union-attr]


def test_retry_after_of_the_site_is_honoured(cache: FeedCache, clock: Clock) -> None:
    load = Loader()
    load.error = HTTPStatusError("429", upstream_status=429, retry_after=300)
    with pytest.raises(HTTPStatusError):
        cache.get("k", load)
    clock.advance(299)
    with pytest.raises(BackingOff):
        cache.get("k", load)
    clock.advance(1)
    load.error = None
    cache.get("k", load)
    assert load.calls == 2


def test_entries_past_the_stale_limit_are_gone(cache: FeedCache, clock: Clock) -> None:
    load = Loader()
    cache.get("k", load)
    clock.advance(3601)
    load.error = UpstreamTimeout("down")
    with pytest.raises(UpstreamTimeout):
        cache.get("k", load)


@pytest.mark.parametrize(("count", "expected"), [(1, 30), (2, 60), (3, 120), (7, 1800), (50, 1800)])
def test_backoff_is_exponential_and_capped(count: int, expected: float) -> None:
    assert Backoff(30, 1800, lambda: 1.0).delay(count) == expected
    assert Backoff(30, 1800, lambda: 0.0).delay(count) == expected / 2


def test_memo_is_bounded(cache: FeedCache) -> None:
    for n in range(10_000):
        cache.memo(("q", n), lambda n=n: n)
    assert len(cache._memo) <= cache._memo.maxsize
