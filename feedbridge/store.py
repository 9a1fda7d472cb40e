"""The story store: every story the bridge has seen, kept once, and which categories list it.

A feed is the newest stories of its category's *history*, not only what the site lists
at the moment: a story that leaves the site's ~11-item window between two refreshes is
still in the feed, and a restart loses nothing. One contract, :class:`Store`, has two
backends: :class:`feedbridge.sqlite_store.SQLiteStore` (the default: one file, shared
by every worker and the command line on one machine) and
:class:`feedbridge.redis_store.RedisStore` (shared by several machines).

What a backend keeps:

* **stories**, once each under their ``<ts>-<id>`` key, with when they were first and
  last listed and when their content last changed (their Atom ``updated``);
* **memberships**: the categories that listed a story (a story under its source and
  under ``all`` is one story, two memberships), pruned by age and count per category;
* per category, a :class:`CategoryState`: when it was last refreshed, the site's
  validators, a ``version`` that changes whenever one of its stories does, the last
  failure, the last gap and the cadence of its refreshes (:mod:`feedbridge.schedule`);
* **full text** to fetch: stories without it, each with the time of its next try;
* **leases**: a name held by one token until released or expired (the refresher's,
  and each category's fetch), and the site's own Retry-After.

What these mean (which stories a merge writes, whose versions change, which stories
want full text and when) is decided in :mod:`feedbridge.history`, which both backends
apply. Every operation may raise :class:`StoreError`; the bridge serves what it has in
memory meanwhile, and :class:`Health` says so on ``/status``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

from feedbridge.errors import ERROR_KINDS, UpstreamError
from feedbridge.model import ArticleKey, Item, merge_duplicates, newest_first
from feedbridge.politeness import LocalPause, Pause
from feedbridge.schedule import Cadence
from feedbridge.text import logfmt
from feedbridge.threads import start_daemon

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds between two logs of the same change of a store's health

# How far past ``limit`` a window is read, so that a story ingested twice (merged into
# one item) does not leave the window one short.
DUPLICATE_MARGIN = 10
# Seconds a process trusts what it read of a category's state without asking the store
# again: another process's change (or a flushed store) is seen within this; the
# process's own writes at once. Every cached feed a reader gets asks for the state.
STATE_CHECK = 0.1


def checked_lately(at: float, now: float) -> bool:
    """Whether a check made at ``at`` still holds at ``now`` (a clock set back: no)."""
    return at <= now < at + STATE_CHECK


class StoreError(Exception):
    """The store could not be read or written (disk full, Redis away, a corrupt file)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """The last failure of a category; ``count`` is 0 once a success has resolved it."""

    count: int  # consecutive failures, up to now
    error: UpstreamError
    at: float
    retry_at: float


@dataclass(frozen=True, slots=True)
class Gap:
    """A refresh that shared no story with what was kept: stories may have been missed."""

    at: float
    since_previous: float | None  # seconds since the refresh before it
    in_a_row: int


@dataclass(frozen=True, slots=True)
class Listing:
    """What a refresh read: the items, and how to ask the site for the page again cheaply."""

    items: tuple[Item, ...]
    etag: str | None = None
    last_modified: str | None = None
    source_path: str = ""


@dataclass(frozen=True, slots=True)
class CategoryState:
    refreshed_at: float | None = None  # the last successful read of the listing
    version: str = "0"  # changes whenever a story of the category does
    stories: int = 0
    etag: str | None = None
    last_modified: str | None = None
    source_path: str = ""
    failure: Failure | None = None
    gap: Gap | None = None  # the last one; ``in_a_row`` 0 once listings overlap again
    cadence: Cadence | None = None  # what its history said at its last refresh

    @property
    def seen(self) -> bool:
        return self.refreshed_at is not None

    @property
    def in_gap(self) -> bool:
        return self.gap is not None and self.gap.in_a_row > 0


@dataclass(frozen=True, slots=True)
class Merged:
    """What a refresh changed."""

    added: tuple[ArticleKey, ...] = ()
    gap: Gap | None = None  # set when this refresh is a gap


