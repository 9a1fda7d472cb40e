"""The story store's contract, the same on both backends: a SQLite file and a real Redis.

Plus what is particular to each: the SQLite file's schema, migrations and failures
(corrupt, unwritable, full), and Redis's namespaces and leases on its own clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from feedbridge import sqlite_store
from feedbridge.categories import load_registry
from feedbridge.errors import (
    BackingOff,
    Blocked,
    ConfigError,
    HTTPStatusError,
    LayoutChanged,
    NotHTML,
    TooLarge,
    Unreachable,
    UpstreamError,
    UpstreamTimeout,
)
from feedbridge.model import ArticleKey, Item
from feedbridge.redis_store import RedisStore, namespace
from feedbridge.schedule import Cadence, by_hour
from feedbridge.scrape import parse_home, parse_listing
from feedbridge.sqlite_store import MIGRATIONS, VERSION, SQLiteStore
from feedbridge.store import (
    Failure,
    Listing,
    Retention,
    Store,
    StoreError,
    failure_from_json,
    failure_to_json,
    item_from_dict,
    item_to_dict,
)
from tests.conftest import SITE, Clock, fill_the_disk, loaded_by
from tests.servers import wait_until

BASE = "https://kcnawatch.org"
REGISTRY = load_registry()
DAY = 86_400


def story(
    n: int, *, title: str | None = None, listed: date | None = None, **fields: object
) -> Item:
    """Story number ``n``: newer stories have larger numbers."""
    ts = 1_773_000_000 + n * 600
    return Item(
        key=ArticleKey(ts, str(100_000_000 + n)),
        title=title or f"Story {n}",
        path=f"/newstream/{ts}-{100_000_000 + n}/story-{n}/",
        excerpt=f"What story {n} says.",
        listed=listed,
        source="Voice of Korea (EN)",
        **fields,  # type: ignore[arg-type]
    )


def listing(*numbers: int) -> Listing:
    return Listing(items=tuple(story(n) for n in sorted(numbers, reverse=True)))


def titles(items: list[Item]) -> list[str]:
    return [item.title for item in items]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made: Store = SQLiteStore(tmp_path / "stories.db", clock=clock)
    else:
        made = RedisStore(request.getfixturevalue("redis_url"), upstream_url=BASE, clock=clock)
    yield made
    made.close()


# --- stories and memberships -------------------------------------------------------------


def test_a_listing_is_kept_newest_first_and_changes_the_version(store: Store, clock: Clock) -> None:
    assert not store.state("vok-en").seen
    merged = store.merge("vok-en", listing(1, 2, 3), now=clock.now)
    assert [str(key) for key in merged.added] == [str(story(n).key) for n in (3, 2, 1)]
    state = store.state("vok-en")
    assert (state.refreshed_at, state.stories, state.gap) == (clock.now, 3, None)
    assert titles(store.newest("vok-en", 50)) == ["Story 3", "Story 2", "Story 1"]
    assert titles(store.newest("vok-en", 2)) == ["Story 3", "Story 2"]
    version = state.version

    clock.advance(600)
    again = store.merge("vok-en", listing(1, 2, 3), now=clock.now)
    assert (again.added, again.gap) == ((), None)
    assert store.state("vok-en").version == version, "nothing changed"
    assert store.state("vok-en").refreshed_at == clock.now


def test_stories_that_left_the_listing_stay(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(*range(1, 12)), now=clock.now)
    store.merge("vok-en", listing(*range(6, 17)), now=clock.now + 600)
    assert titles(store.newest("vok-en", 50)) == [f"Story {n}" for n in range(16, 0, -1)]


def test_one_story_in_two_categories_is_stored_once(store: Store, clock: Clock) -> None:
    store.merge("all", listing(1, 2), now=clock.now)
    store.merge("vok-en", listing(2, 3), now=clock.now)
    before = (store.state("all").version, store.state("vok-en").version)
    shared = dataclasses.replace(store.newest("vok-en", 1, ["story 3"])[0], title="x")
    assert shared.key == story(3).key
    with_text = dataclasses.replace(
        store.newest("all", 1)[0], content_html="<p>The body.</p>", original_url="http://x/"
    )
    store.save_full_text(with_text)
    assert store.newest("all", 1)[0].content_html == "<p>The body.</p>"
    assert store.newest("vok-en", 2)[1].content_html == "<p>The body.</p>"
    after = (store.state("all").version, store.state("vok-en").version)
    assert after[0] != before[0] and after[1] != before[1], "both feeds change"


def test_a_story_whose_listing_changes_is_updated_in_place(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(1, 2), now=clock.now)
    version = store.state("vok-en").version
    clock.advance(600)
    renamed = Listing(items=(story(2, title="Story 2, corrected"), story(1)))
    merged = store.merge("vok-en", renamed, now=clock.now)
    assert merged.added == ()
    [newest, oldest] = store.newest("vok-en", 50)
    assert newest.title == "Story 2, corrected"
    assert newest.modified == datetime.fromtimestamp(clock.now, UTC)
    assert newest.updated > newest.published and oldest.modified is None
    assert store.state("vok-en").version != version


def test_a_listing_that_says_less_does_not_undo_what_another_said(
    store: Store, clock: Clock
) -> None:
    """The home page names no source; the source's own listing does."""
    store.merge("vok-en", listing(1), now=clock.now)
    store.merge("all", Listing(items=(dataclasses.replace(story(1), source=None),)), now=clock.now)
    [kept] = store.newest("all", 1)
    assert (kept.source, kept.modified) == ("Voice of Korea (EN)", None)


