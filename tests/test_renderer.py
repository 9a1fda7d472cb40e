"""What makes a selection cheap: entries rendered once per story, the newest stories read
once per version, and a body gzipped only when a reader asks for it gzipped."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask

from feedbridge import feeds
from feedbridge.feeds import FeedInfo, Format, render
from feedbridge.model import ArticleKey, Item
from feedbridge.renderer import Renderer
from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import Listing
from feedbridge.window import Windows, size_of

BASE = "https://kcnawatch.org"
INFO = FeedInfo(
    id="tag:kcnawatch.org,2014:feedbridge/test",
    title="Test",
    description="Test feed",
    self_url="https://feedbridge.invalid/feeds/test.atom",
    home_url="https://kcnawatch.org/",
)
WORDS = ("cement", "harvest", "railway", "textile", "youth")


def story(n: int) -> Item:
    """Story ``n`` (newer as ``n`` grows), about two of :data:`WORDS`."""
    ts = 1_700_000_000 + n * 600
    return Item(
        key=ArticleKey(ts, str(300_000_000 + n)),
        title=f"Story {n} on {WORDS[n % 5]} and {WORDS[n % 3]}",
        path=f"/newstream/{ts}-{300_000_000 + n}/story-{n}/",
        excerpt=f"What story {n} says.",
        content_html=f"<p>Story {n} in full.</p>" * 20,
    )


def newest_first(stories: Sequence[Item]) -> list[Item]:
    return sorted(stories, key=lambda item: item.published, reverse=True)


@pytest.fixture
def rendered_entries(monkeypatch: pytest.MonkeyPatch) -> list[Item]:
    """Every story whose entry feedgen (or json) renders from now on."""
    seen: list[Item] = []
    entries = feeds.entries

    def counted(fmt: Format, items: Sequence[Item], *, base_url: str) -> list[bytes]:
        seen.extend(items)
        return entries(fmt, items, base_url=base_url)

    monkeypatch.setattr(feeds, "entries", counted)
    return seen


@pytest.mark.parametrize("fmt", list(Format))
def test_an_entry_is_rendered_once_per_story(fmt: Format, rendered_entries: list[Item]) -> None:
    renderer = Renderer()
    stories = newest_first([story(n) for n in range(30)])
    first = renderer.render(fmt, INFO, stories[:20], base_url=BASE)
    again = renderer.render(fmt, INFO, stories[5:30], base_url=BASE)
    assert rendered_entries == stories[:20] + stories[20:30]  # the others were kept
    for document, chosen in ((first, stories[:20]), (again, stories[5:30])):
        assert document.body == render(fmt, INFO, chosen, base_url=BASE)


def test_a_story_changed_is_rendered_anew(rendered_entries: list[Item]) -> None:
    renderer = Renderer()
    stories = newest_first([story(n) for n in range(3)])
    before = renderer.render(Format.ATOM, INFO, stories, base_url=BASE)
    corrected = [replace(stories[0], title="Corrected title"), *stories[1:]]
    after = renderer.render(Format.ATOM, INFO, corrected, base_url=BASE)
    assert b"Corrected title" in after.body
    assert after.etag != before.etag
    assert rendered_entries == [*stories, corrected[0]]


def test_the_etag_is_the_contents_whoever_renders_it() -> None:
    """Two processes (two renderers), one with the entries kept and one without, give
    the same tag for the same document, another for any other."""
    stories = newest_first([story(n) for n in range(10)])
    warm = Renderer()
    warm.render(Format.RSS, INFO, stories, base_url=BASE)
    tags = {
        warm.render(Format.RSS, INFO, stories[:5], base_url=BASE).etag,
        Renderer().render(Format.RSS, INFO, stories[:5], base_url=BASE).etag,
    }
    assert len(tags) == 1
    others = [
        Renderer().render(Format.RSS, INFO, stories[:4], base_url=BASE).etag,
        Renderer().render(Format.ATOM, INFO, stories[:5], base_url=BASE).etag,
        Renderer()
        .render(Format.RSS, replace(INFO, title="Other"), stories[:5], base_url=BASE)
        .etag,
        Renderer().render(Format.RSS, INFO, stories[:5], base_url="https://other").etag,
    ]
    assert len(tags | set(others)) == 5
    assert all(tag.startswith('W/"') and tag.endswith('"') for tag in tags)


def test_the_entries_kept_are_bounded() -> None:
    stories = newest_first([story(n) for n in range(200)])
    entry = len(feeds.entries(Format.ATOM, stories[:1], base_url=BASE)[0])
    renderer = Renderer(entry_bytes=2 * entry * 10 + entry)  # room for 10, not 11
    for start in range(0, 200, 20):
        renderer.render(Format.ATOM, INFO, stories[start : start + 20], base_url=BASE)
    assert 0 < renderer.entry_count() <= 10


class CountingStore(SQLiteStore):
    """A SQLite store that counts its reads of the newest stories (searches apart)."""

    reads: int = 0
    searches: int = 0

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        if words:
            self.searches += 1
        else:
            self.reads += 1
        return super().newest(category, limit, words)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(tmp_path / "feedbridge.db")
    store.merge("test", Listing(tuple(newest_first([story(n) for n in range(60)]))), now=0.0)
    return store


def test_every_limit_of_a_version_reads_the_store_once(store: CountingStore) -> None:
    windows = Windows(store, size=40)
    version = store.state("test").version
    expected = {limit: store.newest("test", limit) for limit in range(1, 41)}
    store.reads = 0
    for limit in (1, 17, 40, 3, *expected):
        assert windows.newest("test", version, limit) == expected[limit]
    assert store.reads == 1
    store.merge("test", Listing((story(60),)), now=1.0)  # a new version
    newer = store.state("test").version
    assert windows.newest("test", newer, 1) == [story(60)]
    assert store.reads == 2


@pytest.mark.parametrize(
    ("words", "limit", "asks_the_store"),
    [
        (("cement",), 5, False),  # one story in five: enough among the newest 40
        (("cement", "railway"), 2, False),
        (("cement", "railway"), 10, True),  # one in fifteen: too few among them
        (("nowhere",), 5, True),
        (("story 3",), 50, True),  # fewer than asked for: the history may hold more
    ],
)
def test_a_search_finds_in_the_window_what_the_store_would(
    store: CountingStore, words: tuple[str, ...], limit: int, asks_the_store: bool
) -> None:
    windows = Windows(store, size=40)
    version = store.state("test").version
    expected = store.newest("test", limit, words)
    store.searches = 0
    assert windows.newest("test", version, limit, words) == expected
    assert store.searches == int(asks_the_store)


def test_the_windows_kept_are_bounded(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "feedbridge.db")
    stories = newest_first([story(n) for n in range(40)])
    for category in ("a", "b", "c"):
        store.merge(category, Listing(tuple(stories)), now=0.0)
    one = sum(size_of(story) for story in stories)
    windows = Windows(store, size=40, max_bytes=one * 2)  # two categories' windows fit
    for category in ("a", "b", "c", "a"):
        windows.newest(category, store.state(category).version, 10)
    assert store.reads == 4  # "a" was dropped for "c", and read again


def test_a_selection_is_gzipped_only_when_asked_for_gzipped(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    compressed: list[int] = []
    compress = gzip.compress

    def counted(data: bytes, compresslevel: int = 9, *, mtime: float | None = None) -> bytes:
        compressed.append(len(data))
        return compress(data, compresslevel, mtime=mtime)

    monkeypatch.setattr(gzip, "compress", counted)
    client = app.test_client()
    plain = client.get("/feeds/vok-en.atom?limit=3")
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert compressed == []
    for _ in range(2):
        zipped = client.get("/feeds/vok-en.atom?limit=3", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(zipped.data) == plain.data
        assert zipped.headers["Content-Length"] == str(len(zipped.data))
    assert compressed == [len(plain.data)]  # once, when first asked for, then kept
