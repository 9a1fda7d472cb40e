"""?limit= and ?q= renderings are bounded per process: a flood of them waits its turn or
gets 503 with Retry-After, while cached feeds are served as usual."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from feedbridge import feed_cache
from feedbridge.model import Item
from feedbridge.store import Store

FEED = "/feeds/vok-en.atom"


class SlowSearch:
    """A store whose selections wait for ``go`` (at most 10 s): renderings in flight."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.go = threading.Event()
        self.inside = threading.Semaphore(0)

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        if words:
            self.inside.release()
            self.go.wait(10)
        return self.store.newest(category, limit, words)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_selections_past_the_bound_get_503_while_feeds_are_served(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_cache, "SELECTION_WAIT", 0.2)
    slows: list[SlowSearch] = []
    app = make_app(wrap_store=lambda store: slows.append(SlowSearch(store)) or slows[0])
    [slow] = slows
    client = app.test_client()
    assert client.get(FEED).status_code == 200
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
