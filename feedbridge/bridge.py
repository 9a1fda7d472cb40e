"""The service in the middle: :class:`FeedService`, the one door that the web layer, the
operator's views, the refresher and the command line go through.

Two paths meet at the store, and neither waits for the other:

* **refresh** (:mod:`feedbridge.refresh`; the background refresher, or a reader's
  request when it is off): one fetch of a category's listing under the category's
  lease, merged into the store; then the full text of new stories, within a budget, in
  the background (:mod:`feedbridge.background`);
* **serve** (:mod:`feedbridge.feed_cache`): the newest stories of the category from the
  store, rendered once per version of the category and format, served from this
  process's memory. A category never seen before is fetched on the request
  (:mod:`feedbridge.first_fetch`; its listing only: full text follows).

The process keeps its last rendering of every feed: when the store has nothing (a
Redis restarted or flushed) or fails, readers get that, marked stale.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from feedbridge import schedule
from feedbridge.archive import Archive, Walked
from feedbridge.background import Background
from feedbridge.categories import Category, Registry
from feedbridge.errors import UpstreamError
from feedbridge.feed_cache import CacheStats, FeedCache, FeedRenderer, Selection
from feedbridge.feeds import Format
from feedbridge.first_fetch import FirstFetch
from feedbridge.fulltext import FullText
from feedbridge.model import Item
from feedbridge.politeness import Backoff
from feedbridge.prepared import Freshness, Served
from feedbridge.refresh import FullTextFill, Outcome, Refresh, backing_off, due_in
from feedbridge.store import Listing, Retention, Store, StoreError
from feedbridge.text import logfmt
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stats:
    """What this process holds in memory now (see :meth:`FeedService.stats`)."""

    cache: CacheStats
    first_fetch_waiting: int  # requests waiting for a never-seen category's first fetch


class FeedService:
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
        notify: Callable[[Category], None] | None = None,
    ) -> None:
        """``repair_after_gap``: repair gaps from the archive in the background after the
        refresh that found them (else only when :meth:`repair` is called); ``notify``
        hears of every refresh that added stories (a WebSub hub's publisher)."""
        self.registry = registry
        self.upstream = upstream
        self.store = store
        self.fulltext = fulltext
        self.policy = schedule.Policy(ttl, min_refresh)
        self.refresh_on_request = refresh_on_request
        self.repair_after_gap = repair_after_gap
        self.clock = clock
        backoff = backoff or Backoff()
        retention = retention or Retention()
        self.archive = Archive(
            registry, upstream=upstream, store=store, retention=retention,
            pages=repair_pages, clock=clock, backoff=backoff,
        )  # fmt: skip
        self._refresh = Refresh(
            upstream=upstream, store=store, archive=self.archive, policy=self.policy,
            retention=retention, backoff=backoff, clock=clock, notify=notify,
        )  # fmt: skip
        self._full_text = FullTextFill(fulltext, store, by_default=fulltext_by_default, clock=clock)
        self._cache = FeedCache(
            store, FeedRenderer(upstream.base_url, hub=hub), slugs=registry, feed_size=feed_size,
            ttl=ttl, read_listing=self.read_listing,
        )  # fmt: skip
        self._first_fetch = FirstFetch(
            store, refresh=self.refresh, fetch_time=self._fetch_time(), clock=clock
        )
        self._background = Background()

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
        """The category's feed for a reader whose view of the service's URL is ``root``.

        ``limit`` and ``words`` select from the whole kept history; ``query`` is the
        selection's own query string, for the feed's self link. While the store fails,
        what this process holds is served, a selection filtered from it as the store
        would; :class:`~feedbridge.feed_cache.Unavailable` when what it holds cannot
        answer the selection.
        """
        selection = Selection(limit, tuple(words), query)
        now = self.clock()
        last_good = partial(self._cache.last_good, category, fmt, root, now, selection)
        try:
            state = self.store.state(category.slug)
            freshness = Freshness.HIT
            if not state.seen:
                if self._cache.holds(category, fmt):
                    self._refresh_soon(category)  # the store lost it: put it back
                    return last_good()
                state = self._first_fetch.fetch(category)
                freshness = Freshness.MISS
            elif due_in(state, self.policy, now) <= 0:
                freshness = Freshness.STALE
                if self.refresh_on_request and not backing_off(state, now):
                    self._refresh_soon(category)
            if not selection:
                rendered = self._cache.full_feed(category, fmt, state)
            else:
                rendered = self._cache.selection(category, fmt, state, selection)
        except StoreError:  # a full disk, Redis out of memory: the process reads it
            return last_good()
        age = max(0.0, now - (state.refreshed_at or now))
        fresh_for = max(0.0, due_in(state, self.policy, now))
        served = self._cache.renderer.served_as(rendered, root, freshness, age, fresh_for)
        if freshness is Freshness.MISS and self.wants_full_text(category):
            # Only now: the article fetches would compete with this answer for the CPU.
            self._background.run(partial(self._full_text.fill_quietly, category))
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
        fresh_for = due_in(state, self.policy, now)
        if not state.seen or fresh_for <= 0:
            return None
        prepared = self._cache.fresh(category, fmt, state, root)
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

    def stats(self) -> Stats:
        return Stats(self._cache.stats(), self._first_fetch.waiting)

    # --- refreshing ----------------------------------------------------------------

    def due(self, category: Category) -> bool:
        """Whether the category's refresh is due now (and the site may be asked)."""
        return self._refresh.due(category)

    def next_due(self, category: Category) -> float:
        """Seconds until the category's refresh is due (0 when it is), back-off included."""
        return self._refresh.next_due(category)

    def refresh(
        self, category: Category, *, force: bool = False, full_text_after: bool = False
    ) -> Outcome:
        """Read the category's listing into the store (see
        :meth:`feedbridge.refresh.Refresh.refresh`); after a read, the full text of its
        new stories (``full_text_after``) and the repair of a gap, in the background."""
        outcome = self._refresh.refresh(category, force=force)
        if not outcome.read:
            return outcome
        if full_text_after and self.wants_full_text(category):
            self._background.run(partial(self._full_text.fill_quietly, category))
        if self.repair_after_gap and self.archive.due():
            self._background.repair(self._refresh.repair_walks)
        return outcome

    def read_listing(self, category: Category) -> Listing | None:
        """Fetch and scrape the category's listing now, whatever the store holds."""
        return self._refresh.read_listing(category)

    def repair(self) -> Walked | None:
        """Repair every open gap the archive can close, now (see
        :meth:`feedbridge.refresh.Refresh.repair`)."""
        return self._refresh.repair()

    def wants_full_text(self, category: Category) -> bool:
        return self._full_text.wanted(category)

    def fill_full_text(self, category: Category) -> None:
        """The full text of the category's new stories, now (see
        :meth:`feedbridge.refresh.FullTextFill.fill`)."""
        self._full_text.fill(category)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the background work in flight (the command line, and tests)."""
        left = self._background.drain(timeout, also=self._first_fetch.in_flight)
        self.fulltext.drain(left)

    def _refresh_soon(self, category: Category) -> None:
        """A refresh in the background, one per category at a time."""
        self._background.run_once(category.slug, partial(self._refresh_quietly, category))

    def _refresh_quietly(self, category: Category) -> None:
        try:
            # A failure of the site is recorded and logged by refresh; readers are
            # served what is kept meanwhile.
            with contextlib.suppress(UpstreamError):
                self.refresh(category, full_text_after=True)
        except StoreError as exc:
            log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))

    def _fetch_time(self) -> float:
        """The longest a read of a category's listing can take (each of its anchors)."""
        anchors = max((len(c.paths) for c in self.registry.values()), default=1)
        return anchors * (self.upstream.timeout.total + self.upstream.min_interval)
