"""The story store in Redis, for several machines sharing one history.

The same contract as :class:`~feedbridge.sqlite_store.SQLiteStore`, in Redis structures:
a hash per story, a sorted set per category (its members, scored by publication time),
a hash per category for its state, and leases that expire on Redis's own clock. Every
key is namespaced by the upstream URL, so instances of different sites never share
state, and the keys are bounded by what the registry and the site hold: nothing a
client sends makes one.

Values are JSON written by :mod:`feedbridge.store`, never pickles: whoever can write to
Redis cannot make the bridge run code. A Redis that fails is a :class:`StoreError`;
after one, Redis is left alone for ``retry_interval`` seconds (readers get what the
process has in memory meanwhile) and the problem shows in ``/status``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feedbridge.model import ArticleKey, Item
from feedbridge.store import (
    DUPLICATE_MARGIN,
    CategoryState,
    Failure,
    Listing,
    Merged,
    MergePlan,
    Pending,
    Retention,
    StoreError,
    dedupe_window,
    failure_from_json,
    failure_to_json,
    gap_from_json,
    gap_to_json,
    item_from_dict,
    item_to_dict,
    matches,
    merged,
    next_gap,
    plan_merge,
)
from feedbridge.text import logfmt

log = logging.getLogger(__name__)
T = TypeVar("T")
LOG_EVERY = 60.0  # seconds between two log lines about Redis being unreachable
RETRY_INTERVAL = 5.0  # seconds a process leaves Redis alone after it failed
PENDING_SCAN = 200  # newest members looked at for stories without full text
SEARCH_BATCH = 500

# Take or extend a lease: ARGV[1] the token, ARGV[2] milliseconds.
_LEASE = """
local holder = redis.call('get', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
  return 1
end
return 0
"""
# Release a lease only if it is still ours: it may have expired and been taken since.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Replace a note (ARGV[3], or drop it when absent) only if it still reads ARGV[2].
_SWAP = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] then redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
else redis.call('hdel', KEYS[1], ARGV[1]) end
return 1
"""
# Close the site for ARGV[1] ms unless it already is for longer.
_CLOSE = """
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], '1', 'px', ARGV[1])
end
return 0
"""


def namespace(upstream_url: str) -> str:
    """The key prefix of one site's state: instances of different sites never meet."""
    return "feedbridge:" + hashlib.sha256(upstream_url.encode()).hexdigest()[:12] + ":"


class RedisStore:
    """A :class:`~feedbridge.store.Store` in Redis."""

    def __init__(
        self,
        url: str,
        *,
        upstream_url: str,
        clock: Callable[[], float] = time.time,
        retry_interval: float = RETRY_INTERVAL,
        options: dict[str, str] | None = None,
    ) -> None:
        """``options``: more of ``redis.Redis.from_url``'s (see
        :func:`feedbridge.config.redis_client_options`)."""
        self._redis = redis.Redis.from_url(
            url,
            **(options or {}),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),  # once, for a connection Redis closed meanwhile
            health_check_interval=30,
        )
        self._clock = clock
        self._prefix = namespace(upstream_url)
        self._retry_interval = retry_interval
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._close = self._redis.register_script(_CLOSE)
        self._swap = self._redis.register_script(_SWAP)
        self._state = threading.Lock()
        self._down_until = 0.0  # time.monotonic(): skip Redis until then
        self._problem: tuple[str, float] | None = None  # the kind of error, and since when
        self._logged_at = float("-inf")

    def describe(self) -> dict[str, object]:
        if self._problem is None:
            return {"backend": "redis", "state": "ok"}
        kind, since = self._problem
        return {
            "backend": "redis",
            "state": "degraded",
            "problem": kind,
            "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds"),
        }

    def state(self, category: str) -> CategoryState:
        def read(r: redis.Redis) -> CategoryState:
            with r.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._key("category", category))
                pipe.zcard(self._key("members", category))
                fields, stories = pipe.execute()
            if not fields:
                return CategoryState(stories=stories)
            text = {k.decode(): v.decode() for k, v in fields.items()}
            refreshed = text.get("refreshed_at")
            return CategoryState(
                refreshed_at=float(refreshed) if refreshed else None,
                version=text.get("version", "0"),
                stories=stories,
                etag=text.get("etag") or None,
                last_modified=text.get("last_modified") or None,
                source_path=text.get("source_path", ""),
                failure=failure_from_json(text.get("failure")),
                gap=gap_from_json(text.get("gap")),
            )

        return self._attempt(read)

    def merge(self, category: str, listing: Listing, *, now: float) -> Merged:
        previous = self.state(category)

        def write(r: redis.Redis) -> Merged:
            plan, stored, members = self._plan(r, category, listing.items, now)
            gap = next_gap(previous, overlap=bool(members), now=now)
            with r.pipeline(transaction=True) as pipe:
                self._file(pipe, category, listing.items, plan, now)
                state = self._key("category", category)
                pipe.hset(
                    state,
                    mapping={
                        "refreshed_at": now,
                        "etag": listing.etag or "",
                        "last_modified": listing.last_modified or "",
                        "source_path": listing.source_path,
                        "gap": gap_to_json(gap) or "",
                    },
                )
                if plan.added:
                    pipe.hincrby(state, "version", 1)
                self._resolve_failure(pipe, category, previous.failure)
                pipe.execute()
            if plan.updated:
                self._bump(r, [item.key for item in plan.writes if item.key in stored])
            return merged(plan, gap, now)

        return self._attempt(write)

    def add(self, category: str, items: Sequence[Item], *, now: float) -> tuple[ArticleKey, ...]:
        def write(r: redis.Redis) -> tuple[ArticleKey, ...]:
            plan, stored, _ = self._plan(r, category, items, now)
            with r.pipeline(transaction=True) as pipe:
                self._file(pipe, category, items, plan, now)
                # By 0 too: the category's state exists, so that prune and _bump see it.
                pipe.hincrby(self._key("category", category), "version", 1 if plan.added else 0)
                pipe.execute()
            if plan.updated:
                self._bump(r, [item.key for item in plan.writes if item.key in stored])
            return tuple(plan.added)

        return self._attempt(write)

    def stored(self, keys: Sequence[ArticleKey]) -> dict[ArticleKey, Item]:
        def read(r: redis.Redis) -> dict[ArticleKey, Item]:
            return {item.key: item for item in self._stories(r, [str(key) for key in keys])}

        return self._attempt(read)

    def notes(self, kind: str) -> dict[str, str]:
        def read(r: redis.Redis) -> dict[str, str]:
            found = r.hgetall(self._key("notes", kind))
            return {_text(name): _text(value) for name, value in found.items()}

        return self._attempt(read)

    def put_note(self, kind: str, name: str, value: str) -> None:
        self._attempt(lambda r: r.hset(self._key("notes", kind), name, value))

    def swap_note(self, kind: str, name: str, old: str, new: str | None) -> bool:
        args = [name, old] if new is None else [name, old, new]
        return bool(
            self._attempt(lambda _r: self._swap(keys=[self._key("notes", kind)], args=args))
        )

    def _plan(
        self, r: redis.Redis, category: str, items: Sequence[Item], now: float
    ) -> tuple[MergePlan, dict[ArticleKey, Item], set[ArticleKey]]:
        """How ``items`` merge into the stored stories and ``category``'s members; the
        stored versions of them, and which of them the category had before."""
        members_key = self._key("members", category)
        with r.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.hget(self._key("story", str(item.key)), "data")
                pipe.zscore(members_key, str(item.key))
            found = pipe.execute()
        stored = {
            item.key: item
            for raw in found[0::2]
            if raw is not None
            for item in [item_from_dict(json.loads(raw))]
        }
        members = {item.key for item, score in zip(items, found[1::2], strict=True) if score}
        plan = plan_merge(items, stored, members, datetime.fromtimestamp(now, UTC))
        return plan, stored, members

    def _file(
        self, pipe: Any, category: str, items: Sequence[Item], plan: MergePlan, now: float
    ) -> None:
        """Write ``items`` as stories and members of ``category``: what a refresh and a
        repair share."""
        keys = [str(item.key) for item in items]
        for item in plan.writes:
            story = self._key("story", str(item.key))
            pipe.hset(story, "data", json.dumps(item_to_dict(item)))
            pipe.hsetnx(story, "first_seen", now)
            if item.content_html is None:
                pipe.hsetnx(story, "full_text_retry_at", 0)
        for key in keys:
            pipe.hset(self._key("story", key), "last_seen", now)
        if items:
            pipe.zadd(
                self._key("members", category),
                {str(item.key): item.published.timestamp() for item in items},
            )
            pipe.zadd(self._key("seen", category), dict.fromkeys(keys, now))

    def touch(self, category: str, *, now: float) -> None:
        previous = self.state(category)

        def write(r: redis.Redis) -> None:
            with r.pipeline(transaction=True) as pipe:
                pipe.hset(self._key("category", category), "refreshed_at", now)
                self._resolve_failure(pipe, category, previous.failure)
                pipe.execute()

        self._attempt(write)

    def save_failure(self, category: str, failure: Failure) -> None:
        raw = failure_to_json(failure)
        self._attempt(lambda r: r.hset(self._key("category", category), "failure", raw or ""))

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        def read(r: redis.Redis) -> list[Item]:
            found: list[Item] = []
            start = 0
            batch = limit + DUPLICATE_MARGIN if not words else SEARCH_BATCH
            while len(found) < limit + DUPLICATE_MARGIN:
                keys = r.zrevrange(self._key("members", category), start, start + batch - 1)
                if not keys:
                    break
                start += len(keys)
                items = self._stories(r, [_text(key) for key in keys])
                found += [item for item in items if matches(item, words)]
                if len(keys) < batch:
                    break
            return dedupe_window(found, limit)

        return self._attempt(read)

    def pending(self, category: str, *, now: float, limit: int) -> list[Pending]:
        def read(r: redis.Redis) -> list[Pending]:
            keys = [
                _text(key)
                for key in r.zrevrange(self._key("members", category), 0, PENDING_SCAN - 1)
            ]
            with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(
                        self._key("story", key),
                        ["data", "full_text_retry_at", "full_text_attempts"],
                    )
                rows = pipe.execute()
            due = []
            for data, retry_at, attempts in rows:
                if data is None or retry_at is None or float(retry_at) > now:
                    continue  # gone, has its full text already, or not due yet
                due.append(Pending(item_from_dict(json.loads(data)), int(attempts or 0)))
                if len(due) == limit:
                    break
            return due

        return self._attempt(read)

    def save_full_text(self, item: Item) -> None:
        def write(r: redis.Redis) -> None:
            story = self._key("story", str(item.key))
            with r.pipeline(transaction=True) as pipe:
                pipe.hset(story, "data", json.dumps(item_to_dict(item)))
                pipe.hdel(story, "full_text_retry_at", "full_text_attempts")
                pipe.execute()
            self._bump(r, [item.key])

        self._attempt(write)

    def postpone_full_text(self, key: ArticleKey, *, retry_at: float) -> None:
        def write(r: redis.Redis) -> None:
            story = self._key("story", str(key))
            with r.pipeline(transaction=True) as pipe:
                pipe.hset(story, "full_text_retry_at", retry_at)
                pipe.hincrby(story, "full_text_attempts", 1)
                pipe.execute()

        self._attempt(write)

    def prune(self, category: str, retention: Retention, *, now: float) -> int:
        oldest = now - retention.days * 86_400

        def write(r: redis.Redis) -> int:
            members, seen = self._key("members", category), self._key("seen", category)
            old = r.zrangebyscore(seen, "-inf", f"({oldest}")
            surplus = r.zrange(members, 0, -retention.stories - 1)
            dropped = sorted({key.decode() for key in [*old, *surplus]})
            if not dropped:
                return 0
            r.zrem(members, *dropped)
            r.zrem(seen, *dropped)
            # A story goes when no category of the registry lists it any more.
            categories = [
                key.decode().removeprefix(self._key("category", ""))
                for key in r.scan_iter(self._key("category", "*"), count=100)
            ]
            with r.pipeline(transaction=False) as pipe:
                for key in dropped:
                    for other in categories:
                        pipe.zscore(self._key("members", other), key)
                listed = pipe.execute()
            width = len(categories)
            orphans = [
                key
                for index, key in enumerate(dropped)
                if not any(listed[index * width : (index + 1) * width])
            ]
            if orphans:
                r.delete(*(self._key("story", key) for key in orphans))
            r.hincrby(self._key("category", category), "version", 1)
            return len(dropped)

        return self._attempt(write)

    def try_lease(self, name: str, token: str, ttl: float) -> bool:
        return bool(
            self._attempt(
                lambda _r: self._lease(keys=[self._key("lease", name)], args=[token, _ms(ttl)])
            )
        )

    def release(self, name: str, token: str) -> None:
        self._attempt(lambda _r: self._release(keys=[self._key("lease", name)], args=[token]))

    def paused_for(self) -> float:
        return self._attempt(lambda r: max(0.0, r.pttl(self._key("site", "closed")) / 1000))

    def pause(self, seconds: float) -> None:
        self._attempt(
            lambda _r: self._close(keys=[self._key("site", "closed")], args=[_ms(seconds)])
        )

    def close(self) -> None:
        self._redis.close()

    # --- internals ----------------------------------------------------------------------

    def _stories(self, r: redis.Redis, keys: list[str]) -> list[Item]:
        """The stories under ``keys``, in that order; one evicted meanwhile is left out."""
        with r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(self._key("story", key), "data")
            found = pipe.execute()
        return [item_from_dict(json.loads(raw)) for raw in found if raw is not None]

    def _bump(self, r: redis.Redis, keys: list[ArticleKey]) -> None:
        """A new version for every category that lists one of ``keys``."""
        categories = [key.decode() for key in r.scan_iter(self._key("category", "*"), count=100)]
        members = [name.replace(":category:", ":members:", 1) for name in categories]
        with r.pipeline(transaction=False) as pipe:
            for name in members:
                for key in keys:
                    pipe.zscore(name, str(key))
            scores = pipe.execute()
        width = len(keys)
        with r.pipeline(transaction=False) as pipe:
            for index, name in enumerate(categories):
                if any(scores[index * width : (index + 1) * width]):
                    pipe.hincrby(name, "version", 1)
            pipe.execute()

    def _resolve_failure(self, pipe: Any, category: str, failure: Failure | None) -> None:
        if failure is None or failure.count == 0:
            return
        pipe.hset(self._key("category", category), "failure", failure_to_json(failure.resolved()))

    def _attempt(self, operation: Callable[[redis.Redis], T]) -> T:
        """``operation`` on Redis; :class:`StoreError` when Redis fails or failed a moment ago."""
        if time.monotonic() < self._down_until:
            raise StoreError("redis: unavailable, trying again shortly")
        try:
            result = operation(self._redis)
        except (redis.RedisError, ValueError, KeyError, TypeError) as exc:
            self._went_wrong(exc)
            raise StoreError(f"redis: {type(exc).__name__}") from exc
        if self._problem is not None:
            self._came_back()
        return result

    def _went_wrong(self, exc: Exception) -> None:
        with self._state:
            now = time.monotonic()
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                self._down_until = now + self._retry_interval
            if self._problem is None:
                self._problem = (_kind(exc), time.time())
            if now - self._logged_at < LOG_EVERY:
                return
            self._logged_at = now
        log.warning(logfmt(event="redis_unavailable", error=f"{type(exc).__name__}: {exc}"))

    def _came_back(self) -> None:
        with self._state:
            if self._problem is None:
                return
            self._problem = None
            self._logged_at = float("-inf")
        log.warning(logfmt(event="redis_available"))

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"


def _kind(exc: Exception) -> str:
    """What went wrong, without addresses: safe to show on ``/status``."""
    if isinstance(exc, redis.ConnectionError):
        return "unreachable"
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.RedisError):
        return "error"
    return "unreadable-value"


def _text(value: object) -> str:
    """A member or key as Redis sent it (bytes), as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
