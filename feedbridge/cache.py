"""The listing cache: single flight, stale-while-revalidate, stale-if-error, back-off.

One upstream fetch per category per TTL however many readers poll:

* fresh entry: served as it is (``hit``);
* expired entry: served at once (``stale``) while **one background refresh** runs.
  Background rather than "the first caller refreshes", so that no reader ever waits
  for the site while something servable is in hand; the refresh holds the key's
  in-flight slot, so a second expired hit does not start a second fetch;
* no entry (or older than the stale limit): the first caller fetches and every
  concurrent caller of that key waits for that one fetch (``miss``);
* failure: never stored as an entry. It is remembered with a back-off deadline
  (exponential, jittered, capped, and never shorter than the site's Retry-After);
  until then no fetch of that key is tried, stale entries keep being served, and a
  key with nothing stale answers :class:`BackingOff`.

Time comes from an injectable ``clock`` (wall-clock seconds), so tests drive expiry
without sleeping. Entries live in a cachetools ``TTLCache`` bounded in size, whose TTL
is the stale limit and whose timer is the same clock.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from cachetools import LRUCache, TTLCache

from feedbridge.errors import BackingOff, UpstreamError
from feedbridge.model import Item

log = logging.getLogger(__name__)
T = TypeVar("T")


class State(enum.Enum):
    HIT = "hit"
    MISS = "miss"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Entry:
    """A category's scraped items and what is needed to ask the site again cheaply."""

    items: tuple[Item, ...]
    version: str  # a digest of the items: changes exactly when the content does
    fetched_at: float = 0.0
    etag: str | None = None
    last_modified: str | None = None
    source_path: str = ""


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: Entry
    state: State
    age: float  # seconds since the entry was fetched
    fresh_for: float  # seconds until it expires; 0 when stale


@dataclass(frozen=True, slots=True)
class Failure:
    count: int  # consecutive failures
    error: UpstreamError
    at: float
    retry_at: float


@dataclass(frozen=True)
class Backoff:
    """Delay before retrying after ``count`` consecutive failures: base·2ⁿ⁻¹, jittered."""

    base: float = 30.0
    cap: float = 1800.0
    jitter: Callable[[], float] = random.random  # uniform in [0, 1)

    def delay(self, count: int, retry_after: float | None = None) -> float:
        exponential = min(self.cap, self.base * 2 ** min(count - 1, 32))
        jittered = exponential * (0.5 + 0.5 * self.jitter())
        return max(jittered, retry_after or 0.0)


Loader = Callable[[Entry | None], Entry]


class FeedCache:
    def __init__(
        self,
        *,
        ttl: float,
        stale_ttl: float,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        maxsize: int = 256,
        executor: Executor | None = None,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.clock = clock
        self.backoff = backoff or Backoff()
        self._lock = threading.Lock()
        self._entries: TTLCache[str, Entry] = TTLCache(maxsize, ttl=stale_ttl, timer=clock)
        self._failures: LRUCache[str, Failure] = LRUCache(maxsize)
        self._inflight: dict[str, Future[Entry]] = {}
        self._memo: LRUCache[Hashable, object] = LRUCache(maxsize * 4)
        self._executor = executor

    def get(self, key: str, load: Loader) -> Lookup:
        """The entry for ``key``, loading it with ``load(previous)`` when needed."""
        with self._lock:
            now = self.clock()
            entry = self._entries.get(key)
            if entry is not None:
                age = now - entry.fetched_at
                if age < self.ttl:
                    return Lookup(entry, State.HIT, age, self.ttl - age)
                if key not in self._inflight and not self._backing_off(key, now):
                    self._inflight[key] = self._pool().submit(self._refresh, key, load, entry)
                return Lookup(entry, State.STALE, age, 0.0)
            failure = self._failures.get(key)
            if failure is not None and now < failure.retry_at and key not in self._inflight:
                raise BackingOff(
                    f"backing off after: {failure.error}", retry_after=failure.retry_at - now
                )
            flight = self._inflight.get(key)
            leader = flight is None
            if flight is None:
                flight = self._inflight[key] = Future()
        if leader:
            self._lead(key, load, flight)
        entry = flight.result()
        return Lookup(entry, State.MISS, max(0.0, self.clock() - entry.fetched_at), self.ttl)

    def peek(self, key: str) -> Entry | None:
        """The entry if there is one, fresh or stale; never fetches."""
        with self._lock:
            return self._entries.get(key)

    def failure(self, key: str) -> Failure | None:
        with self._lock:
            return self._failures.get(key)

    def memo(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, remembered under ``key`` (bounded): for renderings of an entry."""
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            self._memo[key] = value
        return value

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the refreshes in flight (tests and shutdown)."""
        with self._lock:
            pending = list(self._inflight.values())
        wait(pending, timeout=timeout)

    def _lead(self, key: str, load: Loader, flight: Future[Entry]) -> None:
        try:
            entry = self._store(key, load(None))
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
                if isinstance(exc, UpstreamError):
                    self._record_failure(key, exc)
            if isinstance(exc, UpstreamError):
                log.warning("fetch of %s failed: %s", key, exc)
            flight.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            with self._lock:
                del self._inflight[key]
            flight.set_result(entry)

    def _refresh(self, key: str, load: Loader, previous: Entry) -> Entry:
        try:
            return self._store(key, load(previous))
        except UpstreamError as exc:
            with self._lock:
                self._record_failure(key, exc)
            log.warning("refresh of %s failed, serving stale: %s", key, exc)
            return previous
        except Exception as exc:
            log.exception("refresh of %s failed unexpectedly", key)
            with self._lock:
                self._record_failure(key, UpstreamError(f"internal error: {exc!r}"))
            return previous
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _store(self, key: str, entry: Entry) -> Entry:
        with self._lock:
            entry = dataclasses.replace(entry, fetched_at=self.clock())
            self._entries[key] = entry
            self._failures.pop(key, None)
        return entry

    def _record_failure(self, key: str, error: UpstreamError) -> None:
        now = self.clock()
        previous = self._failures.get(key)
        count = previous.count + 1 if previous else 1
        delay = self.backoff.delay(count, error.retry_after)
        self._failures[key] = Failure(count, error, now, now + delay)

    def _backing_off(self, key: str, now: float) -> bool:
        failure = self._failures.get(key)
        return failure is not None and now < failure.retry_at

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(2, thread_name_prefix="feedbridge-refresh")
        return self._executor
