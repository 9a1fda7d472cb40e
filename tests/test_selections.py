"""?limit= and ?q= renderings are bounded per process: a flood of them waits its turn or
gets 503 with Retry-After, while cached feeds are served as usual."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask

from feedbridge import feed_cache
from feedbridge.model import Item
from feedbridge.sqlite_store import SQLiteStore

FEED = "/feeds/vok-en.atom"


class SlowSearch:
    """The SQLite store's search, made to wait for ``go`` (at most 10 s): selections in
    flight, however the service reaches the store."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.go = threading.Event()
        self.inside = threading.Semaphore(0)
        newest = SQLiteStore.newest

        def slow(
            store: SQLiteStore, category: str, limit: int, words: Sequence[str] = ()
        ) -> list[Item]:
            if words:
                self.inside.release()
                self.go.wait(10)
            return newest(store, category, limit, words)

        monkeypatch.setattr(SQLiteStore, "newest", slow)


def test_selections_past_the_bound_get_503_while_feeds_are_served(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_cache, "SELECTION_WAIT", 0.2)
    client = app.test_client()
    assert client.get(FEED).status_code == 200
    slow = SlowSearch(monkeypatch)
    with ThreadPoolExecutor(feed_cache.SELECTIONS) as pool:
        busy = [
            pool.submit(app.test_client().get, f"{FEED}?q=word{n}")
            for n in range(feed_cache.SELECTIONS)
        ]
        for _ in busy:  # every slot taken by a selection in flight
            assert slow.inside.acquire(timeout=10)
        turned_away = client.get(f"{FEED}?q=another")
        cached = client.get(FEED)
        slow.go.set()
        assert [future.result(timeout=10).status_code for future in busy] == [200, 200]
    assert turned_away.status_code == 503
    assert turned_away.headers["Retry-After"] == "5"
    assert turned_away.headers["Cache-Control"] == "no-store"
    assert cached.status_code == 200
    assert client.get(f"{FEED}?q=another").status_code == 200  # a slot is free again
