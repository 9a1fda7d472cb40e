"""The newest stories of each category, read once per version of the category.

A ``?limit=`` selection is the newest N stories (N up to
:data:`~feedbridge.config.MAX_FEED_SIZE`), so the newest ``MAX_FEED_SIZE`` read once per
version of the category answer every ``?limit=`` of that version, instead of a read of
up to 500 stories (8 ms on SQLite) per request. A ``?q=`` is looked for in them first:
when they hold enough matches, those are the answer (the newest matches are among the
newest stories); else the store searches the whole history.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cachetools import LRUCache

from feedbridge.config import MAX_FEED_SIZE
from feedbridge.model import Item
from feedbridge.store import Store, select

WINDOW_BYTES = 16 * 1024 * 1024  # stories kept per process, over every category


class Windows:
    def __init__(
        self, store: Store, *, size: int = MAX_FEED_SIZE, max_bytes: int = WINDOW_BYTES
    ) -> None:
        self.store = store
        self.size = size
        self._lock = threading.Lock()
        self._windows: LRUCache[str, tuple[str, list[Item]]] = LRUCache(
            max_bytes, getsizeof=lambda kept: sum(size_of(item) for item in kept[1])
        )

    def newest(
        self, category: str, version: str, limit: int, words: Sequence[str] = ()
    ) -> list[Item]:
        """What :meth:`Store.newest` answers for version ``version`` of ``category``
        (``limit`` up to :attr:`size`): from memory when it can."""
        window = self._window(category, version)
        if not words:
            return window[:limit]
        found = select(window, limit, words)
        if len(found) == limit:
            return found
        return self.store.newest(category, limit, words)

    def _window(self, category: str, version: str) -> list[Item]:
        with self._lock:
            kept = self._windows.get(category)
        if kept is not None and kept[0] == version:
            return kept[1]
        window = self.store.newest(category, self.size)
        with self._lock:
            try:
                self._windows[category] = (version, window)
            except ValueError:  # larger than the bound: served, not kept
                self._windows.pop(category, None)
        return window


def size_of(item: Item) -> int:
    """About what a story holds in memory, in bytes (its text as UTF-8, roughly)."""
    return 400 + len(item.title) + len(item.excerpt) + len(item.content_html or "")