@dataclass(frozen=True, slots=True)
class Retention:
    days: int = 365
    stories: int = 5000


@dataclass(frozen=True, slots=True)
class Pending:
    """A story still without its full text, and how often it was asked for in vain."""

    item: Item
    attempts: int = 0


class Store(Protocol):
    """Where the bridge keeps stories and its state; times are wall-clock seconds."""

    def describe(self) -> dict[str, object]: ...

    def state(self, category: str) -> CategoryState: ...

    def merge(self, category: str, listing: Listing, *, now: float) -> Merged:
        """Add or update the listed stories, make them members of ``category``, record
        the refresh (validators, failure resolved, gap or not)."""
        ...

    def touch(self, category: str, *, now: float) -> None:
        """A refresh that found the listing unchanged (a 304)."""
        ...

    def add(self, category: str, items: Sequence[Item], *, now: float) -> tuple[ArticleKey, ...]:
        """File stories found elsewhere than the category's listing (the archive) in
        ``category``, merged as a refresh merges them; the category's refresh record
        (when, validators, failure, gap) is left as it is. Returns the keys new to it."""
        ...

    def stored(self, keys: Sequence[ArticleKey]) -> dict[ArticleKey, Item]:
        """The stories of ``keys`` that the store has."""
        ...

    def notes(self, kind: str) -> dict[str, str]:
        """Every note of ``kind`` by name: small records of the archive's walks."""
        ...

    def put_note(self, kind: str, name: str, value: str) -> None: ...

    def swap_note(self, kind: str, name: str, old: str, new: str | None) -> bool:
        """Replace the note by ``new`` (None drops it) only if it still reads ``old``."""
        ...

    def save_failure(self, category: str, failure: Failure) -> None: ...

    def save_cadence(self, category: str, cadence: Cadence) -> None:
        """Keep the cadence a refresh found with the category's state."""
        ...

    def published_hours(self, category: str, *, since: float) -> dict[int, int]:
        """How many of the category's stories were published in each hour (hours since
        the epoch, UTC) from ``since`` on: what its cadence is estimated from."""
        ...

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        """The category's newest ``limit`` stories holding every one of ``words``
        (casefolded) in their title or excerpt, newest first, duplicates merged."""
        ...

    def pending(self, category: str, *, now: float, limit: int) -> list[Pending]:
        """The category's newest stories without full text whose next try is due."""
        ...

    def save_full_text(self, item: Item) -> None:
        """``item`` now has its full text: what its article gave is patched onto the story
        as stored at that moment (:func:`feedbridge.history.with_full_text`), and its
        categories' versions change. A story pruned meanwhile stays gone."""
        ...

    def postpone_full_text(self, key: ArticleKey, *, retry_at: float) -> None: ...

    def prune(self, category: str, retention: Retention, *, now: float) -> int:
        """Drop the category's memberships past ``retention``: stories not listed for
        ``retention.days``, and those past the newest ``retention.stories``. Stories no
        category lists go with them. Returns the number of memberships dropped."""
        ...

    def try_lease(self, name: str, token: str, ttl: float) -> bool:
        """Take ``name`` for ``ttl`` seconds, or extend it if ``token`` holds it."""
        ...

    def release(self, name: str, token: str) -> None: ...

    def paused_for(self) -> float:
        """Seconds until the site may be asked again (its Retry-After); 0 when now."""
        ...

    def pause(self, seconds: float) -> None:
        """Ask the site nothing for ``seconds`` (never shortens a pause)."""
        ...

    def close(self) -> None: ...


