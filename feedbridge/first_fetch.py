"""The first fetch of a category never seen before: on a reader's request, once for
every request waiting on it (in this process; other processes wait on the store's
lease), and bounded in time and in the number of requests waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from feedbridge.categories import Category
from feedbridge.errors import BackingOff
from feedbridge.refresh import FETCH_LEASE, Outcome, backing_off
from feedbridge.store import CategoryState, Store

# Requests of one process waiting at once for a never-seen category. Each is a greenlet
# of a gevent worker (some KiB), so the bound is high enough for a burst of first readers
# landing unevenly on the workers, and far below a worker's 1000 connections: the others
# are left for cached feeds and /healthz.
COLD_WAITERS = 256


class FirstFetch:
    def __init__(
        self,
        store: Store,
        *,
        refresh: Callable[[Category], Outcome],
        fetch_time: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``refresh``: reads the category's listing into the store (under its lease);
        ``fetch_time``: the seconds that can take, at the most."""
        self.store = store
        self.refresh = refresh
        self.fetch_time = fetch_time
        self.clock = clock
        self._lock = threading.Lock()
        self._flights: dict[str, Future[CategoryState]] = {}  # by category
        self._cold = threading.BoundedSemaphore(COLD_WAITERS)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests of this process waiting now for a first fetch."""
        with self._lock:
            return self._waiting

    def in_flight(self) -> list[Future[CategoryState]]:
        with self._lock:
            return list(self._flights.values())

    def fetch(self, category: Category) -> CategoryState:
        """A never-seen category: its listing, fetched once for every waiting request.

        Waits are bounded: in time (another process's fetch, then ours) and in number
        (past :data:`COLD_WAITERS` a request is told to come back shortly).
        """
        if not self._cold.acquire(blocking=False):
            raise BackingOff("busy fetching new categories", retry_after=5)
        self._count(+1)
        try:
            with self._lock:
                flight = self._flights.get(category.slug)
                leader = flight is None
                if flight is None:
                    flight = self._flights[category.slug] = Future()
            if leader:
                self._lead(category, flight)
            return flight.result(timeout=self.fetch_time + FETCH_LEASE + 5)
        except TimeoutError:
            raise BackingOff("still fetching this category", retry_after=5) from None
        finally:
            self._count(-1)
            self._cold.release()

    def _count(self, change: int) -> None:
        with self._lock:
            self._waiting += change

    def _lead(self, category: Category, flight: Future[CategoryState]) -> None:
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
        deadline = time.monotonic() + self.fetch_time + FETCH_LEASE
        while True:
            state = self.store.state(category.slug)
            if state.seen:
                return state
            if backing_off(state, self.clock()):
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
