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
  failure and the last gap;
* **full text** to fetch: stories without it, each with the time of its next try;
* **leases**: a name held by one token until released or expired (the refresher's,
  and each category's fetch), and the site's own Retry-After.

Every operation may raise :class:`StoreError`; the bridge serves what it has in memory
meanwhile.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Protocol

from feedbridge.errors import ERROR_KINDS, UpstreamError
from feedbridge.model import ArticleKey, Item, newest_first
from feedbridge.scrape import merge_duplicates
from feedbridge.text import logfmt

log = logging.getLogger(__name__)

# How far past ``limit`` a window is read, so that a story ingested twice (merged into
# one item) does not leave the window one short.
DUPLICATE_MARGIN = 10


class StoreError(Exception):
    """The store could not be read or written (disk full, Redis away, a corrupt file)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """The last failure of a category; ``count`` is 0 once a success has resolved it."""

    count: int  # consecutive failures, up to now
    error: UpstreamError
    at: float
    retry_at: float

    def resolved(self) -> Failure:
        """After a success: no more back-off, but what went wrong last, and when."""
        return Failure(0, self.error, self.at, 0.0)


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
    updated: int = 0
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

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        """The category's newest ``limit`` stories holding every one of ``words``
        (casefolded) in their title or excerpt, newest first, duplicates merged."""
        ...

    def pending(self, category: str, *, now: float, limit: int) -> list[Pending]:
        """The category's newest stories without full text whose next try is due."""
        ...

    def save_full_text(self, item: Item) -> None:
        """``item`` now has its full text: stored, and its categories' versions change."""
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

    ``held`` turns false when a renewal fails (the lease expired and was taken).
    """

    def __init__(self, store: Store, name: str, ttl: float) -> None:
        self.store, self.name, self.ttl = store, name, ttl
        self.token = secrets.token_hex(16)
        self.held = False
        self._stop = threading.Event()
        self._renewing = threading.Lock()  # a renewal never lands after the release

    def acquire(self) -> bool:
        self.held = self.store.try_lease(self.name, self.token, self.ttl)
        if self.held:
            self._stop.clear()
            threading.Thread(target=self._heartbeat, daemon=True, name=f"lease-{self.name}").start()
        return self.held

    def release(self) -> None:
        """Let go (a store that fails meanwhile lets the lease run out instead)."""
        self._stop.set()
        with self._renewing:
            if not self.held:
                return
            self.held = False
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
                    self.held = False
                    return


def dedupe_window(items: list[Item], limit: int) -> list[Item]:
    """The first ``limit`` of ``items`` (newest first), stories ingested twice merged."""
    return newest_first(merge_duplicates(items))[:limit]


def search_text(item: Item) -> str:
    """What ``?q=`` words are looked for in: title and excerpt, casefolded."""
    return f"{item.title}\n{item.excerpt}".casefold()


def matches(item: Item, words: Sequence[str]) -> bool:
    text = search_text(item)
    return all(word in text for word in words)


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


def gap_to_json(gap: Gap | None) -> str | None:
    if gap is None:
        return None
    return json.dumps(
        {"at": gap.at, "since_previous": gap.since_previous, "in_a_row": gap.in_a_row}
    )


def gap_from_json(raw: str | bytes | None) -> Gap | None:
    if not raw:
        return None
    data = json.loads(raw)
    return Gap(data["at"], data["since_previous"], data["in_a_row"])


def merged(plan: MergePlan, gap: Gap | None, now: float) -> Merged:
    """What a merge tells its caller; ``gap`` is the category's record after it, a gap of
    this refresh only when it was made ``now``."""
    new = gap is not None and gap.in_a_row > 0 and gap.at == now
    return Merged(tuple(plan.added), plan.updated, gap if new else None)


def next_gap(previous: CategoryState, overlap: bool, now: float) -> Gap | None:
    """The category's gap record after a refresh that did (or did not) ``overlap``.

    A refresh of a category that kept nothing yet cannot be a gap.
    """
    if overlap or previous.stories == 0:
        if previous.gap is None or previous.gap.in_a_row == 0:
            return previous.gap
        return Gap(previous.gap.at, previous.gap.since_previous, 0)
    since = now - previous.refreshed_at if previous.refreshed_at is not None else None
    in_a_row = previous.gap.in_a_row + 1 if previous.gap is not None else 1
    return Gap(now, since, in_a_row)


@dataclass
class MergePlan:
    """What merging a listing into stored stories comes to; computed the same way by
    every backend, from the stored versions of the listed stories."""

    writes: list[Item] = field(default_factory=list)  # new or changed stories
    added: list[ArticleKey] = field(default_factory=list)  # new to the category
    updated: int = 0


def plan_merge(
    listed: Sequence[Item], stored: dict[ArticleKey, Item], members: set[ArticleKey], now: datetime
) -> MergePlan:
    """Which of ``listed`` to write: new stories as they are; known ones when what the
    site lists of them changed (their full text kept; marked modified ``now`` when what
    they said changed, not when something they lacked was filled in).

    Listings do not all say everything (the home page names no source): what one leaves
    out is kept from before, so two listings of one story never undo each other.
    """
    plan = MergePlan()
    for item in listed:
        old = stored.get(item.key)
        if old is None:
            plan.writes.append(item)
        else:
            merged = replace(
                old,
                title=item.title,
                path=item.path,
                excerpt=item.excerpt or old.excerpt,
                listed=item.listed or old.listed,
                thumbnail=item.thumbnail or old.thumbnail,
                source=item.source or old.source,
            )
            if merged != old:
                # Filling in what was missing is no change of the story; changing what
                # it said is.
                revised = any(
                    getattr(old, name) and getattr(merged, name) != getattr(old, name)
                    for name in ("title", "excerpt", "thumbnail", "source", "listed")
                )
                plan.writes.append(replace(merged, modified=now) if revised else merged)
                plan.updated += 1
        if item.key not in members:
            plan.added.append(item.key)
    return plan
