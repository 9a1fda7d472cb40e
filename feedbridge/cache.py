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

The policy lives here once; where its state lives is a :class:`Store`: this
process's memory (:class:`MemoryStore`, the default) or a Redis server shared by
several processes and machines (:class:`feedbridge.redis_store.RedisStore`). Single
flight has two layers: the callers in one process share one ``Future`` per key, and
the caller leading it takes the store's lock of the key before fetching, so one
process among all that share the store fetches. A process that finds the lock taken
serves what it has (stale) or, with nothing to serve, polls the store until the
entry appears or the lock is gone (released, or expired with a holder that died).

Time comes from an injectable ``clock`` (wall-clock seconds), so tests drive expiry
without sleeping; only the wait for another process's fetch runs on real time.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cachetools import LRUCache, TLRUCache

from feedbridge.errors import BackingOff, UpstreamError, UpstreamTimeout
from feedbridge.model import Item
from feedbridge.text import logfmt

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
    """The last failure of a key; ``count`` 0 once a success has resolved it."""

    count: int  # consecutive failures, up to now
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


@dataclass(frozen=True, slots=True)
class Inspection:
    """What the cache holds for a key, read without fetching (for ``/status``)."""

    entry: Entry | None
    failure: Failure | None
    stale: bool  # the entry is past its TTL: served as it is until a refresh lands
    backing_off_until: float | None


class Store(Protocol):
    """Where a :class:`FeedCache` keeps its state. ``ttl`` arguments are in seconds.

    ``ttl`` tells the store when it may forget a value; the cache applies its own
    limits to what it reads, so a store may keep a value longer. A lock is held by the
    ``token`` that took it, until released with that token or until its ``ttl`` ends.
    """

    def describe(self) -> dict[str, object]: ...

    def load(self, key: str) -> Entry | None: ...

    def save(self, key: str, entry: Entry, ttl: float) -> None: ...

    def failure(self, key: str) -> Failure | None: ...

    def save_failure(self, key: str, failure: Failure, ttl: float) -> None: ...

    def try_lock(self, key: str, token: str, ttl: float) -> bool: ...

    def unlock(self, key: str, token: str) -> None: ...

    def locked(self, key: str) -> bool: ...

    def memo_get(self, key: str) -> bytes | None: ...

    def memo_set(self, key: str, value: bytes, ttl: float) -> None: ...


