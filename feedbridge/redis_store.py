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
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feedbridge import observe
from feedbridge.config import site_address
from feedbridge.history import (
    MergePlan,
    Versions,
    is_due,
    merge_result,
    next_gap,
    plan_merge,
    resolution,
    wants_full_text,
    with_full_text,
)
from feedbridge.model import ArticleKey, Item
from feedbridge.schedule import Cadence, by_hour
from feedbridge.store import (
    DUPLICATE_MARGIN,
    CategoryState,
    Failure,
    Gap,
    Health,
    Listing,
    Merged,
    Pending,
    Retention,
    StoreError,
    checked_lately,
    dedupe_window,
    failure_from_json,
    failure_to_json,
    item_from_dict,
    item_to_dict,
    matches,
    record_from_json,
    record_to_json,
    search_text,
)

T = TypeVar("T")
RETRY_INTERVAL = 5.0  # seconds a process leaves Redis alone after it failed
SETUP_CHECK = 60.0  # seconds between two reads of Redis's eviction policy (INFO)
WATCH_TRIES = 8  # a merge or a save read again after another process wrote meanwhile
SEARCH_BATCH = 500  # members a search script looks at per call
SCHEMA = "2"  # 2: the index of stories wanting full text ("index:wanting")
# The site's pause (its Retry-After, for every process): the key's name is the one
# written before the code called it a pause, so that a pause in force outlives an upgrade.
PAUSE_KEY = ("site", "closed")

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
# Pause asking the site for ARGV[1] ms, unless it is paused for longer already.
_PAUSE = """
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], '1', 'px', ARGV[1])
end
return 0
"""
# The stories the category (KEYS[2] its members) holds that want full text and are due
# (KEYS[1], scored by their next try, at most ARGV[1]): newest first, ARGV[2] at most.
_PENDING = """
local found = {}
for _, key in ipairs(redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1])) do
  local published = redis.call('zscore', KEYS[2], key)
  if published then found[#found + 1] = {tonumber(published), key} end
end
table.sort(found, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] > b[2]
end)
local keys = {}
for i = 1, math.min(#found, tonumber(ARGV[2])) do keys[i] = found[i][2] end
return keys
"""
# ?q= over the members (KEYS[1]) ranked ARGV[1] to ARGV[2], newest first: the keys of
# stories whose search text (ARGV[3] the prefix of story hashes) holds every word
# (ARGV[5]...), ARGV[4] of them at most. A story stored without its search text is
# returned too, for the caller to check. Returns the rank to go on from, then the keys.
_SEARCH = """
local wanted = tonumber(ARGV[4])
local keys, rank = {}, tonumber(ARGV[1])
for _, key in ipairs(redis.call('zrevrange', KEYS[1], ARGV[1], ARGV[2])) do
  rank = rank + 1
  local text = redis.call('hget', ARGV[3] .. key, 'search')
  local hit = true
  if text then
    for i = 5, #ARGV do
      if not string.find(text, ARGV[i], 1, true) then hit = false break end
    end
  end
  if hit then
    keys[#keys + 1] = key
    if #keys >= wanted then break end
  end
end
table.insert(keys, 1, rank)
return keys
"""
# Stories the category's state counts (KEYS[1]) and its members (KEYS[2]) no longer
# hold: the count set to what is there; returns how many went.
# Replace a note (ARGV[3], or drop it when absent) only if it still reads ARGV[2].
_SWAP = """
if redis.call('hget', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] then redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
else redis.call('hdel', KEYS[1], ARGV[1]) end
return 1
"""
_LOST = """
local kept = tonumber(redis.call('hget', KEYS[1], 'stories') or '0')
local there = redis.call('zcard', KEYS[2])
if kept > there then
  redis.call('hset', KEYS[1], 'stories', there)
  return kept - there
end
return 0
"""


def namespace(upstream_url: str) -> str:
    """The key prefix of one site's state: instances of different sites never meet, and
    every spelling of one address (``HTTP://Host/``, ``http://host``) is one site."""
    address = site_address(upstream_url)
    return "feedbridge:" + hashlib.sha256(address.encode()).hexdigest()[:12] + ":"