class Lease:
    """A lease of the store, held while its holder works and renewed in the background.

    ``held`` turns false when a renewal fails (the lease expired and was taken). The
    token is this process's own, made in the process that first asks for the lease: a
    Lease made before a fork (gunicorn's ``preload_app``) is another holder in each
    process, never one holder shared by the master and its workers.
    """

    def __init__(self, store: Store, name: str, ttl: float) -> None:
        self.store, self.name, self.ttl = store, name, ttl
        self._owner: tuple[int, str] | None = None  # the process and its token
        self._held = False
        self._stop = threading.Event()
        self._renewing = threading.Lock()  # a renewal never lands after the release

    @property
    def token(self) -> str:
        pid = os.getpid()
        if self._owner is None or self._owner[0] != pid:
            self._owner = (pid, secrets.token_hex(16))
            self._held = False  # what the parent held is not this process's
            self._stop = threading.Event()  # nor are its heartbeat's events and locks
            self._renewing = threading.Lock()
        return self._owner[1]

    @property
    def held(self) -> bool:
        return self._held and self._owner is not None and self._owner[0] == os.getpid()

    def acquire(self) -> bool:
        token = self.token
        self._held = self.store.try_lease(self.name, token, self.ttl)
        if self._held:
            self._stop.clear()
            start_daemon(self._heartbeat, f"lease-{self.name}")
        return self._held

    def release(self) -> None:
        """Let go (a store that fails meanwhile lets the lease run out instead)."""
        if not self.held:  # never held, or held by the process this one was forked from
            self._stop.set()
            return
        self._stop.set()
        with self._renewing:
            if not self._held:
                return
            self._held = False
            try:
                self.store.release(self.name, self.token)
            except StoreError:
                log.warning(logfmt(event="store_error", lease=self.name, action="release"))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._renewing:
                if self._stop.is_set():
                    return
                try:
                    renewed = self.store.try_lease(self.name, self.token, self.ttl)
                except StoreError:
                    continue  # the next beat tries again; the lease lasts until then
                if not renewed:
                    self._held = False
                    return


