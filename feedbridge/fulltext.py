"""Full text: each story's body, read from its own article page.

:class:`FullText` fetches the pages through :class:`~feedbridge.upstream.Upstream`, a
bounded number at once, and parses them (:mod:`feedbridge.article`); each story's page is
read once, as the store keeps what was read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import replace

from feedbridge import observe
from feedbridge.article import Article, parse_article
from feedbridge.errors import UpstreamError
from feedbridge.model import Item
from feedbridge.threads import DaemonPool
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)


class FullText:
    """Reads stories' full text from their article pages, a few pages at once.

    What is read is kept by the store, not here: each story's page is asked for until it
    has been read once (article pages never change once published).
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        concurrency: int = 2,
        budget: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.budget = budget
        self.clock = clock
        self._lock = threading.Lock()
        self._inflight: set[Future[Item | None]] = set()
        self._pool = DaemonPool(concurrency, "feedbridge-article")  # not waited for at exit

    def submit(
        self, item: Item, category: str, then: Callable[[Item | None], None]
    ) -> Future[Item | None]:
        """Read ``item``'s page in the background and pass ``then`` the item with its
        full text, or None if it could not be had; the future is done after ``then``."""

        def task() -> Item | None:
            read = self._read(item, category)
            then(read)
            return read

        flight = self._pool.submit(task)
        with self._lock:
            self._inflight.add(flight)
        flight.add_done_callback(self._landed)
        return flight

    def wait(self, flights: Iterable[Future[Item | None]]) -> None:
        """Until every flight is done or the budget is spent; the flights not started by
        then are cancelled (what they were for is asked for again next time).

        The deadline is read from ``clock`` after each wait, so an injected clock alone
        decides when the budget is spent; with the real clock this is a single wait.
        """
        deadline = self.clock() + self.budget
        pending = set(flights)
        done: set[Future[Item | None]] = set()
        while pending:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            finished, pending = wait(pending, timeout=remaining)
            done |= finished
        for flight in pending:
            flight.cancel()  # not started: the next fill asks again
        if done or pending:
            log.info(
                "full text: %d of %d articles read, %d not within the budget",
                sum(1 for f in done if f.result() is not None), len(done) + len(pending),
                len(pending),
            )  # fmt: skip

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the article fetches in flight (tests and shutdown)."""
        with self._lock:
            pending = list(self._inflight)
        wait(pending, timeout=timeout)

    def _landed(self, flight: Future[Item | None]) -> None:
        with self._lock:
            self._inflight.discard(flight)

    def _read(self, item: Item, category: str) -> Item | None:
        try:
            with observe.fetching_for(category):
                page = self.upstream.fetch(item.path)
            article = parse_article(page.body, page_url=page.url, encoding=page.encoding)
        except UpstreamError as exc:
            log.warning("full text of %s: %s; keeping the excerpt", item.key, exc)
            return None
        except Exception:
            log.exception("full text of %s failed unexpectedly; keeping the excerpt", item.key)
            return None
        return with_article(item, article)


def with_article(item: Item, article: Article) -> Item:
    """``item`` with its full text; a listing that gave no date takes the article's."""
    return replace(
        item,
        content_html=article.content_html,
        original_url=article.original_url,
        listed=item.listed or article.dated,
    )
