"""The cache's state in Redis, shared by every process and machine that uses the server.

Entries, failures (back-off), fetch locks, rendered feeds and the site's Retry-After
live in Redis with TTLs, so N processes fetch a category once per TTL between them and
serve the same bytes. Values are JSON written by the explicit functions below, never
pickles: whoever can write to Redis cannot make the bridge run code.

Redis is a cache, not a dependency of serving: every operation that fails falls back
to a :class:`~feedbridge.cache.MemoryStore`, which also mirrors what this process has
read, so while Redis is away the bridge goes on from memory (with single flight
within each process only) and says so in ``/status`` and, at most once a minute, in
the log. Redis is tried again ``retry_interval`` seconds after a failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feedbridge.cache import Entry, Failure, MemoryStore
from feedbridge.errors import HTTPStatusError, UpstreamError
from feedbridge.model import ArticleKey, Item
from feedbridge.text import logfmt
from feedbridge.upstream import LocalClosure

log = logging.getLogger(__name__)
T = TypeVar("T")
FORMAT = 1  # of the stored entries; another one is read as no entry
LOG_EVERY = 60.0  # seconds between two log lines about Redis being unreachable

# Release a lock only if it is still ours: it may have expired and been taken since.
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Close the site for ARGV[1] ms unless it already is for longer.
_CLOSE = """
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], '1', 'px', ARGV[1])
end
return 0
"""


class RedisStore:
    """A :class:`~feedbridge.cache.Store` in Redis, and the site's shared Retry-After."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        maxsize: int = 256,
        prefix: str = "feedbridge:",
        retry_interval: float = 5.0,
        local_for: float = 0.0,
        options: dict[str, str] | None = None,
    ) -> None:
        """``local_for``: seconds after its fetch during which an entry this process has
        read is served from its memory without asking Redis. The cache's TTL is right:
        a fresh entry is never replaced, only a stale one is refreshed. ``options``: more
        of ``redis.Redis.from_url``'s (see :func:`feedbridge.config.redis_client_options`)."""
        self._redis = redis.Redis.from_url(
            url,
            **(options or {}),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),  # once, for a connection Redis closed meanwhile
            health_check_interval=30,
        )
        self._clock = clock
        self._prefix = prefix
        self._retry_interval = retry_interval
        self._local_for = local_for
        self.memory = MemoryStore(maxsize, clock=clock)
        self._local_closure = LocalClosure()
        self._unlock = self._redis.register_script(_UNLOCK)
        self._close = self._redis.register_script(_CLOSE)
        self._state = threading.Lock()
        self._down_until = 0.0  # time.monotonic(): skip Redis until then
        self._problem: tuple[str, float] | None = None  # the error, and since when
        self._logged_at = float("-inf")

    def describe(self) -> dict[str, object]:
        problem = self._problem
        if problem is None:
            return {"backend": "redis", "state": "ok"}
        error, since = problem
        return {
            "backend": "redis",
            "state": "degraded",
            "serving_from": "memory",
            "error": error,
            "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"),
        }

    def load(self, key: str) -> Entry | None:
        known = self.memory.load(key)
        if known is not None and self._clock() - known.fetched_at < self._local_for:
            return known
        return self._attempt(lambda r: self._read(r, key, known), lambda: known)

    def save(self, key: str, entry: Entry, ttl: float) -> None:
        self.memory.save(key, entry, ttl)
        fields = {
            "meta": json.dumps(_meta(entry, expires_at=self._clock() + ttl)),
            "items": json.dumps([item_to_dict(item) for item in entry.items]),
        }

        def write(r: redis.Redis) -> None:
            with r.pipeline() as pipe:  # MULTI: both fields and the TTL at once
                pipe.hset(self._key("entry", key), mapping=fields)
                pipe.pexpire(self._key("entry", key), _ms(ttl))
                pipe.execute()

        self._attempt(write, lambda: None)

    def failure(self, key: str) -> Failure | None:
        def read(r: redis.Redis) -> Failure | None:
            raw = r.get(self._key("failure", key))
            return _decoded(raw, lambda r: failure_from_dict(json.loads(r)), "failure")

        return self._attempt(read, lambda: self.memory.failure(key))

    def save_failure(self, key: str, failure: Failure, ttl: float) -> None:
        self.memory.save_failure(key, failure, ttl)
        raw = json.dumps(failure_to_dict(failure))
        self._attempt(lambda r: r.set(self._key("failure", key), raw, px=_ms(ttl)), lambda: None)

    def try_lock(self, key: str, token: str, ttl: float) -> bool:
        return self._attempt(
            lambda r: bool(r.set(self._key("lock", key), token, nx=True, px=_ms(ttl))),
            lambda: self.memory.try_lock(key, token, ttl),
        )

    def unlock(self, key: str, token: str) -> None:
        # Both: the lock may have been taken in memory while Redis was away.
        self.memory.unlock(key, token)
        self._attempt(lambda _r: self._unlock(keys=[self._key("lock", key)], args=[token]), _none)

    def locked(self, key: str) -> bool:
        return self._attempt(
            lambda r: bool(r.exists(self._key("lock", key))), lambda: self.memory.locked(key)
        )

    def memo_get(self, key: str) -> bytes | None:
        return self._attempt(lambda r: r.get(self._key("memo", key)), _none)

    def memo_set(self, key: str, value: bytes, ttl: float) -> None:
        self._attempt(lambda r: r.set(self._key("memo", key), value, px=_ms(ttl)), _none)

    # The site's Retry-After (feedbridge.upstream.Closure), on Redis's own clock.

    def closed_for(self) -> float:
        def read(r: redis.Redis) -> float:
            return max(0.0, r.pttl(self._key("site", "closed")) / 1000)

        return self._attempt(read, self._local_closure.closed_for)

    def close_for(self, seconds: float) -> None:
        self._local_closure.close_for(seconds)
        self._attempt(
            lambda _r: self._close(keys=[self._key("site", "closed")], args=[_ms(seconds)]), _none
        )

    def _read(self, r: redis.Redis, key: str, known: Entry | None) -> Entry | None:
        """The entry, its items decoded once per version: the mirror in memory has them."""
        name = self._key("entry", key)
        meta = _decoded(r.hget(name, "meta"), _meta_from_json, "entry")
        if meta is None:
            return None
        if known is not None and known.version == meta["version"]:
            items = known.items
        else:
            raw_meta, raw_items = r.hmget(name, ["meta", "items"])  # a consistent pair
            meta = _decoded(raw_meta, _meta_from_json, "entry")
            items = _decoded(raw_items, _items_from_json, "entry")
            if meta is None or items is None:
                return None
        entry = _entry(meta, items)
        if known is None or known.fetched_at != entry.fetched_at:
            self.memory.save(key, entry, meta["expires_at"] - self._clock())
        return entry

    def _attempt(self, operation: Callable[[redis.Redis], T], fallback: Callable[[], T]) -> T:
        """``operation`` on Redis; ``fallback()`` when Redis fails or failed a moment ago."""
        if time.monotonic() < self._down_until:
            return fallback()
        try:
            result = operation(self._redis)
        except redis.RedisError as exc:
            self._went_wrong(exc)
            return fallback()
        if self._problem is not None:
            self._came_back()
        return result

    def _went_wrong(self, exc: redis.RedisError) -> None:
        with self._state:
            now = time.monotonic()
            self._down_until = now + self._retry_interval
            if self._problem is None:
                self._problem = (f"{type(exc).__name__}: {exc}", time.time())
            if now - self._logged_at < LOG_EVERY:
                return
            self._logged_at = now
        log.warning(
            logfmt(event="redis_unavailable", serving_from="memory", error=f"{exc}")
        )  # fmt: skip

    def _came_back(self) -> None:
        with self._state:
            if self._problem is None:
                return
            self._problem = None
            self._logged_at = float("-inf")
        log.warning(logfmt(event="redis_available", serving_from="redis"))

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"


