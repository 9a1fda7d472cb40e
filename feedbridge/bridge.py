"""The service in the middle: the one door that the web layer, the operator's views, the
refresher and the command line go through.

Two paths meet at the store, and neither waits for the other:

* **refresh** (the background refresher, or a reader's request when it is off): one
  fetch of a category's listing under the category's lease, merged into the store;
  then the full text of new stories, within a budget, in the background;
* **serve**: the newest stories of the category from the store, rendered once per
  version of the category and format, served from this process's memory. A category
  never seen before is fetched on the request (its listing only: full text follows).

The process keeps its last rendering of every feed: when the store has nothing (a
Redis restarted or flushed) or fails, readers get that, marked stale.
"""

from __future__ import annotations

import contextlib
import enum
import gzip
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from cachetools import LRUCache

from feedbridge import observe, schedule
from feedbridge.archive import Archive, Walked
from feedbridge.categories import Category, Registry
from feedbridge.errors import (
    BackingOff,
    HTTPStatusError,
    LayoutChanged,
    SitePaused,
    UpstreamError,
)
from feedbridge.feeds import FeedInfo, Format, updated
from feedbridge.fulltext import FullText
from feedbridge.history import next_try
from feedbridge.model import Item, newest_first
from feedbridge.politeness import Backoff
from feedbridge.prepared import Prepared
from feedbridge.renderer import Renderer
from feedbridge.scrape import parse_home, parse_listing
from feedbridge.store import (
    CategoryState,
    Failure,
    Lease,
    Listing,
    Merged,
    Pending,
    Retention,
    SharedPause,
    Store,
    StoreError,
    dedupe_window,
    iso_seconds,
    matches,
)
from feedbridge.text import logfmt
from feedbridge.upstream import Upstream
from feedbridge.window import Windows

log = logging.getLogger(__name__)
T = TypeVar("T")

# Feeds are rendered with this root in their self links, put in place when served, so
# that what is rendered and kept never depends on a request's Host header.
ROOT_MARKER = "https://feedbridge.invalid/"
FETCH_LEASE = 6.0  # seconds a category's fetch lease lasts unless renewed (its holder died)
SELECTION_BYTES = 8 * 1024 * 1024  # renderings of ?limit= / ?q= kept in memory
SERVED_BYTES = 16 * 1024 * 1024  # bodies with a request's root put in, kept in memory
# Requests of one process waiting at once for a never-seen category. Each is a greenlet
# of a gevent worker (some KiB), so the bound is high enough for a burst of first readers
# landing unevenly on the workers, and far below a worker's 1000 connections: the others
# are left for cached feeds and /healthz.
COLD_WAITERS = 256
STORE_RETRY_AFTER = 10.0  # seconds: when to ask again for what the store must answer
# ?limit= / ?q= renderings of one process at once, how long one waits for its turn, and
# when a reader turned away is told to come back. Each costs as much CPU as a whole feed.
SELECTIONS = 2
SELECTION_WAIT = 2.0
SELECTION_RETRY_AFTER = 5.0
OFF_THE_LOOP = 256 * 1024  # bytes of a body compressed in a real thread under gevent
REPAIRS_IN_A_ROW = 3  # walks of the archive one background repair makes at the most
FULL_TEXT_BATCH = 100  # stories asked for at most per fill; what the budget leaves waits


@dataclass(frozen=True, slots=True)
class Rendered:
    """A feed document with :data:`ROOT_MARKER` for the bridge's own URL, and its validators."""

    body: bytes
    etag: str
    last_modified: datetime
    media_type: str

    @classmethod
    def of(cls, body: bytes, media_type: str, last_modified: datetime) -> Rendered:
        # The ETag is a digest of the body: it changes with the content, never with time.
        etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, etag, last_modified, media_type)


class Freshness(enum.Enum):
    HIT = "hit"  # refreshed within the TTL
    STALE = "stale"  # older: kept while a refresh is due or failing
    MISS = "miss"  # fetched for this request


