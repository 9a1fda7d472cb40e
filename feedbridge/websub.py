"""WebSub publishing: tell a hub when a category's feeds gained stories.

Every feed names the hub (``<link rel="hub">``, JSON Feed ``hubs``); after a refresh
that adds stories, the hub is sent ``hub.mode=publish`` with each of the category's
feed URLs (the topics), and pushes them to its subscribers in seconds instead of at
their next poll. A hub that fails is logged and counted, never felt by a reader.

Notices go out one at a time from one background thread, each within a total deadline
(:mod:`feedbridge.deadline`: a hub that drips its answer a byte at a time is cut). What
waits meanwhile is bounded: a topic already waiting is not queued twice (the hub reads
the feed when it gets the notice, so one notice covers both), and past
:data:`MAX_QUEUED` topics a notice is dropped; both are counted
(``feedbridge_websub_notices_total`` with outcome ``coalesced`` or ``dropped``).
"""

from __future__ import annotations

import logging
import threading
import time

import requests

from feedbridge import observe
from feedbridge.categories import Category
from feedbridge.deadline import Watchdog, WatchedAdapter
from feedbridge.feeds import Format
from feedbridge.text import logfmt
from feedbridge.threads import DaemonPool
from feedbridge.upstream import USER_AGENT

log = logging.getLogger(__name__)
TIMEOUT = (5.0, 10.0)  # seconds to connect, for the whole exchange with the hub
MAX_QUEUED = 256  # topics waiting for their notice at the most


class Publisher:
    def __init__(
        self,
        hub: str,
        public_url: str,
        *,
        timeout: tuple[float, float] = TIMEOUT,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.hub = hub
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.max_queued = max_queued
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, WatchedAdapter())
        self._lock = threading.Lock()
        self._queued: dict[str, str] = {}  # topic -> its category, oldest first
        self._sending = False  # the background thread is at work
        # Not waited for at exit: a notice lost then goes with the category's next change.
        self._pool = DaemonPool(1, "feedbridge-websub")

    def topics(self, category: Category) -> list[str]:
        return [f"{self.public_url}/feeds/{category.slug}.{fmt.value}" for fmt in Format]

    def notify(self, category: Category) -> None:
        """Tell the hub about ``category``'s feeds, in the background."""
        for topic in self.topics(category):
            self._queue(category.slug, topic)

    def queued(self) -> int:
        """Topics waiting for their notice (at most ``max_queued``)."""
        with self._lock:
            return len(self._queued)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the notices queued so far (the tests' view of "sent"); False when
        ``timeout`` seconds passed first."""
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while True:
            with self._lock:
                if not self._queued and not self._sending:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _queue(self, slug: str, topic: str) -> None:
        with self._lock:
            if topic in self._queued:
                outcome = "coalesced"
            elif len(self._queued) >= self.max_queued:
                outcome = "dropped"
            else:
                self._queued[topic] = slug
                outcome = ""
                if not self._sending:
                    self._sending = True
                    self._pool.submit(self._send_all)
        if outcome:
            observe.hub_notified(slug, outcome)
        if outcome == "dropped":
            log.warning(logfmt(event="websub_publish", category=slug, topic=topic, outcome=outcome))

    def _send_all(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._sending = False
                    return
                topic = next(iter(self._queued))
                slug = self._queued.pop(topic)
            self._publish(slug, topic)

    def _publish(self, slug: str, topic: str) -> None:
        connect, total = self.timeout
        with Watchdog(total) as watchdog:
            try:
                response = self._session.post(
                    self.hub,
                    data={"hub.mode": "publish", "hub.url": topic},
                    timeout=(connect, total),
                    allow_redirects=False,
                )
                response.close()
                ok = 200 <= response.status_code < 300
                outcome = "ok" if ok else f"http-{response.status_code}"
            except requests.RequestException as exc:
                outcome = type(exc).__name__
        if watchdog.expired and outcome != "ok":
            outcome = "deadline"
        observe.hub_notified(slug, "ok" if outcome == "ok" else "failed")
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, logfmt(event="websub_publish", category=slug, topic=topic, outcome=outcome))