def test_a_story_ingested_twice_is_one_item(store: Store, clock: Clock) -> None:
    day = date(2026, 3, 10)
    first = story(1, title="Twice", listed=day)
    second = dataclasses.replace(
        story(2, title="Twice", listed=day), path="/newstream/1773001200-100000002/twice/"
    )
    store.merge("vok-en", Listing(items=(story(3), second, first)), now=clock.now)
    assert [item.key for item in store.newest("vok-en", 50)] == [story(3).key, first.key]
    assert [item.key for item in store.newest("vok-en", 1)] == [story(3).key]


def test_search_reaches_the_whole_history(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(*range(1, 80)), now=clock.now)
    store.merge("vok-en", Listing(items=(story(80, title="Cement output up"),)), now=clock.now)
    sevens = [f"Story {n}" for n in range(79, 0, -1) if "7" in str(n)]
    assert titles(store.newest("vok-en", 50, ["story", "7"])) == sevens
    assert titles(store.newest("vok-en", 5, ["7"])) == sevens[:5]
    assert titles(store.newest("vok-en", 50, ["cement"])) == ["Cement output up"]
    assert store.newest("vok-en", 50, ["nothing-like-it"]) == []


def test_a_refresh_that_shares_nothing_with_what_is_kept_is_a_gap(
    store: Store, clock: Clock
) -> None:
    store.merge("vok-en", listing(1, 2, 3), now=clock.now)
    clock.advance(600)
    merged = store.merge("vok-en", listing(10, 11, 12), now=clock.now)
    assert merged.gap is not None
    assert (merged.gap.at, merged.gap.since_previous, merged.gap.in_a_row) == (clock.now, 600, 1)
    assert store.state("vok-en").in_gap
    clock.advance(60)
    assert store.merge("vok-en", listing(20, 21), now=clock.now).gap is not None
    assert store.state("vok-en").gap.in_a_row == 2  # type: ignore[union-attr]
    clock.advance(60)
    assert store.merge("vok-en", listing(21, 22), now=clock.now).gap is None
    state = store.state("vok-en")
    assert not state.in_gap and state.gap is not None, "the last gap is remembered"


