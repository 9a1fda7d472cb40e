"""What the bridge tells its operator: Prometheus metrics and ``key=value`` log lines.

The metrics live in prometheus_client's default registry. Under the Procfile's server every
worker is a process of its own: with ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client
is first imported (``feedbridge/server.py`` does it), each worker writes its
values to files there and ``/metrics`` adds them up (see :mod:`feedbridge.ops`).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from feedbridge.text import logfmt
from feedbridge.threads import start_daemon

if TYPE_CHECKING:
    from feedbridge.errors import UpstreamError

log = logging.getLogger("feedbridge.upstream")

UPSTREAM_REQUESTS = Counter(
    "feedbridge_upstream_requests",
    "Requests to the site by category and outcome (ok, not_modified, or the error's kind).",
    ["category", "outcome"],
)
FETCH_SECONDS = Histogram(
    "feedbridge_upstream_fetch_seconds",
    "Time of one request to the site, from sending it to the end of the body.",
    ["category"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
CACHE_LOOKUPS = Counter(
    "feedbridge_cache_lookups",
    "Feeds served by what was kept: hit (fresh), stale (a refresh is due or failing) or miss "
    "(a category never seen, fetched for the request).",
    ["category", "result"],
)
ITEMS = Gauge(
    "feedbridge_items",
    "Items in the category's last listing read from the site.",
    ["category"],
    multiprocess_mode="mostrecent",
)
NEW_STORIES = Counter(
    "feedbridge_new_stories",
    "Stories a refresh added to the category's history.",
    ["category"],
)
LISTING_GAPS = Counter(
    "feedbridge_listing_gaps",
    "Refreshes whose listing shared no story with the category's history: stories may "
    "have been missed between two refreshes.",
    ["category"],
)
STORIES_LOST = Counter(
    "feedbridge_stories_lost",
    "Stories of the category the bridge wrote to the store and later found gone from it "
    "(a Redis that evicts keys, or lost its data).",
    ["category"],
)
HUB_NOTICES = Counter(
    "feedbridge_websub_notices",
    "Notices for the WebSub hub, by outcome (ok, failed; coalesced with one already "
    "waiting, dropped past the bound of the backlog).",
    ["category", "outcome"],
)
GAPS_OPEN = Gauge(
    "feedbridge_gaps_open",
    "Gaps no walk of the archive has closed yet: stories that may be missing.",
    multiprocess_mode="mostrecent",
)
STORIES_RECOVERED = Counter(
    "feedbridge_stories_recovered",
    "Stories a walk of the archive added to the category (a repair or a backfill).",
    ["category"],
)
PARSE_FAILURES = Counter(
    "feedbridge_parse_failures",
    "Listing pages that parsed to no item: the site's layout changed.",
    ["category"],
)


class Tally:
    """Counts of served feeds, kept in the process and added to :data:`CACHE_LOOKUPS`
    every ``every`` seconds (by a thread of the process), at a scrape and at exit.

    A cached feed is answered in microseconds; counting each one in prometheus_client
    is a label lookup and, under gunicorn, a write to the worker's file, each under a
    lock. Here it is one increment under one lock.
    """

    def __init__(self, every: float = 1.0) -> None:
        self.every = every  # seconds: the most a count waits to reach the metrics
        self._lock = threading.Lock()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._flusher = 0  # the process whose counts these are, and whose flusher runs

    def add(self, category: str, freshness: str) -> None:
        with self._lock:
            first = self._adopt()
            self._counts[category, freshness] += 1
        if first:
            start_daemon(self._flush_every, "feedbridge-tally")

    def flush(self) -> None:
        with self._lock:
            if self._flusher != os.getpid():
                return  # nothing counted by this process (a fork's copy is its parent's)
            counts, self._counts = self._counts, collections.Counter()
        for (category, freshness), count in counts.items():
            CACHE_LOOKUPS.labels(category, freshness).inc(count)

    def _adopt(self) -> bool:
        """Whether this is the process's first use (its lock held): a forked process
        drops the copy of its parent's counts (the parent adds them) and needs a
        flusher of its own."""
        if self._flusher == os.getpid():
            return False
        self._flusher = os.getpid()
        self._counts.clear()
        return True

    def _flush_every(self) -> None:
        while True:
            time.sleep(self.every)
            self.flush()


TALLY = Tally()
atexit.register(TALLY.flush)


def served(category: str, freshness: str) -> None:
    TALLY.add(category, freshness)


def refreshed(category: str, added: int, listed: int) -> None:
    ITEMS.labels(category).set(listed)
    NEW_STORIES.labels(category).inc(added)


def gap(category: str) -> None:
    LISTING_GAPS.labels(category).inc()


def gaps_open(count: int) -> None:
    GAPS_OPEN.set(count)


def recovered(category: str, count: int) -> None:
    STORIES_RECOVERED.labels(category).inc(count)


def stories_lost(category: str, count: int) -> None:
    STORIES_LOST.labels(category).inc(count)
    log.warning(logfmt(event="stories_lost", category=category, count=count))


def hub_notified(category: str, outcome: str) -> None:
    HUB_NOTICES.labels(category, outcome).inc()


# What the site is being asked for: set around a fetch by whoever knows (the bridge for a
# listing, full text for an article), read where requests are counted.
_FETCHING_FOR: ContextVar[str] = ContextVar("fetching_for", default="-")


@contextmanager
def fetching_for(category: str) -> Iterator[None]:
    """Count and log the site's requests within the block under ``category``."""
    token = _FETCHING_FOR.set(category)
    try:
        yield
    finally:
        _FETCHING_FOR.reset(token)


def fetched(path: str, seconds: float, *, not_modified: bool, size: int) -> None:
    """A request to the site that was answered with a page (or a 304)."""
    category = _FETCHING_FOR.get()
    outcome, status = ("not_modified", 304) if not_modified else ("ok", 200)
    _count(category, outcome, seconds)
    log.info(
        logfmt(
            event="fetch", category=category, path=path, status=status,
            bytes=size, duration_ms=round(seconds * 1000),
        )
    )  # fmt: skip


def fetch_failed(path: str, seconds: float, error: UpstreamError) -> None:
    """A request to the site that failed; the bridge logs what it does about it."""
    category = _FETCHING_FOR.get()
    _count(category, error.kind, seconds)
    log.info(
        logfmt(
            event="fetch", category=category, path=path,
            status=error.upstream_status or "-", outcome=error.kind,
            duration_ms=round(seconds * 1000), error=str(error),
        )
    )  # fmt: skip


def parse_failed(category: str) -> None:
    PARSE_FAILURES.labels(category).inc()


def _count(category: str, outcome: str, seconds: float) -> None:
    UPSTREAM_REQUESTS.labels(category, outcome).inc()
    FETCH_SECONDS.labels(category).observe(seconds)