class MemoryStore:
    """The state of one process: bounded cachetools caches expiring on the cache's clock.

    Its locks never expire: their holders are threads of this process, which always
    release them, and a process that dies takes its locks with it.
    """

    def __init__(self, maxsize: int = 256, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: TLRUCache[str, tuple[Entry, float]] = TLRUCache(
            maxsize, _expiry, timer=clock
        )
        self._failures: TLRUCache[str, tuple[Failure, float]] = TLRUCache(
            maxsize, _expiry, timer=clock
        )
        self._locks: dict[str, str] = {}

    def describe(self) -> dict[str, object]:
        return {"backend": "memory"}

    def load(self, key: str) -> Entry | None:
        with self._lock:
            found = self._entries.get(key)
        return found[0] if found else None

    def save(self, key: str, entry: Entry, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (entry, self._clock() + ttl)

    def failure(self, key: str) -> Failure | None:
        with self._lock:
            found = self._failures.get(key)
        return found[0] if found else None

    def save_failure(self, key: str, failure: Failure, ttl: float) -> None:
        with self._lock:
            self._failures[key] = (failure, self._clock() + ttl)

    def try_lock(self, key: str, token: str, ttl: float) -> bool:
        with self._lock:
            return self._locks.setdefault(key, token) == token

    def unlock(self, key: str, token: str) -> None:
        with self._lock:
            if self._locks.get(key) == token:
                del self._locks[key]

    def locked(self, key: str) -> bool:
        with self._lock:
            return key in self._locks

    def memo_get(self, key: str) -> bytes | None:
        """Nothing: one process's memory is not shared; FeedCache remembers in-process."""
        return None

    def memo_set(self, key: str, value: bytes, ttl: float) -> None:
        """Nothing to share with (see :meth:`memo_get`)."""


def _expiry(_key: str, value: tuple[object, float], _now: float) -> float:
    return value[1]


Loader = Callable[[Entry | None], Entry]
# To and from bytes: what lets a memoized value be shared through the store.
Codec = tuple[Callable[[T], bytes], Callable[[bytes], T]]


class _Relayed(Exception):
    """Another process's failed fetch, passed on to this one's callers without recording
    it a second time."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


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
        store: Store | None = None,
        lock_ttl: float = 60.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.store: Store = store if store is not None else MemoryStore(maxsize, clock=clock)
        self.lock_ttl = lock_ttl  # longer than any load: the lock of a dead holder expires
        self.poll_interval = poll_interval
        self._lock = threading.Lock()  # guards _inflight and _memo
        self._inflight: dict[str, Future[Entry]] = {}
        self._memo: LRUCache[Hashable, object] = LRUCache(maxsize * 4)
        self._executor = executor

    def get(self, key: str, load: Loader) -> Lookup:
        """The entry for ``key``, loading it with ``load(previous)`` when needed."""
        now = self.clock()
        entry = self._current(key, now)
        if entry is not None:
            age = now - entry.fetched_at
            if age < self.ttl:
                return Lookup(entry, State.HIT, age, self.ttl - age)
            if not self._backing_off(key, now):
                self._refresh_in_background(key, load, entry)
            return Lookup(entry, State.STALE, age, 0.0)
        failure = self.store.failure(key)
        with self._lock:
            flight = self._inflight.get(key)
            leader = flight is None
            if flight is None:
                if failure is not None and now < failure.retry_at:
                    raise BackingOff(
                        f"backing off after: {failure.error}", retry_after=failure.retry_at - now
                    )
                flight = self._inflight[key] = Future()
        if leader:
            self._lead(key, load, None, flight)
        entry = flight.result()
        return Lookup(entry, State.MISS, max(0.0, self.clock() - entry.fetched_at), self.ttl)

    def peek(self, key: str) -> Entry | None:
        """The entry if there is one, fresh or stale; never fetches."""
        return self._current(key, self.clock())

    def failure(self, key: str) -> Failure | None:
        return self.store.failure(key)

    def inspect(self, key: str) -> Inspection:
        now = self.clock()
        entry = self._current(key, now)
        failure = self.store.failure(key)
        return Inspection(
            entry=entry,
            failure=failure,
            stale=entry is not None and now - entry.fetched_at >= self.ttl,
            backing_off_until=failure.retry_at if failure and now < failure.retry_at else None,
        )

    def memo(self, key: Hashable, make: Callable[[], T], codec: Codec[T] | None = None) -> T:
        """``make()``, remembered under ``key`` (bounded): for renderings of an entry.

        With a ``codec`` the value is shared through the store as well, so that the
        processes sharing a store make it once between them.
        """
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[return-value]
        value = make() if codec is None else self._shared(key, make, codec)
        with self._lock:
            self._memo[key] = value
        return value

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the refreshes in flight (tests and shutdown)."""
        with self._lock:
            pending = list(self._inflight.values())
        wait(pending, timeout=timeout)

    def _refresh_in_background(self, key: str, load: Loader, previous: Entry) -> None:
        with self._lock:
            if key in self._inflight:
                return
            flight = self._inflight[key] = Future()
        self._pool().submit(self._lead, key, load, previous, flight)

    def _lead(self, key: str, load: Loader, previous: Entry | None, flight: Future[Entry]) -> None:
        """Run this process's flight for ``key``; every caller waiting on it gets the outcome.

        A refresh (``previous`` is set) ends with ``previous`` when it fails: stale-if-error.
        """
        started = time.perf_counter()
        try:
            entry = self._load_once(key, load, previous)
        except _Relayed as relayed:
            self._land(key, flight, error=relayed.error)
        except UpstreamError as exc:
            self._record_failure(key, exc, stale=previous is not None, started=started)
            self._land(key, flight, previous, exc)
        except Exception as exc:
            if previous is None:
                self._land(key, flight, error=exc)  # the caller's request reports it
            else:
                log.exception("refresh of %s failed unexpectedly", key)
                internal = UpstreamError(f"internal error: {exc!r}")
                self._record_failure(key, internal, stale=True, started=started)
                self._land(key, flight, previous)
        except BaseException as exc:
            self._land(key, flight, error=exc)
            raise
        else:
            self._land(key, flight, entry)

    def _land(
        self,
        key: str,
        flight: Future[Entry],
        entry: Entry | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._lock:
            del self._inflight[key]
        if entry is not None:
            flight.set_result(entry)
        else:
            flight.set_exception(error)

    def _load_once(self, key: str, load: Loader, previous: Entry | None) -> Entry:
        """``load`` run by one process among all that share the store.

        The others serve ``previous`` (stale) when they have it, or wait for the entry.
        """
        token = secrets.token_hex(16)
        give_up = time.monotonic() + self.lock_ttl + 1.0
        while True:
            if self.store.try_lock(key, token, self.lock_ttl):
                try:
                    # Another process may have loaded it, or failed to, since we looked.
                    now = self.clock()
                    current = self._current(key, now)
                    if current is not None and now - current.fetched_at < self.ttl:
                        return current
                    failure = self.store.failure(key)
                    if failure is not None and now < failure.retry_at:
                        if previous is not None:
                            return previous
                        raise _Relayed(failure.error)
                    return self._save(key, load(current or previous))
                finally:
                    self.store.unlock(key, token)
            if previous is not None:
                return previous  # another process is refreshing it
            entry = self._await_peer(key, give_up)
            if entry is not None:
                return entry
            failure = self.store.failure(key)
            if failure is not None and self.clock() < failure.retry_at:
                raise _Relayed(failure.error)

    def _await_peer(self, key: str, give_up: float) -> Entry | None:
        """Poll while another process holds the lock: its entry, or None if it let go
        without one (then the caller tries the lock again)."""
        while self.store.locked(key):
            if time.monotonic() >= give_up:
                raise _Relayed(UpstreamTimeout(f"another process is still fetching {key}"))
            time.sleep(self.poll_interval)
            entry = self._current(key, self.clock())
            if entry is not None:
                return entry
        return self._current(key, self.clock())

    def _current(self, key: str, now: float) -> Entry | None:
        """The stored entry, unless it is past the stale limit (whatever the store keeps)."""
        entry = self.store.load(key)
        if entry is None or now - entry.fetched_at >= self.stale_ttl:
            return None
        return entry

    def _save(self, key: str, entry: Entry) -> Entry:
        entry = dataclasses.replace(entry, fetched_at=self.clock())
        self.store.save(key, entry, self.stale_ttl)
        failure = self.store.failure(key)
        if failure is not None and failure.count:
            # Resolved: no more back-off, but /status still tells what went wrong last.
            resolved = dataclasses.replace(failure, count=0, retry_at=0.0)
            self.store.save_failure(key, resolved, self.stale_ttl)
        return entry

    def _record_failure(
        self, key: str, error: UpstreamError, *, stale: bool, started: float
    ) -> None:
        now = self.clock()
        previous = self.store.failure(key)
        count = previous.count + 1 if previous else 1
        delay = self.backoff.delay(count, error.retry_after)
        failure = Failure(count, error, now, now + delay)
        self.store.save_failure(key, failure, self.stale_ttl + delay)
        log.warning(
            logfmt(
                event="failure", category=key, kind=error.kind, status=error.status,
                duration_ms=round((time.perf_counter() - started) * 1000), failures=count,
                retry_in_s=round(delay), serving="stale" if stale else "error", error=str(error),
            )
        )  # fmt: skip

    def _backing_off(self, key: str, now: float) -> bool:
        failure = self.store.failure(key)
        return failure is not None and now < failure.retry_at

    def _shared(self, key: Hashable, make: Callable[[], T], codec: Codec[T]) -> T:
        encode, decode = codec
        name = hashlib.sha256(repr(key).encode("utf-8", "surrogatepass")).hexdigest()
        raw = self.store.memo_get(name)
        if raw is not None:
            try:
                return decode(raw)
            except ValueError:
                log.warning("ignoring an unreadable shared rendering %s", name)
        value = make()
        self.store.memo_set(name, encode(value), self.stale_ttl)
        return value

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(2, thread_name_prefix="feedbridge-refresh")
        return self._executor