def test_stories_added_from_elsewhere_are_merged_but_the_category_is_not_refreshed(
    store: Store, clock: Clock
) -> None:
    store.merge("vok-en", listing(10, 11), now=clock.now)
    before = store.state("vok-en")
    clock.advance(600)
    recovered = story(5, content_html="<p>Full text.</p>")
    added = store.add("vok-en", [recovered, story(10)], now=clock.now)
    assert added == (recovered.key,), "a story the category has is not added twice"
    after = store.state("vok-en")
    assert (after.refreshed_at, after.etag, after.gap) == (
        before.refreshed_at, before.etag, before.gap,
    )  # fmt: skip
    assert after.version != before.version and after.stories == 3
    assert titles(store.newest("vok-en", 10)) == ["Story 11", "Story 10", "Story 5"]
    assert store.newest("vok-en", 10)[2].content_html == "<p>Full text.</p>"
    assert store.pending("vok-en", now=clock.now, limit=10) != [], "the listed ones lack it"
    assert store.add("all", [recovered], now=clock.now) == (recovered.key,)
    assert not store.state("all").seen, "filing a story is no refresh of the category"
    assert store.add("vok-en", [recovered], now=clock.now) == ()
    assert set(store.stored([recovered.key, story(99).key])) == {recovered.key}


def test_notes_are_kept_and_swapped_only_from_what_they_read(store: Store) -> None:
    assert store.notes("gap") == {}
    store.put_note("gap", "vok-en", "first")
    store.put_note("walk", "repair", "page 3")
    assert store.notes("gap") == {"vok-en": "first"}
    assert not store.swap_note("gap", "vok-en", "stale", "second")
    assert store.swap_note("gap", "vok-en", "first", "second")
    assert store.notes("gap") == {"vok-en": "second"}
    assert not store.swap_note("gap", "vok-en", "first", None)
    assert store.swap_note("gap", "vok-en", "second", None)
    assert store.notes("gap") == {} and store.notes("walk") == {"repair": "page 3"}


def test_retention_by_count_and_by_days_since_last_listed(store: Store, clock: Clock) -> None:
    store.merge("all", listing(1), now=clock.now)
    store.merge("vok-en", listing(1, 2, 3, 4, 5), now=clock.now)
    assert store.prune("vok-en", Retention(days=30, stories=3), now=clock.now) == 2
    assert titles(store.newest("vok-en", 50)) == ["Story 5", "Story 4", "Story 3"]
    assert titles(store.newest("all", 50)) == ["Story 1"], "still listed elsewhere"

    clock.advance(31 * DAY)
    store.merge("vok-en", listing(6), now=clock.now)
    assert store.prune("vok-en", Retention(days=30, stories=3), now=clock.now) == 3
    assert titles(store.newest("vok-en", 50)) == ["Story 6"]


# --- full text ---------------------------------------------------------------------------


def test_stories_without_full_text_are_pending_until_read(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(1, 2, 3), now=clock.now)
    pending = store.pending("vok-en", now=clock.now, limit=10)
    assert [p.item.key for p in pending] == [story(n).key for n in (3, 2, 1)]
    assert {p.attempts for p in pending} == {0}
    store.save_full_text(dataclasses.replace(story(3), content_html="<p>3</p>"))
    store.postpone_full_text(story(2).key, retry_at=clock.now + 300)
    assert [p.item.key for p in store.pending("vok-en", now=clock.now, limit=10)] == [story(1).key]
    later = store.pending("vok-en", now=clock.now + 300, limit=10)
    assert [(p.item.key, p.attempts) for p in later] == [(story(2).key, 1), (story(1).key, 0)]
    assert len(store.pending("vok-en", now=clock.now + 300, limit=1)) == 1


def test_full_text_survives_a_later_listing(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(1), now=clock.now)
    store.save_full_text(dataclasses.replace(story(1), content_html="<p>1</p>"))
    store.merge("vok-en", Listing(items=(story(1, title="Story 1!"),)), now=clock.now)
    [kept] = store.newest("vok-en", 1)
    assert (kept.title, kept.content_html) == ("Story 1!", "<p>1</p>")


