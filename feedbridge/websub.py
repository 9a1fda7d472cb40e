"""WebSub publishing: tell a hub when a category's feeds gained stories.

Every feed names the hub (``<link rel="hub">``, JSON Feed ``hubs``); after a refresh
that adds stories, the hub is sent ``hub.mode=publish`` with each of the category's
feed URLs (the topics), and pushes them to its subscribers in seconds instead of at
their next poll. Notices go out from one background thread, each within a timeout; a
hub that fails is logged and counted, never felt by a reader.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import requests

from feedbridge import observe
from feedbridge.categories import Category
from feedbridge.feeds import Format
from feedbridge.store import Merged
from feedbridge.text import logfmt
from feedbridge.upstream import USER_AGENT

log = logging.getLogger(__name__)
TIMEOUT = (5.0, 10.0)  # seconds to connect, to read the hub's answer


class Publisher:
    def __init__(self, hub: str, public_url: str) -> None:
        self.hub = hub
        self.public_url = public_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="feedbridge-websub")

    def topics(self, category: Category) -> list[str]:
        return [f"{self.public_url}/feeds/{category.slug}.{fmt.value}" for fmt in Format]

    def notify(self, category: Category, _merged: Merged) -> None:
        """Tell the hub about ``category``'s feeds, in the background."""
        for topic in self.topics(category):
            self._pool.submit(self._publish, category.slug, topic)

    def drain(self) -> None:
        """Wait for the notices sent so far (tests and shutdown)."""
        self._pool.submit(lambda: None).result()

    def _publish(self, slug: str, topic: str) -> None:
        try:
            response = self._session.post(
                self.hub,
                data={"hub.mode": "publish", "hub.url": topic},
                timeout=TIMEOUT,
                allow_redirects=False,
            )
            response.close()
            ok = 200 <= response.status_code < 300
            outcome = "ok" if ok else f"http-{response.status_code}"
        except requests.RequestException as exc:
            outcome = type(exc).__name__
        observe.hub_notified(slug, "ok" if outcome == "ok" else "failed")
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, logfmt(event="websub_publish", category=slug, topic=topic, outcome=outcome))
