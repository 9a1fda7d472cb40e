"""The background refresher: every category kept fresh whether or not readers ask.

One refresher works at a time among every process sharing a store (the workers of a
server, several servers on one Redis): it holds the store's ``refresher`` lease,
renewed while it lives; when its process dies the lease expires and the refresher of
another process takes it over. Each round refreshes the categories that are due, one
after the other (so they are staggered by the site's pace), then reads the full text of
new stories within the budget.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from feedbridge.bridge import Bridge
from feedbridge.categories import Category
from feedbridge.errors import UpstreamError
from feedbridge.store import Lease, StoreError
from feedbridge.text import logfmt

log = logging.getLogger(__name__)
LEASE = "refresher"
LEASE_TTL = 15.0  # seconds: how long a dead refresher holds up the others
TICK = 5.0  # seconds between two looks at what is due


class Refresher:
    def __init__(
        self,
        bridge: Bridge,
        *,
        tick: float = TICK,
        lease_ttl: float = LEASE_TTL,
        progress: Callable[[Category, str], None] | None = None,
    ) -> None:
        """``progress`` hears of every category refreshed (or failing), as it happens."""
        self.bridge = bridge
        self.progress = progress
        self.tick = tick
        self.lease = Lease(bridge.store, LEASE, lease_ttl)
        self._stop = threading.Event()
        self._pid: int | None = None
        self._starting = threading.Lock()

    def run_once(
        self,
        categories: list[Category] | None = None,
        *,
        force: bool = False,
    ) -> dict[str, str]:
        """Refresh every due category of ``categories`` (default: all), then fill in full
        text; returns each category's outcome (or the kind of its error)."""
        outcomes: dict[str, str] = {}
        for category in categories or list(self.bridge.registry.values()):
            if self._stop.is_set():
                break
            outcomes[category.slug] = outcome = self._refresh(category, force)
            if self.progress is not None and outcome != "not-due":
                self.progress(category, outcome)
        for category in categories or list(self.bridge.registry.values()):
            if self._stop.is_set():
                break
            try:
                self.bridge.fill_full_text(category)
            except StoreError as exc:
                log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))
        return outcomes

    def _refresh(self, category: Category, force: bool) -> str:
        try:
            if not force and not self.bridge.due(category):
                return "not-due"
            return self.bridge.refresh(category, force=force).value
        except UpstreamError as exc:
            return exc.kind  # recorded and logged by the bridge
        except StoreError as exc:
            log.warning(logfmt(event="store_error", category=category.slug, error=str(exc)))
            return "store-error"
        except Exception:
            log.exception("refresh of %s failed unexpectedly", category.slug)
            return "internal-error"

    def run(self) -> None:
        """Work while this process holds the lease, until :meth:`stop`."""
        try:
            while not self._stop.is_set():
                try:
                    if self.lease.held or self.lease.acquire():
                        self.run_once()
                except StoreError as exc:
                    log.warning(logfmt(event="store_error", error=str(exc)))
                except Exception:
                    # A round that failed is not the refresher's end: its lease would
                    # be renewed for nothing, and no category refreshed again.
                    log.exception("a round of the refresher failed unexpectedly")
                self._stop.wait(self._pause())
        finally:
            self.lease.release()

    def _pause(self) -> float:
        """Until the next category is due, at most a tick (a holder must stay nimble)."""
        if not self.lease.held:
            return self.tick
        try:
            due = min(self.bridge.next_due(c) for c in self.bridge.registry.values())
        except StoreError:
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
        threading.Thread(target=self.run, daemon=True, name="feedbridge-refresher").start()

    def stop(self) -> None:
        self._stop.set()
        self.lease.release()