def test_every_story_without_full_text_is_pending_however_old(store: Store, clock: Clock) -> None:
    """More stories than any window of the newest: the oldest still get their full text."""
    store.merge("vok-en", listing(*range(1, 251)), now=clock.now)
    for n in range(51, 251):
        store.save_full_text(dataclasses.replace(story(n), content_html=f"<p>{n}</p>"))
    pending = store.pending("vok-en", now=clock.now, limit=100)
    assert [p.item.key for p in pending] == [story(n).key for n in range(50, 0, -1)]
    store.postpone_full_text(story(50).key, retry_at=clock.now + 300)
    assert store.pending("vok-en", now=clock.now, limit=1)[0].item.key == story(49).key


def test_saving_full_text_keeps_what_a_listing_changed_meanwhile(
    store: Store, clock: Clock
) -> None:
    store.merge("vok-en", Listing(items=(story(1, title="Old title"),)), now=clock.now)
    [asked] = store.pending("vok-en", now=clock.now, limit=10)
    clock.advance(600)
    store.merge("vok-en", Listing(items=(story(1, title="Corrected title"),)), now=clock.now)
    read = datetime.fromtimestamp(clock.now + 5, UTC)
    store.save_full_text(
        dataclasses.replace(
            asked.item, content_html="<p>1</p>", original_url="http://x/1", modified=read
        )
    )
    [kept] = store.newest("vok-en", 1)
    assert (kept.title, kept.content_html, kept.original_url, kept.modified) == (
        "Corrected title", "<p>1</p>", "http://x/1", read,
    )  # fmt: skip
    assert store.pending("vok-en", now=clock.now, limit=10) == []


def test_full_text_of_a_story_pruned_meanwhile_is_not_saved(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(1, 2), now=clock.now)
    store.prune("vok-en", Retention(stories=1), now=clock.now)
    store.save_full_text(dataclasses.replace(story(1), content_html="<p>1</p>"))
    assert titles(store.newest("vok-en", 50)) == ["Story 2"]