class RedisClient:
    """Redis as the store uses it: the client, its failures (a moment's rest after a lost
    connection) and health, key names under the site's namespace, leases, the site's
    pause, notes, and what reads of stories and categories share."""

    def __init__(
        self,
        url: str,
        *,
        upstream_url: str,
        clock: Callable[[], float] = time.time,
        retry_interval: float = RETRY_INTERVAL,
        search_depth: int = Retention().stories,
        setup_check: float = SETUP_CHECK,
        options: dict[str, str] | None = None,
    ) -> None:
        """``search_depth``: the newest members ``?q=`` looks at (``KEEP_STORIES``).
        ``options``: more of ``redis.Redis.from_url``'s (see
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
        self._search_depth = search_depth
        self._setup_check = setup_check
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._pause = self._redis.register_script(_PAUSE)
        self._pending = self._redis.register_script(_PENDING)
        self._search = self._redis.register_script(_SEARCH)
        self._lost = self._redis.register_script(_LOST)
        self._swap = self._redis.register_script(_SWAP)
        self.health = Health("redis", down_event="redis_unavailable", up_event="redis_available")
        self._down_until = 0.0  # time.monotonic(): skip Redis until then
        self._checked_at = float("-inf")  # time.monotonic() of the last read of INFO
        self._evicted = 0
        self._upgraded = False
        # What this process read of each category's state, and when (see STATE_CHECK);
        # forgotten whenever this process may have changed something (a new generation).
        self._states: dict[str, tuple[float, CategoryState]] = {}
        self._generation = 0

    def describe(self) -> dict[str, object]:
        described = self.health.describe()
        if self._evicted:
            described["evicted_keys"] = self._evicted
        return described

    def close(self) -> None:
        self._redis.close()

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

    def try_lease(self, name: str, token: str, ttl: float) -> bool:
        return bool(
            self._attempt(
                lambda _r: self._lease(keys=[self._key("lease", name)], args=[token, _ms(ttl)])
            )
        )

    def release(self, name: str, token: str) -> None:
        self._attempt(lambda _r: self._release(keys=[self._key("lease", name)], args=[token]))

    def paused_for(self) -> float:
        return self._attempt(
            lambda r: max(0.0, r.pttl(self._key(*PAUSE_KEY)) / 1000), changes=False
        )

    def pause(self, seconds: float) -> None:
        self._attempt(lambda _r: self._pause(keys=[self._key(*PAUSE_KEY)], args=[_ms(seconds)]))

    # --- internals ----------------------------------------------------------------------

    def _stories(self, r: redis.Redis, keys: list[str], members_key: str) -> list[Item]:
        """The stories under ``keys``, in that order. A member whose story is gone (Redis
        evicted it: a story leaves its last category before it is deleted) leaves the
        members, and the next read of the category's state counts it lost."""
        with r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(self._key("story", key), "data")
            found = pipe.execute()
        gone = [key for key, raw in zip(keys, found, strict=True) if raw is None]
        if gone:
            r.zrem(members_key, *gone)
        return [item_from_dict(json.loads(raw)) for raw in found if raw is not None]

    def _listers(self, r: redis.Redis, keys: Sequence[ArticleKey]) -> list[str]:
        """The state keys of the categories that list one of ``keys``."""
        if not keys:
            return []
        categories = [key.decode() for key in r.scan_iter(self._key("category", "*"), count=100)]
        members = [name.replace(":category:", ":members:", 1) for name in categories]
        with r.pipeline(transaction=False) as pipe:
            for name in members:
                for key in keys:
                    pipe.zscore(name, str(key))
            scores = pipe.execute()
        width = len(keys)
        return [
            name
            for index, name in enumerate(categories)
            if any(scores[index * width : (index + 1) * width])
        ]

    @staticmethod
    def _bump(pipe: Any, state_keys: list[str]) -> None:
        """A new version for each category of ``state_keys`` (in ``pipe``'s transaction)."""
        for name in state_keys:
            pipe.hincrby(name, "version", 1)

    @staticmethod
    def _watching(r: redis.Redis, attempt: Callable[[redis.Redis, Any], T]) -> T:
        """``attempt`` (which WATCHes, reads, then writes in MULTI), again while another
        client wrote a watched key between its read and its write."""
        for _ in range(WATCH_TRIES):
            with r.pipeline(transaction=True) as pipe:
                try:
                    return attempt(r, pipe)
                except redis.WatchError:
                    continue
        raise redis.WatchError(f"written by others {WATCH_TRIES} times in a row")

    def _upgrade(self, r: redis.Redis) -> None:
        """Once per Redis: index the stories an older feedbridge left wanting full text
        (it marked them with ``full_text_retry_at`` in their hash)."""
        if self._upgraded:
            return
        marker = self._key("schema", "")
        if r.get(marker) != SCHEMA.encode():
            stories = [key.decode() for key in r.scan_iter(self._key("story", "*"), count=500)]
            with r.pipeline(transaction=False) as pipe:
                for story in stories:
                    pipe.hget(story, "full_text_retry_at")
                retry = pipe.execute()
            wanting = {
                story.removeprefix(self._key("story", "")): float(at)
                for story, at in zip(stories, retry, strict=True)
                if at is not None
            }
            if wanting:
                r.zadd(self._key("index", "wanting"), wanting, nx=True)
            r.set(marker, SCHEMA)
        self._upgraded = True

    def _check_setup(self, r: redis.Redis) -> None:
        """Read Redis's eviction policy and evictions (INFO: hosted plans refuse CONFIG):
        a Redis that may evict stories under its memory limit is degraded."""
        now = time.monotonic()
        if now - self._checked_at < self._setup_check:
            return
        self._checked_at = now
        try:
            memory, stats = r.info("memory"), r.info("stats")
        except redis.ResponseError:
            return  # a Redis that does not tell: nothing to say about it
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        self._evicted = int(stats.get("evicted_keys", 0))
        # Stories have no TTL: volatile-* policies never evict them, allkeys-* ones do.
        evicting = int(memory.get("maxmemory", 0)) > 0 and policy.startswith("allkeys-")
        self.health.set_up(
            ("evicting", f"maxmemory-policy {policy} may evict stories; set noeviction")
            if evicting
            else None
        )

    def _attempt(
        self, operation: Callable[[redis.Redis], T], *, writing: bool = False, changes: bool = True
    ) -> T:
        """``operation`` on Redis; :class:`StoreError` when Redis fails or failed a moment
        ago. ``writing``: it writes stories, and a failure stays on ``/status`` until
        such a write succeeds. An operation that ``changes`` something (or may have,
        failing) makes this process read every category's state again.
        """
        if time.monotonic() < self._down_until:
            raise StoreError("redis: unavailable, trying again shortly")
        try:
            self._check_setup(self._redis)
            result = operation(self._redis)
        except (redis.RedisError, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                self._down_until = time.monotonic() + self._retry_interval
            self.health.failed(_kind(exc), writing=writing, detail=f"{type(exc).__name__}: {exc}")
            raise StoreError(f"redis: {type(exc).__name__}") from exc
        finally:
            if changes:
                self._generation += 1
                self._states.clear()
        self.health.succeeded(writing=writing)
        return result

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"


class RedisStore(RedisClient):
    """A :class:`~feedbridge.store.Store` in Redis."""

    # --- the contract -----------------------------------------------------------------

    def state(self, category: str) -> CategoryState:
        """The category's state, read from Redis at most every
        :data:`~feedbridge.store.STATE_CHECK` seconds; a count of stories greater than
        its members are is stories lost (Redis evicted them): counted, and the count set
        right."""
        now = self._clock()
        known = self._states.get(category)
        if known is not None and checked_lately(known[0], now):
            return known[1]
        generation = self._generation

        def read(r: redis.Redis) -> CategoryState:
            state_key, members_key = self._key("category", category), self._key("members", category)
            with r.pipeline(transaction=False) as pipe:
                pipe.hgetall(state_key)
                pipe.zcard(members_key)
                fields, stories = pipe.execute()
            if int(fields.get(b"stories", 0)) > stories:
                lost = int(self._lost(keys=[state_key, members_key]))
                if lost:
                    observe.stories_lost(category, lost)
            return _state_of(fields, stories)

        state = self._attempt(read, changes=False)
        if generation == self._generation:  # no write of this process meanwhile
            self._states[category] = (now, state)
        return state

    def merge(self, category: str, listing: Listing, *, now: float) -> Merged:
        plan, gap = self._file(category, listing.items, now, listing)
        return merge_result(plan, gap, now)

    def add(self, category: str, items: Sequence[Item], *, now: float) -> tuple[ArticleKey, ...]:
        plan, _ = self._file(category, items, now, None)
        return tuple(plan.added)

    def stored(self, keys: Sequence[ArticleKey]) -> dict[ArticleKey, Item]:
        def read(r: redis.Redis) -> dict[ArticleKey, Item]:
            with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(self._key("story", str(key)), "data")
                found = pipe.execute()
            items = [item_from_dict(json.loads(raw)) for raw in found if raw is not None]
            return {item.key: item for item in items}

        return self._attempt(read)

    def _file(
        self, category: str, items: Sequence[Item], now: float, listing: Listing | None
    ) -> tuple[MergePlan, Gap | None]:
        """Write ``items`` as stories and members of ``category``; with ``listing``, as a
        refresh of the category (when, the site's validators, the gap, the failure
        resolved), else as stories found elsewhere (the archive). Read and written under
        WATCH: another process's write between the two makes it read again (up to
        :data:`WATCH_TRIES` times)."""
        keys = [str(item.key) for item in items]
        state_key, members_key = self._key("category", category), self._key("members", category)
        story_keys = [self._key("story", key) for key in keys]

        def attempt(r: redis.Redis, pipe: Any) -> tuple[MergePlan, Gap | None]:
            pipe.watch(state_key, members_key, *story_keys)
            fields, count, stored, members = self._read_for_merge(r, category, items)
            previous = _state_of(fields, count)
            plan = plan_merge(items, stored, members, datetime.fromtimestamp(now, UTC))
            gap = next_gap(previous, overlap=bool(members), now=now) if listing else None
            versions = Versions.of_merge(plan, stored)
            listers = self._listers(r, versions.stories)
            pipe.multi()
            for item in plan.writes:
                story = self._key("story", str(item.key))
                pipe.hset(story, mapping={"data": json.dumps(item_to_dict(item)),
                                          "search": search_text(item)})  # fmt: skip
                pipe.hsetnx(story, "first_seen", now)
                if wants_full_text(item):
                    pipe.zadd(self._key("index", "wanting"), {str(item.key): 0}, nx=True)
            for key in keys:
                pipe.hset(self._key("story", key), "last_seen", now)
            if items:
                pipe.zadd(
                    members_key, {str(item.key): item.published.timestamp() for item in items}
                )
                pipe.zadd(self._key("seen", category), dict.fromkeys(keys, now))
            # What was counted (not what is there: a loss stays visible to state()).
            state: dict[str, object] = {
                "stories": int(fields.get(b"stories", count)) + len(plan.added)
            }
            if listing is not None:
                state |= {
                    "refreshed_at": now,
                    "etag": listing.etag or "",
                    "last_modified": listing.last_modified or "",
                    "source_path": listing.source_path,
                    "gap": record_to_json(gap) if gap else "",
                }
            pipe.hset(state_key, mapping=state)
            self._bump(pipe, [state_key] if versions.category else [])
            self._bump(pipe, listers)
            if listing is not None:
                self._resolve_failure(pipe, category, previous.failure)
            pipe.execute()
            return plan, gap

        return self._attempt(lambda r: self._watching(r, attempt), writing=True)

    def _read_for_merge(
        self, r: redis.Redis, category: str, items: Sequence[Item]
    ) -> tuple[dict[bytes, bytes], int, dict[ArticleKey, Item], set[ArticleKey]]:
        """What a merge of ``items`` into ``category`` reads first, in one round trip: the
        category's state fields and member count, which of the items are stored (as
        stored), and which are members of the category."""
        members_key = self._key("members", category)
        with r.pipeline(transaction=False) as read:
            read.hgetall(self._key("category", category))
            read.zcard(members_key)
            for item in items:
                read.hget(self._key("story", str(item.key)), "data")
                read.zscore(members_key, str(item.key))
            fields, count, *found = read.execute()
        stored = {
            item.key: item
            for raw in found[0::2]
            if raw is not None
            for item in [item_from_dict(json.loads(raw))]
        }
        members = {item.key for item, score in zip(items, found[1::2], strict=True) if score}
        return fields, count, stored, members

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

    def save_cadence(self, category: str, cadence: Cadence) -> None:
        raw = record_to_json(cadence)
        self._attempt(lambda r: r.hset(self._key("category", category), "cadence", raw))

    def published_hours(self, category: str, *, since: float) -> dict[int, int]:
        def read(r: redis.Redis) -> dict[int, int]:
            # At most KEEP_STORIES members: the scores are their publication times.
            found = r.zrangebyscore(self._key("members", category), since, "+inf", withscores=True)
            return by_hour(float(pair[1]) for pair in found)

        return self._attempt(read)

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        """Without words, the newest members; with words, a script in Redis picks the
        matching ones among the newest ``search_depth`` members (nothing else leaves
        Redis), and each is checked here again (:func:`~feedbridge.store.matches`)."""
        wanted = limit + DUPLICATE_MARGIN
        members_key = self._key("members", category)

        def read(r: redis.Redis) -> list[Item]:
            if not words:
                keys = [_text(key) for key in r.zrevrange(members_key, 0, wanted - 1)]
                return dedupe_window(self._stories(r, keys, members_key), limit)
            found: list[Item] = []
            rank = 0
            while len(found) < wanted and rank < self._search_depth:
                last = min(rank + SEARCH_BATCH, self._search_depth) - 1
                asked = wanted - len(found)
                rank_after, *keys = self._search(
                    keys=[members_key], args=[rank, last, self._key("story", ""), asked, *words]
                )
                found += [
                    item for item in self._stories(r, [_text(k) for k in keys], members_key)
                    if matches(item, words)
                ]  # fmt: skip
                if int(rank_after) <= last and len(keys) < asked:
                    break  # the members ran out
                rank = int(rank_after)
            return dedupe_window(found, limit)

        return self._attempt(read)  # it may drop members whose story is gone

    def pending(self, category: str, *, now: float, limit: int) -> list[Pending]:
        def read(r: redis.Redis) -> list[Pending]:
            self._upgrade(r)
            keys = [
                _text(key)
                for key in self._pending(
                    keys=[self._key("index", "wanting"), self._key("members", category)],
                    args=[now, limit],
                )
            ]
            with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self._key("story", key), ["data", "full_text_attempts"])
                    pipe.zscore(self._key("index", "wanting"), key)
                rows = pipe.execute()
            return [
                Pending(item_from_dict(json.loads(data)), int(attempts or 0))
                for (data, attempts), retry_at in zip(rows[0::2], rows[1::2], strict=True)
                if data is not None and retry_at is not None and is_due(retry_at, now)
            ]

        return self._attempt(read)

    def save_full_text(self, item: Item) -> None:
        """A patch of the story as stored when it is written (:func:`with_full_text`),
        read and written under WATCH."""
        story = self._key("story", str(item.key))

        def attempt(r: redis.Redis, pipe: Any) -> None:
            pipe.watch(story)
            raw = r.hget(story, "data")
            if raw is None:
                return  # pruned while its article was read
            patched = with_full_text(item_from_dict(json.loads(raw)), item)
            listers = self._listers(r, Versions.of_full_text(item.key).stories)
            pipe.multi()
            pipe.hset(story, "data", json.dumps(item_to_dict(patched)))
            pipe.hdel(story, "full_text_attempts", "full_text_retry_at")
            pipe.zrem(self._key("index", "wanting"), str(item.key))
            self._bump(pipe, listers)
            pipe.execute()

        self._attempt(lambda r: self._watching(r, attempt), writing=True)

    def postpone_full_text(self, key: ArticleKey, *, retry_at: float) -> None:
        def write(r: redis.Redis) -> None:
            story = self._key("story", str(key))
            with r.pipeline(transaction=True) as pipe:
                pipe.zadd(self._key("index", "wanting"), {str(key): retry_at}, xx=True)
                pipe.hincrby(story, "full_text_attempts", 1)
                pipe.execute()

        self._attempt(write, writing=True)

    def prune(self, category: str, retention: Retention, *, now: float) -> int:
        oldest = now - retention.days * 86_400

        def write(r: redis.Redis) -> int:
            members, seen = self._key("members", category), self._key("seen", category)
            old = r.zrangebyscore(seen, "-inf", f"({oldest}")
            surplus = r.zrange(members, 0, -retention.stories - 1)
            dropped = sorted({key.decode() for key in [*old, *surplus]})
            if not dropped:
                return 0
            state_key = self._key("category", category)
            with r.pipeline(transaction=True) as pipe:
                pipe.zrem(members, *dropped)
                pipe.zrem(seen, *dropped)
                pipe.hincrby(state_key, "stories", -len(dropped))
                self._bump(pipe, [state_key] if Versions.of_prune(len(dropped)).category else [])
                pipe.execute()
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
                r.zrem(self._key("index", "wanting"), *orphans)
            return len(dropped)

        return self._attempt(write, writing=True)

    def _resolve_failure(self, pipe: Any, category: str, failure: Failure | None) -> None:
        resolved = resolution(failure)
        if resolved is not None:
            pipe.hset(self._key("category", category), "failure", failure_to_json(resolved))


def _state_of(fields: dict[bytes, bytes], stories: int) -> CategoryState:
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
        gap=record_from_json(Gap, text.get("gap")),
        cadence=record_from_json(Cadence, text.get("cadence")),
    )


def _kind(exc: Exception) -> str:
    """What went wrong, without addresses: safe to show on ``/status``."""
    if isinstance(exc, redis.ConnectionError):
        return "unreachable"
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "out-of-memory"
    if isinstance(exc, redis.WatchError):
        return "contention"
    if isinstance(exc, redis.RedisError):
        return "error"
    return "unreadable-value"


def _text(value: object) -> str:
    """A member or key as Redis sent it (bytes), as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
