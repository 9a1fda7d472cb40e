"""Work this process does off the requests: refreshes a reader's request found due,
full text after a first fetch, repairs of gaps from the archive.

Each runs on a small pool of its own (two threads for refreshes and full text, one for
repairs, which walk the archive for minutes), and :meth:`Background.drain` waits for
what is in flight. The process does not wait for them when it ends
(:mod:`feedbridge.threads`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from functools import partial
from typing import Any

from feedbridge.threads import DaemonPool

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = DaemonPool(2, "feedbridge-refresh")
        self._repairs = DaemonPool(1, "feedbridge-repair")
        self._repairing = False
        self._running: set[str] = set()  # the keys of work in flight (categories refreshed)
        self._flights: set[Future[None]] = set()

    def run(self, work: Callable[[], None]) -> None:
        """``work()`` on the pool; what it raises is logged."""
        logged = partial(_logged, work, "background work failed unexpectedly")
        self._track(self._pool.submit(logged))

    def run_once(self, key: str, work: Callable[[], None]) -> None:
        """``work()`` on the pool, unless work of the same ``key`` is in flight."""
        with self._lock:
            if key in self._running:
                return
            self._running.add(key)

        def run() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self._running.discard(key)

        self.run(run)

    def repair(self, work: Callable[[], None]) -> None:
        """``work()`` on the repairs' own thread, unless a repair is in flight."""
        with self._lock:
            if self._repairing:
                return
            self._repairing = True

        def run() -> None:
            try:
                _logged(work, "a repair failed unexpectedly")
            finally:
                with self._lock:
                    self._repairing = False

        self._track(self._repairs.submit(run))

    def _track(self, flight: Future[None]) -> None:
        with self._lock:
            self._flights.add(flight)
        flight.add_done_callback(self._done)

    def _done(self, flight: Future[None]) -> None:
        with self._lock:
            self._flights.discard(flight)

    def drain(
        self, timeout: float | None = None, *, also: Callable[[], list[Future[Any]]] = list
    ) -> float | None:
        """Wait for the work in flight, and for the futures ``also`` gives (work of
        others that may hand this more); returns the seconds left of ``timeout``."""
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while time.monotonic() < deadline:
            pending: list[Future[Any]] = also()
            with self._lock:
                pending += self._flights
            if not pending:
                break
            wait(pending, timeout=min(deadline - time.monotonic(), 3600))
        return max(0.0, deadline - time.monotonic()) if timeout else None


def _logged(work: Callable[[], None], message: str) -> None:
    try:
        work()
    except Exception:
        log.exception(message)