def test_a_write_between_a_merge_s_read_and_its_write_is_kept(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Another process saves a story's full text while a merge of it is under way: the
    merge reads again (Redis) or the other waits for it (SQLite); neither is lost."""
    other = _same_store(store, request)
    store.merge("vok-en", Listing(items=(story(1, title="Old title"),)), now=clock.now)
    backend = sys.modules[type(store).__module__]
    plan_merge = backend.plan_merge  # type: ignore[attr-defined]
    writes: list[threading.Thread] = []

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not writes:  # once, between the first read and its write
            text = dataclasses.replace(story(1, title="Old title"), content_html="<p>1</p>")
            writes.append(threading.Thread(target=other.save_full_text, args=(text,)))
            writes[0].start()
            writes[0].join(timeout=1.0)  # SQLite: waits for the merge's transaction
        return plan_merge(*args, **kwargs)

    monkeypatch.setattr(backend, "plan_merge", meanwhile)
    store.merge("vok-en", Listing(items=(story(1, title="Corrected title"),)), now=clock.now)
    writes[0].join(timeout=10)
    assert not writes[0].is_alive()
    [kept] = store.newest("vok-en", 1)
    assert (kept.title, kept.content_html) == ("Corrected title", "<p>1</p>")
    assert store.pending("vok-en", now=clock.now, limit=10) == []
    other.close()


@pytest.mark.parametrize("first", [20, sqlite_store.SEARCH_FIRST])
def test_search_finds_substrings_among_more_than_two_hundred(
    store: Store, clock: Clock, first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both backends give the same answer: every word, casefolded, a substring of the
    title or the excerpt (words shorter than three characters too). SQLite's search
    starts with the newest ``first`` members, then walks or asks its index: each way is
    taken here."""
    monkeypatch.setattr(sqlite_store, "SEARCH_FIRST", first)
    odd = story(251, title='Ünïcode "Quoted" STRAẞE')
    store.merge("vok-en", Listing(items=(odd, *listing(*range(1, 251)).items)), now=clock.now)
    expected = [f"Story {n}" for n in range(250, 0, -1) if "12" in str(n)]
    assert titles(store.newest("vok-en", 50, ["story", "12"])) == expected
    starting = [title for title in expected if title.startswith("Story 12")]
    assert titles(store.newest("vok-en", 50, ["ory 12", "says"])) == starting
    assert titles(store.newest("vok-en", 3, ["12"])) == expected[:3]
    assert titles(store.newest("vok-en", 50, ["what story 3 says"])) == ["Story 3"]
    assert titles(store.newest("vok-en", 50, ['"quoted"', "strasse", "ünï"])) == [odd.title]
    assert store.newest("vok-en", 50, ["story", "nothing-like-it"]) == []
    assert len(store.newest("vok-en", 300, ["story"])) == 251


def _same_store(store: Store, request: pytest.FixtureRequest) -> Store:
    """A second store on what ``store`` keeps, as another process opens it."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    return RedisStore(request.getfixturevalue("redis_url"), upstream_url=BASE)


# --- failures, leases, the site's Retry-After ------------------------------------------


def test_a_failure_is_kept_and_a_success_resolves_it(store: Store, clock: Clock) -> None:
    error = HTTPStatusError("the site answered 429", upstream_status=429, retry_after=120.0)
    store.save_failure("vok-en", Failure(2, error, clock.now, clock.now + 120))
    failure = store.state("vok-en").failure
    assert failure is not None and failure.count == 2
    assert (type(failure.error), failure.error.status, failure.retry_at) == (
        HTTPStatusError, 503, clock.now + 120,
    )  # fmt: skip
    store.merge("vok-en", listing(1), now=clock.now + 130)
    resolved = store.state("vok-en").failure
    assert resolved is not None and (resolved.count, resolved.retry_at) == (0, 0.0)
    assert resolved.at == clock.now, "/status still tells what went wrong last"


def test_a_lease_is_held_by_one_token_extended_by_it_and_released_only_by_it(
    store: Store,
) -> None:
    assert store.try_lease("refresher", "one", 60)
    assert not store.try_lease("refresher", "two", 60)
    assert store.try_lease("refresher", "one", 60), "the holder extends it"
    store.release("refresher", "two")  # not its lease: nothing happens
    assert not store.try_lease("refresher", "two", 60)
    store.release("refresher", "one")
    assert store.try_lease("refresher", "two", 60)


def test_the_sites_retry_after_is_never_shortened(store: Store) -> None:
    assert store.paused_for() == 0
    store.pause(120)
    store.pause(10)
    assert 110 < store.paused_for() <= 120


def test_a_pause_written_before_it_was_called_one_still_holds(tmp_path: Path, clock: Clock) -> None:
    """The site's pause keeps the row name older versions wrote ("closed"): a pause in
    force when the service is upgraded still holds."""
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    try:
        with contextlib.closing(sqlite3.connect(store.path)) as own, own:
            own.execute("INSERT INTO site (name, until) VALUES ('closed', ?)", (clock.now + 120,))
        assert 119 < store.paused_for() <= 120
    finally:
        store.close()


# --- the stored forms --------------------------------------------------------------------


def fixture_items() -> list[Item]:
    """Every item the saved pages give, the way the bridge reads them."""
    items = parse_home((SITE / "home.html").read_bytes(), base_url=BASE)
    for category in REGISTRY.values():
        if category.label is None:
            continue
        page = SITE / "articles" / f"{category.paths[0].split('/')[2]}.html"
        items += parse_listing(page.read_bytes(), label=category.label, base_url=BASE)
    return items


def test_every_item_of_the_saved_pages_survives_json() -> None:
    items = fixture_items()
    assert len(items) > 50
    for item in items:
        assert item_from_dict(json.loads(json.dumps(item_to_dict(item)))) == item


def test_the_json_form_has_every_field_of_an_item() -> None:
    """A field added to Item must be added to its stored form too, or it would be lost."""
    item = fixture_items()[0]
    assert set(item_to_dict(item)) == {field.name for field in dataclasses.fields(Item)}


_text = st.text(max_size=40)
_items = st.builds(
    Item,
    key=st.builds(ArticleKey, st.integers(0, 2**40), st.text("0123456789", min_size=1)),
    title=_text,
    path=_text,
    excerpt=_text,
    listed=st.none() | st.dates(date(1990, 1, 1), date(2100, 1, 1)),
    thumbnail=st.none() | _text,
    source=st.none() | _text,
    content_html=st.none() | _text,
    original_url=st.none() | _text,
    modified=st.none() | st.datetimes(timezones=st.just(UTC)),
)


@given(_items)
def test_any_item_survives_json(item: Item) -> None:
    assert item_from_dict(json.loads(json.dumps(item_to_dict(item)))) == item


@pytest.mark.parametrize(
    "error",
    [
        HTTPStatusError("429", upstream_status=429, retry_after=120.0),
        HTTPStatusError("500", upstream_status=500),
        UpstreamTimeout("slow"),
        Unreachable("down"),
        Blocked("wall"),
        NotHTML("pdf"),
        TooLarge("big"),
        LayoutChanged("no items"),
        BackingOff("later", retry_after=30.0),
        UpstreamError("internal error: boom"),
    ],
)
def test_a_failure_comes_back_as_the_same_error(error: UpstreamError) -> None:
    failure = Failure(3, error, 1_774_000_000.5, 1_774_000_120.5)
    back = failure_from_json(failure_to_json(failure))
    assert back is not None
    assert (back.count, back.at, back.retry_at) == (3, failure.at, failure.retry_at)
    assert type(back.error) is type(error)
    assert (str(back.error), back.error.status, back.error.retry_after) == (
        str(error),
        error.status,
        error.retry_after,
    )


# --- SQLite: the file ---------------------------------------------------------------------


def test_the_file_is_in_wal_mode_and_carries_its_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)


def test_a_store_of_the_previous_schema_is_migrated_keeping_its_stories(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # what version 1 of feedbridge wrote
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        with_text = dataclasses.replace(story(1), content_html="<p>1</p>")
        for item in (with_text, story(2)):
            db.execute(
                "INSERT INTO stories VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(item.key), item.published.timestamp(), item.key.ts, item.key.id,
                    json.dumps(item_to_dict(item)), item.title.casefold(), clock.now, clock.now,
                ),
            )  # fmt: skip
            db.execute(
                "INSERT INTO memberships VALUES ('vok-en', ?, ?, ?, ?)",
                (str(item.key), item.published.timestamp(), item.key.ts, item.key.id),
            )
        db.execute("INSERT INTO categories (slug, refreshed_at) VALUES ('vok-en', ?)", (clock.now,))
    store = SQLiteStore(path, clock=clock)
    assert titles(store.newest("vok-en", 50)) == ["Story 2", "Story 1"]
    assert store.state("vok-en").stories == 2, "counted once, when migrated"
    assert titles(store.newest("vok-en", 50, ["story"])) == ["Story 2", "Story 1"], "indexed"
    assert [p.item.key for p in store.pending("vok-en", now=clock.now, limit=10)] == [
        story(2).key
    ], "what already had its full text is not read again"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)


def test_a_store_of_a_newer_feedbridge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(ConfigError, match=rf"^FEEDBRIDGE_DB: {path}: written by a newer"):
        SQLiteStore(path)


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a SQLite file, whatever its name says" * 100)
    with pytest.raises(ConfigError, match=rf"^FEEDBRIDGE_DB: {path}: file is not a database"):
        SQLiteStore(path)


def test_a_store_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^FEEDBRIDGE_DB: .*no such directory"):
        SQLiteStore(tmp_path / "missing" / "s.db")
    with pytest.raises(ConfigError, match=rf"^FEEDBRIDGE_DB: {tmp_path}: unable to open"):
        SQLiteStore(tmp_path)  # a directory
    # /proc takes no new file, whoever asks (root too).
    with pytest.raises(ConfigError, match=r"^FEEDBRIDGE_DB: /proc/feedbridge.db: unable to open"):
        SQLiteStore("/proc/feedbridge.db")


def test_an_sqlite_without_fts5_is_refused_in_one_line() -> None:
    class WithoutFTS5:
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("no such module: fts5")

    with pytest.raises(ConfigError, match=r"^FEEDBRIDGE_DB: s.db: this SQLite .* has no FTS5"):
        sqlite_store._require_fts5(WithoutFTS5(), "FEEDBRIDGE_DB: s.db")  # type: ignore[arg-type]


def test_a_full_disk_is_a_store_error_and_reads_go_on(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    store.merge("vok-en", listing(1, 2), now=clock.now)
    fill_the_disk(store, monkeypatch)
    huge = dataclasses.replace(story(3), excerpt="x" * 200_000)
    with pytest.raises(StoreError, match="full"):
        store.merge("vok-en", Listing(items=(huge,)), now=clock.now)
    assert store.describe() == {
        "backend": "sqlite",
        "state": "degraded",
        "problem": "database or disk is full",
        "since": store.describe()["since"],
    }
    assert titles(store.newest("vok-en", 50)) == ["Story 2", "Story 1"]


# --- Redis: namespaces and values -------------------------------------------------------


def test_two_sites_on_one_redis_never_share_state(redis_url: str, clock: Clock) -> None:
    one = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    other = RedisStore(redis_url, upstream_url="http://127.0.0.1:9", clock=clock)
    one.merge("vok-en", listing(1), now=clock.now)
    one.pause(600)
    assert not other.state("vok-en").seen and other.paused_for() == 0
    keys = redis.Redis.from_url(redis_url).keys("*")
    assert keys and all(key.startswith(namespace(BASE).encode()) for key in keys)


def test_an_unreadable_value_is_a_store_error_not_a_crash(redis_url: str, clock: Clock) -> None:
    store = RedisStore(redis_url, upstream_url=BASE, clock=clock)
    store.merge("vok-en", listing(1), now=clock.now)
    client = redis.Redis.from_url(redis_url)
    client.hset(f"{namespace(BASE)}story:{story(1).key}", "data", "not json")
    with pytest.raises(StoreError):
        store.newest("vok-en", 50)


def test_a_redis_lease_expires_on_redis_s_clock(redis_url: str) -> None:
    store = RedisStore(redis_url, upstream_url=BASE)
    assert store.try_lease("fetch:vok-en", "one", 0.2)
    wait_until(lambda: store.try_lease("fetch:vok-en", "two", 60), "the lease's expiry", 5)


# --- what the schedule reads and keeps ----------------------------------------------------


def test_published_hours_count_the_stories_of_each_hour_since_a_time(
    store: Store, clock: Clock
) -> None:
    store.merge("vok-en", listing(*range(1, 21)), now=clock.now)  # one every 10 minutes
    store.merge("all", listing(1, 2), now=clock.now)
    since = story(6).published.timestamp()
    expected = by_hour(story(n).published.timestamp() for n in range(6, 21))
    assert store.published_hours("vok-en", since=since) == expected
    assert sum(expected.values()) == 15 and max(expected.values()) <= 6
    assert store.published_hours("vok-en", since=clock.now + DAY) == {}
    assert store.published_hours("naenara-en", since=0) == {}


def test_a_cadence_is_kept_with_the_category_state(store: Store, clock: Clock) -> None:
    store.merge("vok-en", listing(1, 2), now=clock.now)
    assert store.state("vok-en").cadence is None
    store.save_cadence("vok-en", Cadence(11, 420.5, 3.1))
    assert store.state("vok-en").cadence == Cadence(11, 420.5, 3.1)
    store.save_cadence("vok-en", Cadence(11))
    assert store.state("vok-en").cadence == Cadence(11)
    assert store.state("vok-en").stories == 2, "the rest of the state stays"


# --- layering ---------------------------------------------------------------------------


def test_the_store_and_its_meaning_load_no_scraper_and_the_meaning_no_backend() -> None:
    watched = ("feedbridge.scrape", "lxml", "bs4", "redis", "sqlite3")
    assert loaded_by("feedbridge.history, feedbridge.store", watched) == []
