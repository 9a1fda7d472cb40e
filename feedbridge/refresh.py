"""Refreshing a category: one read of its listing under the category's lease, merged
into the store; a failure recorded for the back-off; the next refresh scheduled from
the category's history; and the full text of new stories, within a budget.

When a refresh is due (:func:`due_in`), back-off included (:func:`next_refresh`), is
read from the category's state with :mod:`feedbridge.schedule`'s policy.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from feedbridge import observe, schedule
from feedbridge.archive import Archive, Walked
from feedbridge.categories import Category
from feedbridge.errors import HTTPStatusError, LayoutChanged, SitePaused, UpstreamError
from feedbridge.fulltext import FullText
from feedbridge.history import next_try
from feedbridge.model import Item
from feedbridge.politeness import Backoff
from feedbridge.scrape import parse_page
from feedbridge.store import (
    CategoryState,
    Failure,
    Lease,
    Listing,
    Merged,
    Pending,
    Retention,
    Store,
    StoreError,
)
from feedbridge.text import logfmt
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)
FETCH_LEASE = 6.0  # seconds a category's fetch lease lasts unless renewed (its holder died)
REPAIRS_IN_A_ROW = 3  # walks of the archive one background repair makes at the most
FULL_TEXT_BATCH = 100  # stories asked for at most per fill; what the budget leaves waits


class Outcome(enum.Enum):
    REFRESHED = "refreshed"
    UNCHANGED = "unchanged"  # the site answered 304
    FRESH = "fresh"  # refreshed within the TTL by someone else: nothing to do
    BUSY = "busy"  # another process is fetching it
    BACKING_OFF = "backing-off"  # its last fetch, by another process maybe, failed

    @property
    def read(self) -> bool:
        """Whether the site was read (and the store changed) by this refresh."""
        return self in (Outcome.REFRESHED, Outcome.UNCHANGED)


def due(state: CategoryState, policy: schedule.Policy) -> schedule.Due:
    """When the category's next refresh is due, back-off aside."""
    gaps = state.gap.in_a_row if state.gap is not None else 0
    return schedule.due(state.refreshed_at, state.cadence, gaps, policy)


def next_refresh(state: CategoryState, policy: schedule.Policy, now: float) -> schedule.Due:
    """When the category's next refresh is due, back-off included."""
    failure = state.failure
    retry_at, count = (failure.retry_at, failure.count) if failure else (None, 0)
    return schedule.next_refresh(due(state, policy), retry_at, count, now)


def due_in(state: CategoryState, policy: schedule.Policy, now: float) -> float:
    """Seconds until the category's next refresh is due; 0 or less when it is (a
    category never read is due)."""
    return due(state, policy).at - now


def backing_off(state: CategoryState, now: float) -> bool:
    return schedule.backing_off(state.failure.retry_at if state.failure else None, now)


class Refresh:
    def __init__(
        self,
        *,
        upstream: Upstream,
        store: Store,
        archive: Archive,
        policy: schedule.Policy,
        retention: Retention,
        backoff: Backoff,
        clock: Callable[[], float] = time.time,
        notify: Callable[[Category], None] | None = None,
    ) -> None:
        """``notify`` hears of every refresh that added stories."""
        self.upstream = upstream
        self.store = store
        self.archive = archive
        self.policy = policy
        self.retention = retention
        self.backoff = backoff
        self.clock = clock
        self.notify = notify

    def due(self, category: Category) -> bool:
        """Whether the category's refresh is due now (and the site may be asked)."""
        state = self.store.state(category.slug)
        now = self.clock()
        if backing_off(state, now) or self.upstream.pause.paused_for() > 0:
            return False
        return due_in(state, self.policy, now) <= 0

    def next_due(self, category: Category) -> float:
        """Seconds until the category's refresh is due (0 when it is), back-off included."""
        now = self.clock()
        return max(0.0, next_refresh(self.store.state(category.slug), self.policy, now).at - now)

    def refresh(self, category: Category, *, force: bool = False) -> Outcome:
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
            if not force and due_in(state, self.policy, now) > 0:
                return Outcome.FRESH
            # Decided on the state read under the lease: the caller's, read before,
            # may be older than another process's failure (see STATE_CHECK).
            if not force and backing_off(state, now):
                return Outcome.BACKING_OFF
            try:
                listing = self.read_listing(category, state)
            except SitePaused:
                raise  # the site's pause, for every category: no failure of this one's
            except UpstreamError as exc:
                self._record_failure(category, state, exc, started)
                raise
            self._keep(category, state, listing)
        finally:
            lease.release()
        return Outcome.UNCHANGED if listing is None else Outcome.REFRESHED

    def _keep(self, category: Category, before: CategoryState, listing: Listing | None) -> None:
        """What the listing says, into the store (None: the site said "not modified")."""
        now = self.clock()
        if listing is None:
            self.store.touch(category.slug, now=now)
        else:
            kept = self.store.newest(category.slug, 1) if before.stories else []
            merged = self.store.merge(category.slug, listing, now=now)
            self._after_merge(category, before, merged, len(listing.items))
            if merged.gap is not None and kept:
                self.archive.open_gap(category.slug, kept[0].key)
            self.store.prune(category.slug, self.retention, now=now)
        self._reschedule(category, before, listing, now)

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
            try:
                items = parse_page(
                    page.body,
                    label=category.label,
                    base_url=self.upstream.base_url,
                    encoding=page.encoding,
                    page_path=path,
                )
            except LayoutChanged:
                observe.parse_failed(category.slug)
                raise
            return Listing(
                items=tuple(items),
                etag=page.etag,
                last_modified=page.last_modified,
                source_path=path,
            )
        assert last_error is not None
        raise HTTPStatusError(
            f"every anchor page of {category.slug} is gone ({last_error})",
            upstream_status=last_error.upstream_status,
        )

    def repair(self) -> Walked | None:
        """Repair every open gap the archive can close, now, in this thread (see
        :meth:`feedbridge.archive.Archive.repair`); None when there was nothing to do,
        or another process repairs."""
        try:
            return self.archive.repair()
        except StoreError as exc:
            log.warning(logfmt(event="store_error", action="repair", error=str(exc)))
            return None

    def repair_walks(self) -> None:
        """Repairs, again while a gap found during the walk is left: at most a few
        walks, each of which stops at its first failure (its back-off ends the loop)."""
        for _ in range(REPAIRS_IN_A_ROW):
            walked = self.repair()
            if walked is None or not walked.complete or not self.archive.due():
                break

    def _after_merge(
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
        if merged.added and self.notify is not None:
            self.notify(category)

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
        cadence = schedule.cadence(history, now=now, listed=listed, ttl=self.policy.ttl)
        self.store.save_cadence(category.slug, cadence)


class FullTextFill:
    """The full text of a category's new stories, read from their article pages within
    the budget of :class:`~feedbridge.fulltext.FullText`."""

    def __init__(
        self,
        fulltext: FullText,
        store: Store,
        *,
        by_default: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``by_default``: whether a category that does not say wants full text."""
        self.fulltext = fulltext
        self.store = store
        self.by_default = by_default
        self.clock = clock

    def wanted(self, category: Category) -> bool:
        return self.by_default if category.fulltext is None else category.fulltext

    def fill(self, category: Category) -> None:
        """Fetch the full text of the category's stories that lack it, newest first,
        within the budget. A page still loading at the end saves its story when it
        arrives; one that fails is tried again later, later each time."""
        if not self.wanted(category):
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

    def fill_quietly(self, category: Category) -> None:
        """:meth:`fill`, a failure of the store logged (for work in the background)."""
        try:
            self.fill(category)
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