# Explicit JSON forms of the cached values.


def item_to_dict(item: Item) -> dict[str, Any]:
    return {
        "key": [item.key.ts, item.key.id],
        "title": item.title,
        "path": item.path,
        "excerpt": item.excerpt,
        "listed": item.listed.isoformat() if item.listed else None,
        "thumbnail": item.thumbnail,
        "source": item.source,
        "content_html": item.content_html,
        "original_url": item.original_url,
    }


def item_from_dict(data: dict[str, Any]) -> Item:
    ts, article_id = data["key"]
    return Item(
        key=ArticleKey(int(ts), str(article_id)),
        title=data["title"],
        path=data["path"],
        excerpt=data["excerpt"],
        listed=date.fromisoformat(data["listed"]) if data["listed"] else None,
        thumbnail=data["thumbnail"],
        source=data["source"],
        content_html=data["content_html"],
        original_url=data["original_url"],
    )


def failure_to_dict(failure: Failure) -> dict[str, Any]:
    error = failure.error
    return {
        "count": failure.count,
        "at": failure.at,
        "retry_at": failure.retry_at,
        "kind": error.kind,
        "message": str(error),
        "retry_after": error.retry_after,
        "upstream_status": getattr(error, "upstream_status", None),
    }


def failure_from_dict(data: dict[str, Any]) -> Failure:
    return Failure(data["count"], _error(data), data["at"], data["retry_at"])


def _error(data: dict[str, Any]) -> UpstreamError:
    """The error again, of the same class, so that a reader gets the same status."""
    kind, message, retry_after = data["kind"], data["message"], data["retry_after"]
    if kind == HTTPStatusError.kind:
        return HTTPStatusError(
            message, upstream_status=int(data["upstream_status"]), retry_after=retry_after
        )
    cls = next((c for c in _error_classes(UpstreamError) if c.kind == kind), UpstreamError)
    return cls(message, retry_after=retry_after)


def _error_classes(cls: type[UpstreamError]) -> list[type[UpstreamError]]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _error_classes(direct)]


def _meta(entry: Entry, *, expires_at: float) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": entry.version,
        "fetched_at": entry.fetched_at,
        "etag": entry.etag,
        "last_modified": entry.last_modified,
        "source_path": entry.source_path,
        "expires_at": expires_at,  # on the cache's clock, for the mirror in memory
    }


def _meta_from_json(raw: bytes) -> dict[str, Any]:
    meta = json.loads(raw)
    if meta["format"] != FORMAT:
        raise ValueError(f"entry format {meta['format']!r}, not {FORMAT}")
    missing = {"version", "fetched_at", "etag", "last_modified", "source_path", "expires_at"}
    missing -= meta.keys()
    if missing:
        raise KeyError(", ".join(sorted(missing)))
    return meta


def _entry(meta: dict[str, Any], items: tuple[Item, ...]) -> Entry:
    return Entry(
        items=items,
        version=meta["version"],
        fetched_at=meta["fetched_at"],
        etag=meta["etag"],
        last_modified=meta["last_modified"],
        source_path=meta["source_path"],
    )


def _items_from_json(raw: bytes) -> tuple[Item, ...]:
    return tuple(item_from_dict(data) for data in json.loads(raw))


def _decoded(raw: Any, decode: Callable[[Any], T], what: str) -> T | None:
    """``decode(raw)``; None, and a log line, when it is not what this version wrote."""
    if raw is None:
        return None
    try:
        return decode(raw)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(logfmt(event="redis_unreadable", value=what, error=repr(exc)))
        return None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _none() -> None:
    return None