@dataclass(frozen=True, slots=True)
class Served:
    """A feed as one request gets it: the answer prepared for its root, and how fresh."""

    prepared: Prepared
    freshness: Freshness
    age: float  # seconds since the category was refreshed
    fresh_for: float  # seconds until its next refresh is due; 0 when stale


class Unavailable(Exception):
    """No right answer now: the web layer says ``503`` with ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Selection:
    """What ``?limit=`` and ``?q=`` asked for, and their own query string (for self links)."""

    limit: int | None = None
    words: tuple[str, ...] = ()
    query: str = ""

    def __bool__(self) -> bool:
        return self.limit is not None or bool(self.words)

    def path(self, category: Category, fmt: Format) -> str:
        path = f"feeds/{category.slug}.{fmt.value}"
        return f"{path}?{self.query}" if self else path


class Outcome(enum.Enum):
    REFRESHED = "refreshed"
    UNCHANGED = "unchanged"  # the site answered 304
    FRESH = "fresh"  # refreshed within the TTL by someone else: nothing to do
    BUSY = "busy"  # another process is fetching it
    BACKING_OFF = "backing-off"  # its last fetch, by another process maybe, failed


class Bridge:
    def __init__(
        self,
        registry: Registry,
        *,
        upstream: Upstream,
        store: Store,
        fulltext: FullText,
        ttl: float,
        min_refresh: float = 60.0,
        feed_size: int = 50,
        retention: Retention | None = None,
        refresh_on_request: bool = True,
        fulltext_by_default: bool = True,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        hub: str | None = None,
        repair_pages: int = 10,
        repair_after_gap: bool = True,
    ) -> None:
        """``repair_after_gap``: repair gaps from the archive in the background after the
        refresh that found them (else only when :meth:`repair` is called)."""
        self.registry = registry
        self.upstream = upstream
        self.store = store
        self.fulltext = fulltext
        self.ttl = ttl
        self.policy = schedule.Policy(ttl, min_refresh)
        self.feed_size = feed_size
        self.retention = retention or Retention()
        self.refresh_on_request = refresh_on_request
        self.fulltext_by_default = fulltext_by_default
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.hub = hub
        self.repair_after_gap = repair_after_gap
        self.archive = Archive(
            registry, upstream=upstream, store=store, retention=self.retention,
            pages=repair_pages, clock=clock, backoff=self.backoff,
        )  # fmt: skip
        self.notify: Callable[[Category, Merged], None] = lambda _category, _merged: None
        upstream.pause = SharedPause(store, clock)
        self._lock = threading.Lock()
        # The full feeds, by category and format: the store's version each was rendered
        # from, when that was refreshed, and the rendering (also the last good copy).
        self._feeds: dict[tuple[str, Format], tuple[str, float, Rendered]] = {}
        self._renderer = Renderer()
        self._windows = Windows(store)
        self._selections: LRUCache[tuple[object, ...], Rendered] = LRUCache(
            SELECTION_BYTES, getsizeof=lambda r: len(r.body)
        )
        self._served: LRUCache[tuple[str, str], Prepared] = LRUCache(
            SERVED_BYTES, getsizeof=lambda prepared: prepared.size
        )
        # The stories each category's feed was last rendered from (any format): what a
        # feed in another format is rendered from while the store fails.
        self._stories: dict[str, tuple[str, float, list[Item]]] = {}
        self._direct: dict[str, threading.Lock] = {slug: threading.Lock() for slug in registry}
        self._flights: dict[str, Future[CategoryState]] = {}  # first fetches, by category
        self._refreshing: set[str] = set()  # categories refreshed in the background
        self._cold = threading.BoundedSemaphore(COLD_WAITERS)
        self._selecting = threading.BoundedSemaphore(SELECTIONS)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="feedbridge-refresh")
        self._repairs = ThreadPoolExecutor(1, thread_name_prefix="feedbridge-repair")
        self._repairing = False
        self._background: set[Future[None]] = set()

    # --- serving --------------------------------------------------------------------

    def feed(
        self,
        category: Category,
        fmt: Format,
        root: str,
        *,
        limit: int | None = None,
        words: Sequence[str] = (),
        query: str = "",
    ) -> Served:
        """The category's feed for a reader whose view of the bridge's URL is ``root``.

        ``limit`` and ``words`` select from the whole kept history; ``query`` is the
        selection's own query string, for the feed's self link. While the store fails,
        what this process holds is served, a selection filtered from it as the store
        would; :class:`Unavailable` when what it holds cannot answer the selection.
        """
        selection = Selection(limit, tuple(words), query)
        now = self.clock()
        try:
            state = self.store.state(category.slug)
        except StoreError:
            return self._last_good(category, fmt, root, now, selection)
        freshness = Freshness.HIT
        if not state.seen:
            if (category.slug, fmt) in self._feeds:
                self._refresh_in_background(category)  # the store lost it: put it back
                return self._last_good(category, fmt, root, now, selection)
            try:
                state = self._first_fetch(category)
            except StoreError:  # a full disk, Redis out of memory: the process reads it
                return self._last_good(category, fmt, root, now, selection)
            freshness = Freshness.MISS
        elif self._due_in(state, now) <= 0:
            freshness = Freshness.STALE
            if self.refresh_on_request and not self._backing_off(state, now):
                self._refresh_in_background(category)
        try:
            if not selection:
                rendered = self._full_feed(category, fmt, state)
            else:
                rendered = self._selection(category, fmt, state, selection)
        except StoreError:
            return self._last_good(category, fmt, root, now, selection)
        age = max(0.0, now - (state.refreshed_at or now))
        fresh_for = max(0.0, self._due_in(state, now))
        served = self._served_as(rendered, root, freshness, age, fresh_for)
        if freshness is Freshness.MISS and self.wants_full_text(category):
            # Only now: the article fetches would compete with this answer for the CPU.
            self._in_background(lambda: self._fill_quietly(category))
        return served

    def fresh(self, category: Category, fmt: Format, root: str) -> Served | None:
        """The hot case, for a fast path in front of the app: the category's full feed
        when this process holds it fresh (a hit), already prepared for ``root``; else
        None, and :meth:`feed` answers.

        Reads nothing but memory: the store's state is remembered by the store, checked
        against other processes' changes at most every
        :data:`~feedbridge.store.STATE_CHECK` seconds.
        """
        now = self.clock()
        try:
            state = self.store.state(category.slug)
        except StoreError:
            return None
        fresh_for = self._due_in(state, now)
        if not state.seen or fresh_for <= 0:
            return None
        kept = self._feeds.get((category.slug, fmt))
        if kept is None or kept[0] != state.version:
            return None
        with self._lock:
            prepared = self._served.get((kept[2].etag, root))
        if prepared is None:
            return None
        age = max(0.0, now - (state.refreshed_at or now))
        return Served(prepared, Freshness.HIT, age, fresh_for)

    def headlines(self, category: Category, count: int) -> list[Item]:
        """The category's newest stories as kept now; never asks the site."""
        try:
            return self.store.newest(category.slug, count)
        except StoreError:
            return []

    def feed_info(self, category: Category, self_url: str) -> FeedInfo:
        base = self.upstream.base_url
        if category.label is None:
            description = "The latest articles from every source on KCNA Watch."
        else:
            description = f"The latest articles from {category.label}, as KCNA Watch lists them."
        return FeedInfo(
            id=f"tag:kcnawatch.org,2014:feedbridge/{category.slug}",
            title=category.feed_title,
            description=description,
            self_url=self_url,
            home_url=base + category.paths[0],
            language=category.language,
            hub=self.hub,
        )

    def _full_feed(self, category: Category, fmt: Format, state: CategoryState) -> Rendered:
        key = (category.slug, fmt)
        with self._lock:
            kept = self._feeds.get(key)
        if kept is not None and kept[0] == state.version:
            return kept[2]
        items = self.store.newest(category.slug, self.feed_size)
        rendered = self._render(category, fmt, items, f"feeds/{category.slug}.{fmt.value}")
        refreshed = state.refreshed_at or self.clock()
        with self._lock:
            self._feeds[key] = (state.version, refreshed, rendered)
            self._stories[category.slug] = (state.version, refreshed, items)
        return rendered

    def _selection(
        self, category: Category, fmt: Format, state: CategoryState, selection: Selection
    ) -> Rendered:
        """A ``?limit=``/``?q=`` rendering, made by at most :data:`SELECTIONS` requests
        of this process at once, off the worker's loop: a flood of distinct selections
        waits its turn (or is :class:`Unavailable`) while cached feeds are served."""
        key = (category.slug, state.version, fmt, selection.limit, selection.words)
        with self._lock:
            kept = self._selections.get(key)
        if kept is not None:
            return kept
        rendered = self._render_selection(
            category,
            fmt,
            selection,
            lambda: self._windows.newest(
                category.slug, state.version, selection.limit or self.feed_size, selection.words
            ),
        )
        with self._lock:
            self._selections[key] = rendered
        return rendered

    def _render_selection(
        self,
        category: Category,
        fmt: Format,
        selection: Selection,
        select: Callable[[], list[Item]],
    ) -> Rendered:
        """The stories ``select`` gives, rendered in their turn (one of
        :data:`SELECTIONS`, else :class:`Unavailable` after :data:`SELECTION_WAIT`)."""
        if not self._selecting.acquire(timeout=SELECTION_WAIT):
            raise Unavailable(
                "too many selections (?limit=, ?q=) at once; ask again shortly",
                retry_after=SELECTION_RETRY_AFTER,
            )
        try:
            items = select()
            path = selection.path(category, fmt)
            return off_the_loop(lambda: self._render(category, fmt, items, path))
        finally:
            self._selecting.release()

    def _render(self, category: Category, fmt: Format, items: list[Item], path: str) -> Rendered:
        info = self.feed_info(category, ROOT_MARKER + path)
        document = self._renderer.render(fmt, info, items, base_url=self.upstream.base_url)
        return Rendered(document.body, document.etag, updated(items), fmt.media_type)

    def _served_as(
        self, rendered: Rendered, root: str, freshness: Freshness, age: float, fresh_for: float
    ) -> Served:
        key = (rendered.etag, root)
        with self._lock:
            prepared = self._served.get(key)
        if prepared is None:
            body = rendered.body.replace(ROOT_MARKER.encode(), root.encode())
            prepared = Prepared.of(
                body, rendered.etag, rendered.last_modified, rendered.media_type, _gzip
            )
            with self._lock:
                self._served[key] = prepared
        return Served(prepared, freshness, age, fresh_for)

    def _last_good(
        self, category: Category, fmt: Format, root: str, now: float, selection: Selection
    ) -> Served:
        """What this process has, when the store has nothing or fails: the feed it
        rendered last, else one rendered from the stories it last served in another
        format, else (it never served the category) its listing, read at most once a TTL
        by this process, kept here and not in the store.

        A selection is made from those stories as the store would make it, never
        answered with the whole feed: ``?q=`` finds what they hold (``?limit=`` caps
        it); a ``?limit=`` alone past them is :class:`Unavailable` (the store holds more
        than this process knows).
        """
        with self._lock:
            kept = self._feeds.get((category.slug, fmt))
        if kept is not None and not selection:
            age = max(0.0, now - kept[1])
            return self._served_as(kept[2], root, Freshness.STALE, age, 0.0)
        with self._direct[category.slug]:  # one read of the site for every such request
            with self._lock:
                known = self._stories.get(category.slug)
            freshness = Freshness.STALE
            if known is None or (known[0] == "" and now - known[1] >= self.ttl):
                listing = self.read_listing(category)
                assert listing is not None  # asked without validators: never "not modified"
                known = ("", now, list(listing.items[: self.feed_size]))
                with self._lock:
                    self._stories[category.slug] = known
                freshness = Freshness.MISS
        items = known[2]
        if selection:
            if not selection.words and (selection.limit or 0) > len(items):
                raise Unavailable(
                    "the store is unavailable, and this process holds fewer stories than asked for",
                    retry_after=STORE_RETRY_AFTER,
                )
            rendered = self._render_selection(
                category,
                fmt,
                selection,
                lambda: dedupe_window(
                    [item for item in items if matches(item, selection.words)],
                    selection.limit or self.feed_size,
                ),
            )
        else:
            rendered = self._render(category, fmt, items, selection.path(category, fmt))
            with self._lock:
                self._feeds[(category.slug, fmt)] = (known[0], known[1], rendered)
        return self._served_as(rendered, root, freshness, max(0.0, now - known[1]), 0.0)

    # --- fetching on a request ------------------------------------------------------

    def _first_fetch(self, category: Category) -> CategoryState:
        """A never-seen category: its listing, fetched once for every waiting request.

        Waits are bounded: in time (another process's fetch, then ours) and in number
        (past :data:`COLD_WAITERS` a request is told to come back shortly).
        """
        if not self._cold.acquire(blocking=False):
            raise BackingOff("busy fetching new categories", retry_after=5)
        try:
            with self._lock:
                flight = self._flights.get(category.slug)
                leader = flight is None
                if flight is None:
                    flight = self._flights[category.slug] = Future()
            if leader:
                self._lead_first_fetch(category, flight)
            return flight.result(timeout=self._fetch_deadline() + FETCH_LEASE + 5)
        except TimeoutError:
            raise BackingOff("still fetching this category", retry_after=5) from None
        finally:
            self._cold.release()

    def _lead_first_fetch(self, category: Category, flight: Future[CategoryState]) -> None:
        try:
            state = self._fetch_or_await(category)
        except BaseException as exc:
            flight.set_exception(exc)
        else:
            flight.set_result(state)
        finally:
            with self._lock:
                del self._flights[category.slug]

    def _fetch_or_await(self, category: Category) -> CategoryState:
        # Long enough for another process's fetch, or for its lease to expire if it died.
        deadline = time.monotonic() + self._fetch_deadline() + FETCH_LEASE
        while True:
            state = self.store.state(category.slug)
            if state.seen:
                return state
            if self._backing_off(state, self.clock()):
                assert state.failure is not None
                raise BackingOff(
                    f"backing off after: {state.failure.error}",
                    retry_after=state.failure.retry_at - self.clock(),
                    upstream_status=state.failure.error.upstream_status,
                    cause=state.failure.error,
                )
            if self.refresh(category) is not Outcome.BUSY:
                continue
            if time.monotonic() > deadline:
                raise BackingOff("another process is still fetching this category", retry_after=5)
            time.sleep(0.1)  # another process holds the fetch lease: its result is near

    def _fetch_deadline(self) -> float:
        anchors = max((len(c.paths) for c in self.registry.values()), default=1)
        return anchors * (self.upstream.timeout.total + self.upstream.min_interval)

    def _refresh_in_background(self, category: Category) -> None:
        with self._lock:
            if category.slug in self._refreshing:
                return
            self._refreshing.add(category.slug)

        def run() -> None:
            try:
                # A failure of the site is recorded and logged by refresh; readers are
                # served what is kept meanwhile.
                with contextlib.suppress(UpstreamError):
                    self.refresh(category, full_text_after=True)
            except StoreError as exc:
                log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))
            finally:
                with self._lock:
                    self._refreshing.discard(category.slug)

        self._in_background(run)

    def _in_background(self, work: Callable[[], None]) -> None:
        def logged() -> None:
            try:
                work()
            except Exception:
                log.exception("background work failed unexpectedly")

        flight = self._pool.submit(logged)
        with self._lock:
            self._background.add(flight)
        flight.add_done_callback(self._background.discard)

    # --- refreshing ----------------------------------------------------------------

    def due(self, category: Category) -> bool:
        """Whether the category's refresh is due now (and the site may be asked)."""
        state = self.store.state(category.slug)
        now = self.clock()
        if self._backing_off(state, now) or self.upstream.pause.paused_for() > 0:
            return False
        return self._due_in(state, now) <= 0

    def next_due(self, category: Category) -> float:
        """Seconds until the category's refresh is due (0 when it is), back-off included."""
        now = self.clock()
        return max(0.0, self._next(self.store.state(category.slug), now).at - now)

    def refresh(
        self, category: Category, *, force: bool = False, full_text_after: bool = False
    ) -> Outcome:
        """Read the category's listing into the store, unless it is fresh (``force``
        reads it anyway) or another process is reading it.

        A failure is recorded (for the back-off) before the lease is let go, so that
        the next process to take it sees it, and then raised.
        """
        lease = Lease(self.store, f"fetch:{category.slug}", FETCH_LEASE)
        if not lease.acquire():
            return Outcome.BUSY
        started = time.perf_counter()
        try:
            state = self.store.state(category.slug)
            now = self.clock()
            if not force and self._due_in(state, now) > 0:
                return Outcome.FRESH
            # Decided on the state read under the lease: the caller's, read before,
            # may be older than another process's failure (see STATE_CHECK).
            if not force and self._backing_off(state, now):
                return Outcome.BACKING_OFF
            try:
                listing = self.read_listing(category, state)
            except SitePaused:
                raise  # the site's pause, for every category: no failure of this one's
            except UpstreamError as exc:
                self._record_failure(category, state, exc, started)
                raise
            now = self.clock()
            if listing is None:
                self.store.touch(category.slug, now=now)
                outcome = Outcome.UNCHANGED
            else:
                kept = self.store.newest(category.slug, 1) if state.stories else []
                merged = self.store.merge(category.slug, listing, now=now)
                self._merged(category, state, merged, len(listing.items))
                if merged.gap is not None and kept:
                    self.archive.open_gap(category.slug, kept[0].key)
                self.store.prune(category.slug, self.retention, now=now)
                outcome = Outcome.REFRESHED
            self._reschedule(category, state, listing, now)
        finally:
            lease.release()
        if full_text_after and self.wants_full_text(category):
            self._in_background(lambda: self._fill_quietly(category))
        if self.repair_after_gap and self.archive.due():
            self._repair_in_background()
        return outcome

    def repair(self) -> Walked | None:
        """Repair every open gap the archive can close, now, in this thread (see
        :meth:`feedbridge.archive.Archive.repair`); None when there was nothing to do,
        or another process repairs."""
        try:
            return self.archive.repair()
        except StoreError as exc:
            log.warning(logfmt(event="store_error", action="repair", error=str(exc)))
            return None

    def _repair_in_background(self) -> None:
        """One repair at a time in this process (and in every process: a lease)."""
        with self._lock:
            if self._repairing:
                return
            self._repairing = True

        def run() -> None:
            try:
                # Again while a gap found during the walk is left: at most a few walks,
                # each of which stops at its first failure (its back-off ends the loop).
                for _ in range(REPAIRS_IN_A_ROW):
                    walked = self.repair()
                    if walked is None or not walked.complete or not self.archive.due():
                        break
            except Exception:
                log.exception("a repair failed unexpectedly")
            finally:
                with self._lock:
                    self._repairing = False

        flight = self._repairs.submit(run)
        with self._lock:
            self._background.add(flight)
        flight.add_done_callback(self._background.discard)

    def read_listing(
        self, category: Category, state: CategoryState | None = None
    ) -> Listing | None:
        """Fetch and scrape the category's listing now; None when the site says it is
        unchanged since ``state`` (a 304)."""
        last_error: UpstreamError | None = None
        for path in category.paths:
            conditional = state is not None and state.source_path == path
            try:
                with observe.fetching_for(category.slug):
                    page = self.upstream.fetch(
                        path,
                        etag=state.etag if conditional and state else None,
                        last_modified=state.last_modified if conditional and state else None,
                    )
            except HTTPStatusError as exc:
                if exc.upstream_status not in (404, 410):
                    raise
                log.warning("%s: anchor %s is gone (%s)", category.slug, path, exc)
                last_error = exc
                continue
            if page.not_modified:
                return None
            base = self.upstream.base_url
            try:
                if category.label is None:
                    items = parse_home(page.body, base_url=base, encoding=page.encoding)
                else:
                    items = parse_listing(
                        page.body,
                        label=category.label,
                        base_url=base,
                        encoding=page.encoding,
                        page_path=path,
                    )
            except LayoutChanged:
                observe.parse_failed(category.slug)
                raise
            return Listing(
                items=tuple(newest_first(items)),
                etag=page.etag,
                last_modified=page.last_modified,
                source_path=path,
            )
        assert last_error is not None
        raise HTTPStatusError(
            f"every anchor page of {category.slug} is gone ({last_error})",
            upstream_status=last_error.upstream_status,
        )

    def wants_full_text(self, category: Category) -> bool:
        return self.fulltext_by_default if category.fulltext is None else category.fulltext

    def fill_full_text(self, category: Category) -> None:
        """Fetch the full text of the category's stories that lack it, newest first,
        within the budget. A page still loading at the end saves its story when it
        arrives; one that fails is tried again later, later each time."""
        if not self.wants_full_text(category):
            return
        lease = Lease(self.store, f"fulltext:{category.slug}", FETCH_LEASE)
        if not lease.acquire():
            return
        try:
            pending = self.store.pending(category.slug, now=self.clock(), limit=FULL_TEXT_BATCH)
            flights = [
                self.fulltext.submit(p.item, category.slug, partial(self._save_article, p))
                for p in pending
            ]
            self.fulltext.wait(flights)
        finally:
            lease.release()

    def _fill_quietly(self, category: Category) -> None:
        try:
            self.fill_full_text(category)
        except StoreError as exc:
            log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))

    def _save_article(self, pending: Pending, item: Item | None) -> None:
        now = self.clock()
        try:
            if item is not None:
                modified = datetime.fromtimestamp(now, UTC)  # readers see it updated
                self.store.save_full_text(replace(item, modified=modified))
                return
            retry_at = next_try(pending.attempts, now)
            self.store.postpone_full_text(pending.item.key, retry_at=retry_at)
        except StoreError as exc:
            log.warning(logfmt(event="store_error", story=pending.item.key, error=str(exc)))

    def _merged(
        self, category: Category, before: CategoryState, merged: Merged, listed: int
    ) -> None:
        observe.refreshed(category.slug, len(merged.added), listed)
        if merged.gap is not None:
            observe.gap(category.slug)
            log.warning(
                logfmt(
                    event="gap", category=category.slug, kept=before.stories,
                    listed=listed, since_previous_s=round(merged.gap.since_previous or 0),
                    in_a_row=merged.gap.in_a_row,
                )
            )  # fmt: skip
        if merged.added:
            self.notify(category, merged)

    def _record_failure(
        self, category: Category, state: CategoryState, error: UpstreamError, started: float
    ) -> None:
        now = self.clock()
        count = state.failure.count + 1 if state.failure else 1
        delay = self.backoff.delay(count, error.retry_after)
        try:
            self.store.save_failure(category.slug, Failure(count, error, now, now + delay))
        except StoreError as exc:
            log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))
        log.warning(
            logfmt(
                event="failure", category=category.slug, kind=error.kind, status=error.status,
                duration_ms=round((time.perf_counter() - started) * 1000), failures=count,
                retry_in_s=round(delay), serving="stale" if state.seen else "error",
                error=str(error),
            )
        )  # fmt: skip

    def _reschedule(
        self, category: Category, before: CategoryState, listing: Listing | None, now: float
    ) -> None:
        """Estimate the category's cadence from its history, once per refresh: readers
        and the refresher only read it back with the category's state. The listing's
        size is what it held now, or (the site said "not modified") last time."""
        if listing is not None:
            listed = len(listing.items)
        else:
            listed = before.cadence.listed if before.cadence is not None else 0
        history = self.store.published_hours(category.slug, since=now - schedule.WINDOW)
        cadence = schedule.cadence(history, now=now, listed=listed, ttl=self.ttl)
        self.store.save_cadence(category.slug, cadence)

    def _due(self, state: CategoryState) -> schedule.Due:
        """When the category's next refresh is due, back-off aside."""
        gaps = state.gap.in_a_row if state.gap is not None else 0
        return schedule.due(state.refreshed_at, state.cadence, gaps, self.policy)

    def _next(self, state: CategoryState, now: float) -> schedule.Due:
        """When the category's next refresh is due, back-off included."""
        failure = state.failure
        retry_at, count = (failure.retry_at, failure.count) if failure else (None, 0)
        return schedule.next_refresh(self._due(state), retry_at, count, now)

    def _due_in(self, state: CategoryState, now: float) -> float:
        """Seconds until the category's next refresh is due; 0 or less when it is (a
        category never read is due)."""
        return self._due(state).at - now

    @staticmethod
    def _backing_off(state: CategoryState, now: float) -> bool:
        return schedule.backing_off(state.failure.retry_at if state.failure else None, now)

    # --- the operator's view ---------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What is kept for every category, read without asking the site anything."""
        categories = {}
        for category in self.registry.values():
            try:
                categories[category.slug] = self._category_status(category)
            except StoreError:
                categories[category.slug] = {"store": "unavailable"}
        paused = self.upstream.pause.paused_for()
        site = {"paused_until": _when(self.clock() + paused) if paused > 0 else None}
        try:
            gaps: object = [
                {"category": gap.category, "since": _when(gap.since), "why": gap.why,
                 "found": gap.found}
                for gap in self.archive.gaps()
            ]  # fmt: skip
        except StoreError:
            gaps = "unavailable"
        return {
            "store": self.store.describe(), "site": site, "open_gaps": gaps,
            "categories": categories,
        }  # fmt: skip

    def _category_status(self, category: Category) -> dict[str, object]:
        state = self.store.state(category.slug)
        now = self.clock()
        newest = self.store.newest(category.slug, 1)
        failure, gap = state.failure, state.gap
        following = self._next(state, now)
        return {
            "last_refresh": _when(state.refreshed_at),
            "stories": state.stories,
            "newest_item": newest[0].published.isoformat() if newest else None,
            "stale": state.seen and self._due_in(state, now) <= 0,
            "next_refresh_at": _when(max(now, following.at)),
            "next_refresh_in_s": round(max(0.0, following.at - now)),
            "next_refresh_why": following.why,
            "last_error": (
                {
                    "kind": failure.error.kind,
                    "status": failure.error.upstream_status,
                    "at": _when(failure.at),
                    "failures_in_a_row": failure.count,
                }
                if failure
                else None
            ),
            "backing_off_until": (
                _when(failure.retry_at) if failure and self._backing_off(state, now) else None
            ),
            "last_gap": (
                {
                    "at": _when(gap.at),
                    "since_previous_refresh_s": round(gap.since_previous or 0),
                    "ongoing": gap.in_a_row > 0,
                }
                if gap
                else None
            ),
        }

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the background work in flight (tests and shutdown)."""
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while time.monotonic() < deadline:
            with self._lock:
                pending: list[Future[Any]] = [*self._flights.values(), *self._background]
            if not pending:
                break
            wait(pending, timeout=min(deadline - time.monotonic(), 3600))
        self.fulltext.drain(max(0.0, deadline - time.monotonic()) if timeout else None)


def off_the_loop(work: Callable[[], T]) -> T:
    """``work()``, in a real thread when gevent runs this process (its workers): a long
    render on the loop would hold every other connection of the worker for as long.
    The loop then takes the interpreter back at each switch interval (5 ms)."""
    if "gevent.monkey" in sys.modules:
        from gevent import get_hub
        from gevent.monkey import is_module_patched

        if is_module_patched("threading"):
            result: T = get_hub().threadpool.apply(work)
            return result
    return work()


def _gzip(body: bytes) -> bytes:
    """``body`` gzipped; a large one in a real thread (under gevent, the worker's other
    requests go on meanwhile)."""
    compress = partial(gzip.compress, body, 6, mtime=0)
    return off_the_loop(compress) if len(body) > OFF_THE_LOOP else compress()


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return iso_seconds(timestamp)
