"""The background refresher: every category kept fresh whether or not readers ask.

One refresher works at a time among every process sharing a store (the workers of a
server, several servers on one Redis): it holds the store's ``refresher`` lease,
renewed while it lives; when its process dies the lease expires and the refresher of
another process takes it over. Each round refreshes the categories that are due, one
after the other (so they are staggered by the site's pace), then reads the full text of
new stories within the budget.

While the store fails (a full disk, Redis away), rounds are spaced out, from
:data:`STORE_RETRY`'s first wait doubling to its cap, and the failure is logged once when
it starts and once when it ends: not a line per category every half second.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from feedbridge.bridge import FeedService
from feedbridge.categories import Category
from feedbridge.errors import UpstreamError
from feedbridge.refresh import Outcome
from feedbridge.store import Lease, StoreError
from feedbridge.text import logfmt
from feedbridge.threads import start_daemon

log = logging.getLogger(__name__)
LEASE = "refresher"
LEASE_TTL = 15.0  # seconds: how long a dead refresher holds up the others
TICK = 5.0  # seconds between two looks at what is due
STORE_RETRY = (1.0, 60.0)  # seconds: the wait after a round the store failed, its cap


class Failed(enum.Enum):
    """What failed, when a refresh did."""

    SITE = "site"  # the site: the result's ``kind`` says how
    STORE = "store-error"
    INTERNAL = "internal-error"  # a bug: logged with its traceback


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one category's refresh of a round gave."""

    category: Category
    outcome: Outcome | None = None  # what the refresh did; None: not due, or it failed
    failed: Failed | None = None
    kind: str | None = None  # the site's error kind (UpstreamError.kind) when it failed

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def due(self) -> bool:
        """Whether the category was due (or forced), so that a refresh was tried."""
        return self.outcome is not None or self.failed is not None

    def __str__(self) -> str:
        """As the command line says it: the outcome, the error's kind, or not-due."""
        if self.outcome is not None:
            return self.outcome.value
        if self.failed is Failed.SITE and self.kind is not None:
            return self.kind
        return self.failed.value if self.failed is not None else "not-due"


class Refresher:
    def __init__(
        self,
        service: FeedService,
        *,
        tick: float = TICK,
        lease_ttl: float = LEASE_TTL,
        progress: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        """``progress`` hears of every category refreshed (or failing), as it happens."""
        self.service = service
        self.progress = progress
        self.tick = tick
        self.lease = Lease(service.store, LEASE, lease_ttl)
        self._stop = threading.Event()
        self._pid: int | None = None
        self._starting = threading.Lock()
        self._store_failures = 0  # rounds in a row in which the store failed
        self._round_failed = False

    def run_once(
        self,
        categories: list[Category] | None = None,
        *,
        force: bool = False,
    ) -> list[RefreshResult]:
        """Refresh every due category of ``categories`` (default: all), then fill in full
        text; returns what each category's refresh gave, in their order."""
        results: list[RefreshResult] = []
        for category in categories or list(self.service.registry.values()):
            if self._stop.is_set():
                break
            result = self._refresh(category, force)
            results.append(result)
            if self.progress is not None and result.due:
                self.progress(result)
        for category in categories or list(self.service.registry.values()):
            if self._stop.is_set():
                break
            try:
                self.service.fill_full_text(category)
            except StoreError as exc:
                self._store_failed(exc, category.slug)
        return results

    def _refresh(self, category: Category, force: bool) -> RefreshResult:
        try:
            if not force and not self.service.due(category):
                return RefreshResult(category)
            return RefreshResult(category, self.service.refresh(category, force=force))
        except UpstreamError as exc:  # recorded and logged by the service
            return RefreshResult(category, failed=Failed.SITE, kind=exc.kind)
        except StoreError as exc:
            self._store_failed(exc, category.slug)
            return RefreshResult(category, failed=Failed.STORE)
        except Exception:
            log.exception("refresh of %s failed unexpectedly", category.slug)
            return RefreshResult(category, failed=Failed.INTERNAL)

    def run(self) -> None:
        """Work while this process holds the lease, until :meth:`stop`."""
        try:
            while not self._stop.is_set():
                self._stop.wait(self.round())
        finally:
            self.lease.release()

    def round(self) -> float:
        """One look at what is due (refreshing it when this process holds the lease);
        returns the seconds to wait before the next."""
        self._round_failed = False
        try:
            if self.lease.held or self.lease.acquire():
                self.run_once()
        except StoreError as exc:
            self._store_failed(exc)
        except Exception:
            # A round that failed is not the refresher's end: its lease would be
            # renewed for nothing, and no category refreshed again.
            log.exception("a round of the refresher failed unexpectedly")
        pause = self._pause()
        if self._round_failed:
            self._store_failures += 1
            first, cap = STORE_RETRY
            return max(pause, min(cap, first * 2.0 ** min(self._store_failures - 1, 32)))
        if self._store_failures:
            log.warning(logfmt(event="store_recovered", failed_rounds=self._store_failures))
            self._store_failures = 0
        return pause

    def _store_failed(self, exc: StoreError, category: str = "-") -> None:
        """The store failed: logged once as the failure starts, then once it ends."""
        if self._store_failures == 0 and not self._round_failed:
            log.warning(logfmt(event="store_error", category=category, error=str(exc)))
        self._round_failed = True

    def _pause(self) -> float:
        """Until the next category is due, at most a tick (a holder must stay nimble)."""
        if not self.lease.held:
            return self.tick
        try:
            due = min(self.service.next_due(c) for c in self.service.registry.values())
        except StoreError as exc:
            self._store_failed(exc)
            return self.tick
        return min(self.tick, max(due, 0.5))

    def start(self) -> None:
        """Run in a daemon thread of this process, once per process: a worker forked
        from a server's master starts its own."""
        with self._starting:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        self._stop.clear()
        start_daemon(self.run, "feedbridge-refresher")

    def stop(self) -> None:
        self._stop.set()
        self.lease.release()