class Health:
    """What a store says of itself on ``/status``, as both backends keep it.

    * A failed operation makes the store ``degraded`` (its kind of problem, and since
      when). A failure to write stories (a merge, full text, a prune) stays until such a
      write succeeds: a read that works says nothing of whether the history is kept.
    * A standing problem of the store's set-up (a Redis that may evict keys) is
      ``degraded`` too, for as long as it lasts.
    * Each change of state is logged once: ``down_event`` with the problem, then
      ``up_event``; the same line again at most once a :data:`LOG_EVERY` (a store that
      flaps does not flood the log).
    """

    def __init__(
        self,
        backend: str,
        *,
        down_event: str,
        up_event: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._events = (down_event, up_event)
        self._clock = clock
        self._lock = threading.Lock()
        self._failure: tuple[str, float, bool] | None = None  # kind, since, by a write
        self._setup: tuple[str, str, float] | None = None  # kind, reason, since
        self._said = up_event
        self._logged: dict[str, float] = {}

    def failed(self, kind: str, *, writing: bool, detail: str = "") -> None:
        with self._lock:
            if self._failure is None or (writing and not self._failure[2]):
                since = self._failure[1] if self._failure else time.time()
                self._failure = (kind, since, writing)
            line = self._settle(detail)
        self._log(line)

    def succeeded(self, *, writing: bool) -> None:
        if self._failure is None:
            return  # the usual case, without the lock
        with self._lock:
            if self._failure is not None and (writing or not self._failure[2]):
                self._failure = None
            line = self._settle()
        self._log(line)

    def set_up(self, problem: tuple[str, str] | None) -> None:
        """The store's set-up has ``problem`` (kind, reason), or none any more."""
        with self._lock:
            if problem is None:
                self._setup = None
            elif self._setup is None or self._setup[:2] != problem:
                self._setup = (*problem, time.time())
            line = self._settle()
        self._log(line)

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {"backend": self.backend, "state": "ok"}
        with self._lock:
            failure, setup = self._failure, self._setup
        if failure is not None:
            described.update(state="degraded", problem=failure[0], since=iso_seconds(failure[1]))
        elif setup is not None:
            described.update(
                state="degraded", problem=setup[0], reason=setup[1], since=iso_seconds(setup[2])
            )
        return described

    def _settle(self, detail: str = "") -> str | None:
        """The line to log for the state now, if it changed and was not said lately."""
        if self._failure is not None:
            error = detail[:200]  # a refused pipeline names its whole first command
            fields = {"event": self._events[0], "problem": self._failure[0], "error": error}
        elif self._setup is not None:
            fields = {"event": self._events[0], "problem": self._setup[0], "reason": self._setup[1]}
        else:
            fields = {"event": self._events[1]}
        state = "|".join(v for k, v in fields.items() if k != "error")
        if state == self._said:
            return None
        self._said = state
        now = self._clock()
        if now - self._logged.get(state, float("-inf")) < LOG_EVERY:
            return None
        self._logged[state] = now
        return logfmt(**{k: v for k, v in fields.items() if v})

    @staticmethod
    def _log(line: str | None) -> None:
        if line is not None:
            log.warning(line)


def iso_seconds(timestamp: float) -> str:
    """A wall-clock time as ``/status`` shows it: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def dedupe_window(items: list[Item], limit: int) -> list[Item]:
    """The first ``limit`` of ``items`` (newest first), stories ingested twice merged."""
    return newest_first(merge_duplicates(items))[:limit]


def search_text(item: Item) -> str:
    """What ``?q=`` words are looked for in: title and excerpt, casefolded."""
    return f"{item.title}\n{item.excerpt}".casefold()


def matches(item: Item, words: Sequence[str]) -> bool:
    text = search_text(item)
    return all(word in text for word in words)


def select(items: list[Item], limit: int, words: Sequence[str]) -> list[Item]:
    """What :meth:`Store.newest` answers, made from ``items`` (newest first) held in
    memory: the first ``limit`` holding every one of ``words``, duplicates merged."""
    return dedupe_window([item for item in items if matches(item, words)], limit)


# Explicit JSON forms of what is stored: never pickles, so that whoever can write to the
# store cannot make the bridge run code.


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
        "modified": item.modified.isoformat() if item.modified else None,
    }


def item_from_dict(data: dict[str, Any]) -> Item:
    ts, article_id = data["key"]
    modified = data.get("modified")
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
        modified=datetime.fromisoformat(modified) if modified else None,
    )


def failure_to_json(failure: Failure | None) -> str | None:
    if failure is None:
        return None
    error = failure.error
    return json.dumps(
        {
            "count": failure.count,
            "at": failure.at,
            "retry_at": failure.retry_at,
            "kind": error.kind,
            "message": str(error),
            "retry_after": error.retry_after,
            "upstream_status": error.upstream_status,
        }
    )


def failure_from_json(raw: str | bytes | None) -> Failure | None:
    """The failure again, its error of the same class, so a reader gets the same status."""
    if not raw:
        return None
    data = json.loads(raw)
    cls = ERROR_KINDS.get(data["kind"], UpstreamError)
    error = cls.restore(
        data["message"], retry_after=data["retry_after"], upstream_status=data["upstream_status"]
    )
    return Failure(data["count"], error, data["at"], data["retry_at"])


Record = TypeVar("Record", "Gap", Cadence)


def record_to_json(record: Gap | Cadence) -> str:
    """A gap or a cadence as the stores keep it: a JSON object of its fields."""
    return json.dumps(dataclasses.asdict(record))


def record_from_json(kind: type[Record], raw: str | bytes | None) -> Record | None:
    """What :func:`record_to_json` wrote, or None where nothing was."""
    return kind(**json.loads(raw)) if raw else None


class SharedPause:
    """The site's pause (:mod:`feedbridge.politeness`) in the store, for every process;
    in this one while the store fails."""

    def __init__(self, store: Pause, clock: Callable[[], float]) -> None:
        self._store = store
        self._local = LocalPause(clock)

    def paused_for(self) -> float:
        try:
            return max(self._store.paused_for(), self._local.paused_for())
        except StoreError:
            return self._local.paused_for()

    def pause(self, seconds: float) -> None:
        self._local.pause(seconds)
        try:
            self._store.pause(seconds)
        except StoreError:
            log.warning("the site's pause is kept in this process only: the store fails")
