"""What readers get while the store fails: what the process holds, filtered right, or a
503; never a 500, never the whole last feed for a selection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from feedbridge.sqlite_store import SQLiteStore
from tests.conftest import FakeSite, fill_the_disk
from tests.feedspec import check_feed
from tests.servers import RedisServer

FEED = "/feeds/vok-en.json"


def titles(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["title"] for item in check_feed(response.data, response.content_type)["items"]]


def break_store(app: Flask) -> None:
    """Damage the SQLite file under the running app: every read of stories fails."""
    store: SQLiteStore = app.extensions["feedbridge"].store
    with sqlite3.connect(store.path) as other:
        other.execute("DROP TABLE memberships")
        other.execute("DROP TABLE categories")


def test_a_selection_while_the_store_fails_is_filtered_never_the_whole_feed(
    app: Flask,
) -> None:
    client = app.test_client()
    kept = titles(client.get(FEED))
    assert len(kept) == 11
    break_store(app)
    nothing = client.get(f"{FEED}?q=zzzznomatch")
    assert nothing.headers["X-Cache"] == "stale" and titles(nothing) == []
    assert titles(client.get(f"{FEED}?limit=1")) == kept[:1]
    word = kept[3].split()[0]
    found = titles(client.get(f"{FEED}?q={word}"))
    assert found and all(word.casefold() in title.casefold() for title in found)
    assert len(found) < len(kept)
    assert titles(client.get(f"{FEED}?q={word}&limit=500")) == found  # a cap of matches
    more = client.get(f"{FEED}?limit=12")  # more than the process holds: no wrong answer
    assert more.status_code == 503 and int(more.headers["Retry-After"]) > 0
    assert titles(client.get(FEED)) == kept  # the feed itself: the last good copy


def test_a_never_seen_category_whose_first_merge_fails_is_read_by_the_process(
    app: Flask, site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_the_disk(app.extensions["feedbridge"].store, monkeypatch)
    client = app.test_client()
    first = client.get(FEED)
    assert first.headers["X-Cache"] == "miss" and len(titles(first)) == 11
    assert titles(client.get(f"{FEED}?limit=2")) == titles(first)[:2]
    again = client.get("/feeds/vok-en.atom")
    assert (again.status_code, again.headers["X-Cache"]) == (200, "stale")
    assert client.get("/status").json["store"]["state"] == "degraded"


@pytest.mark.slow
def test_with_redis_away_a_selection_is_never_the_whole_feed(
    make_app: Callable[..., Flask],
) -> None:
    with RedisServer() as server:
        app = make_app(redis_url=server.url)
        client = app.test_client()
        kept = titles(client.get(FEED))
        server.stop()
        nothing = client.get(f"{FEED}?q=zzzznomatch")
        one = client.get(f"{FEED}?limit=1")
        never_seen = client.get("/feeds/pyongyang-times.json?q=zzzznomatch")
    assert titles(nothing) == [] and titles(one) == kept[:1]
    assert json.loads(never_seen.data)["items"] == []
