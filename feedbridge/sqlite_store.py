"""The story store in one SQLite file: the default, shared by every process on a machine.

Every worker of a server and every command line on the machine open the same file
(``FEEDBRIDGE_DB``). WAL mode lets readers go on while one process writes; writes are
short transactions that wait for each other up to a busy timeout. A process has one
connection, opened in the process that uses it (never inherited across a ``fork``), and
its threads take turns on it: under gevent's workers a "thread" is a greenlet, and a
connection per greenlet would be a connection per request.

The schema carries its version in ``PRAGMA user_version``; an older file is migrated
when opened, a newer one is refused, and so is a file that is no SQLite database or
cannot be written: :class:`~feedbridge.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedbridge.config import site_address
from feedbridge.errors import ConfigError
from feedbridge.history import (
    MergePlan,
    Versions,
    is_due,
    merge_result,
    next_gap,
    plan_merge,
    resolution,
    wants_full_text,
    with_full_text,
)
from feedbridge.model import ArticleKey, Item
from feedbridge.schedule import Cadence
from feedbridge.store import (
    DUPLICATE_MARGIN,
    CategoryState,
    Failure,
    Gap,
    Health,
    Listing,
    Merged,
    Pending,
    Retention,
    StoreError,
    checked_lately,
    dedupe_window,
    failure_from_json,
    failure_to_json,
    item_from_dict,
    item_to_dict,
    record_from_json,
    record_to_json,
    search_text,
)

BUSY_TIMEOUT_MS = 5000
SEARCH_FIRST = 500  # newest members a search checks before it looks further
SEARCH_RARE = 10  # fewer matches among them than this: the full-text index is asked
# The site's pause (its Retry-After, for every process): the row's name in the site
# table is the one written before the code called it a pause, so that a pause in force
# outlives an upgrade.
PAUSE_ROW = "closed"
_NEWEST_FIRST = " ORDER BY m.published DESC, m.ts DESC, m.article_id DESC LIMIT ?"

# Each entry brings a store of the version before it to the version it is the index of
# plus one: MIGRATIONS[0] makes an empty file a version 1 store.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE stories (
        key TEXT PRIMARY KEY,           -- <ts>-<id>
        published REAL NOT NULL,
        ts INTEGER NOT NULL,
        article_id TEXT NOT NULL,
        data TEXT NOT NULL,             -- the item, as JSON
        search TEXT NOT NULL,           -- title and excerpt, casefolded, for ?q=
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE memberships (
        category TEXT NOT NULL,
        story TEXT NOT NULL REFERENCES stories (key) ON DELETE CASCADE,
        published REAL NOT NULL,
        ts INTEGER NOT NULL,
        article_id TEXT NOT NULL,
        PRIMARY KEY (category, story)
    ) WITHOUT ROWID;
    CREATE INDEX memberships_newest
        ON memberships (category, published DESC, ts DESC, article_id DESC);
    CREATE INDEX memberships_story ON memberships (story);
    CREATE TABLE categories (
        slug TEXT PRIMARY KEY,
        refreshed_at REAL,
        version INTEGER NOT NULL DEFAULT 0,
        etag TEXT,
        last_modified TEXT,
        source_path TEXT NOT NULL DEFAULT '',
        failure TEXT,
        gap TEXT
    );
    CREATE TABLE leases (name TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL);
    CREATE TABLE site (name TEXT PRIMARY KEY, until REAL NOT NULL);
    """,
    # 2: full text to fetch, each story with its next try.
    """
    ALTER TABLE stories ADD COLUMN full_text INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stories ADD COLUMN full_text_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stories ADD COLUMN full_text_retry_at REAL NOT NULL DEFAULT 0;
    UPDATE stories SET full_text = json_extract(data, '$.content_html') IS NOT NULL;
    CREATE INDEX stories_without_full_text ON stories (full_text_retry_at) WHERE full_text = 0;
    """,
    # 3: each category's count of stories, kept: counting them at every request of a
    # feed cost a third of a millisecond with 5,000 stories.
    """
    ALTER TABLE categories ADD COLUMN stories INTEGER NOT NULL DEFAULT 0;
    UPDATE categories SET stories =
        (SELECT count(*) FROM memberships WHERE memberships.category = categories.slug);
    """,
    # 4: ?q= through an index: the stories' search text (casefolded title and excerpt) in
    # an FTS5 table of trigrams, so that a word is found as a substring, as before; kept
    # in step with the stories by triggers, in the transaction that writes them.
    """
    CREATE VIRTUAL TABLE stories_search
        USING fts5 (key UNINDEXED, search, tokenize = 'trigram case_sensitive 1');
    INSERT INTO stories_search (key, search) SELECT key, search FROM stories;
    CREATE TRIGGER stories_search_insert AFTER INSERT ON stories BEGIN
        INSERT INTO stories_search (key, search) VALUES (new.key, new.search);
    END;
    CREATE TRIGGER stories_search_update AFTER UPDATE OF search ON stories BEGIN
        DELETE FROM stories_search WHERE key = old.key;
        INSERT INTO stories_search (key, search) VALUES (new.key, new.search);
    END;
    CREATE TRIGGER stories_search_delete AFTER DELETE ON stories BEGIN
        DELETE FROM stories_search WHERE key = old.key;
    END;
    """,
    # 5: the site whose stories the file holds (config.site_address), set when the file
    # is first opened for a site; an older file takes the first site it is opened with.
    """
    CREATE TABLE site_address (address TEXT NOT NULL);
    """,
    # 6: each category's cadence, as its last refresh estimated it (feedbridge.schedule).
    """
    ALTER TABLE categories ADD COLUMN cadence TEXT;
    """,
    # 7: notes of the archive's walks (open gaps, where a walk stopped).
    """
    CREATE TABLE notes (
        kind TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, name)
    );
    """,
)
VERSION = len(MIGRATIONS)


class SQLiteFile:
    """The SQLite file at ``path``, opened (created or migrated) for this process: its
    connection, shared by the threads of the process in turn, its transactions, and its
    health as ``/status`` tells it."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        site: str | None = None,
    ) -> None:
        """``site``: the upstream URL; the file then holds that site's stories only."""
        self.path = Path(path)
        self._clock = clock
        self._connection_lock = threading.RLock()  # one statement sequence on it at a time
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._commits = 0  # this process's write transactions, for the states it keeps
        self._states: dict[str, tuple[tuple[int, int], CategoryState]] = {}
        self._data_version = (0, float("-inf"))  # the file's last data_version, and when
        self.health = Health("sqlite", down_event="store_degraded", up_event="store_ok")
        self._open(site)

    def describe(self) -> dict[str, object]:
        return self.health.describe()

    def close(self) -> None:
        with self._connection_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- internals ----------------------------------------------------------------------

    def _open(self, site: str | None) -> None:
        """Open (creating or migrating) the file now: a bad one stops start-up, and so
        does a file that holds another site's stories."""
        where = f"FEEDBRIDGE_DB: {self.path}"
        try:
            if self.path.parent and not self.path.parent.is_dir():
                raise ConfigError(f"{where}: no such directory {str(self.path.parent)!r}")
            db = self._connection()
            _require_fts5(db, where)
            [checked] = db.execute("PRAGMA quick_check(1)").fetchone()
            if checked != "ok":
                raise ConfigError(f"{where}: the file is damaged ({checked})")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > VERSION:
                raise ConfigError(
                    f"{where}: written by a newer feedbridge (schema {version}, this one "
                    f"reads up to {VERSION})"
                )
            self._migrate(db)
            if site is not None:
                self._hold(db, site_address(site))
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{where}: {_reason(exc)}") from exc
        except OSError as exc:
            raise ConfigError(f"{where}: {exc.strerror or exc}") from exc

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring the file to :data:`VERSION`, one migration per transaction; the version
        is read again inside each, so processes starting together migrate once."""
        while True:
            db.execute("BEGIN IMMEDIATE")
            with self._transaction(db, begun=True):
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version >= VERSION:
                    return
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")

    def _hold(self, db: sqlite3.Connection, address: str) -> None:
        """Record the site the file holds, or refuse another one: its stories, ids and
        failures are that site's, and would be served as the other's."""
        db.execute("BEGIN IMMEDIATE")
        with self._transaction(db, begun=True):
            row = db.execute("SELECT address FROM site_address").fetchone()
            if row is None:
                db.execute("INSERT INTO site_address (address) VALUES (?)", (address,))
        if row is not None and row[0] != address:
            raise ConfigError(
                f"FEEDBRIDGE_UPSTREAM_URL: {address} is not the site whose stories "
                f"FEEDBRIDGE_DB ({self.path}) holds, {row[0]}; give another site another file"
            )

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (callers hold ``_connection_lock`` while they use it)."""
        if self._db is None or self._pid != os.getpid():
            opened = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,  # the threads of the process take turns
            )
            opened.execute("PRAGMA journal_mode = WAL")
            opened.execute("PRAGMA synchronous = NORMAL")
            opened.execute("PRAGMA foreign_keys = ON")
            opened.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db, self._pid = opened, os.getpid()
            self._states.clear()  # kept against another connection's data_version
        return self._db

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._connection_lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise self._failed(exc, writing=False) from exc
        self.health.succeeded(writing=False)

    @contextlib.contextmanager
    def _writing(self, *, stories: bool = False) -> Iterator[sqlite3.Connection]:
        """A short write transaction, taken at once (no lock upgrade to deadlock on).

        A failure to write ``stories`` stays on ``/status`` until such a write succeeds:
        a lease or a failure record may fit where a new story does not.
        """
        with self._connection_lock:
            try:
                db = self._connection()
                db.execute("BEGIN IMMEDIATE")
                with self._transaction(db, begun=True):
                    yield db
                self._commits += 1
            except sqlite3.Error as exc:
                raise self._failed(exc, writing=stories) from exc
        self.health.succeeded(writing=stories)

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db: sqlite3.Connection, *, begun: bool = False) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if begun:
            db.execute("COMMIT")

    def _failed(self, exc: sqlite3.Error, *, writing: bool) -> StoreError:
        self.health.failed(_reason(exc), writing=writing)
        return StoreError(f"{self.path}: {_reason(exc)}")


class SQLiteStore(SQLiteFile):
    """A :class:`~feedbridge.store.Store` in the SQLite file at ``path``."""

    # --- the contract -----------------------------------------------------------------

    def state(self, category: str) -> CategoryState:
        """The category's state; read again only when the file changed since (every
        feed a reader gets asks for it: a query and two JSON decodes saved). Whether it
        did is asked at most every :data:`~feedbridge.store.STATE_CHECK` seconds."""
        version, at = self._data_version
        known = self._states.get(category)
        if (
            known is not None
            and known[0] == (version, self._commits)
            and checked_lately(at, self._clock())
        ):
            return known[1]
        with self._reading() as db:
            # Changes when another connection (process) commits; our own writes count too.
            version = db.execute("PRAGMA data_version").fetchone()[0]
            self._data_version = (version, self._clock())
            changed = (version, self._commits)
            known = self._states.get(category)
            if known is not None and known[0] == changed:
                return known[1]
            row = db.execute(
                "SELECT refreshed_at, version, etag, last_modified, source_path, failure, gap,"
                " stories, cadence FROM categories WHERE slug = ?",
                (category,),
            ).fetchone()
            state = _state_of(row)
            self._states[category] = (changed, state)
        return state

    def merge(self, category: str, listing: Listing, *, now: float) -> Merged:
        previous = self.state(category)
        with self._writing(stories=True) as db:
            plan, members, versions = self._file(db, category, listing.items, now)
            gap = next_gap(previous, overlap=len(members) > 0, now=now)
            db.execute(
                "INSERT INTO categories (slug, refreshed_at, etag, last_modified, source_path, gap)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (slug) DO UPDATE SET"
                " refreshed_at = excluded.refreshed_at, etag = excluded.etag,"
                " last_modified = excluded.last_modified, source_path = excluded.source_path,"
                " gap = excluded.gap",
                (
                    category, now, listing.etag, listing.last_modified, listing.source_path,
                    record_to_json(gap) if gap else None,
                ),
            )  # fmt: skip
            db.execute(
                "UPDATE categories SET stories = stories + ? WHERE slug = ?",
                (len(plan.added), category),
            )
            self._bump(db, category, Versions(category=versions.category))
            _resolve_failure(db, category, previous.failure)
        return merge_result(plan, gap, now)

    def add(self, category: str, items: Sequence[Item], *, now: float) -> tuple[ArticleKey, ...]:
        with self._writing(stories=True) as db:
            plan, _, versions = self._file(db, category, items, now)
            db.execute("INSERT OR IGNORE INTO categories (slug) VALUES (?)", (category,))
            db.execute(
                "UPDATE categories SET stories = stories + ? WHERE slug = ?",
                (len(plan.added), category),
            )
            self._bump(db, category, Versions(category=versions.category))
        return tuple(plan.added)

    def stored(self, keys: Sequence[ArticleKey]) -> dict[ArticleKey, Item]:
        names = [str(key) for key in keys]
        marks = ",".join("?" * len(names))
        with self._reading() as db:
            rows = db.execute(f"SELECT data FROM stories WHERE key IN ({marks})", names).fetchall()
        return {item.key: item for item in _items(rows)}

    def notes(self, kind: str) -> dict[str, str]:
        with self._reading() as db:
            rows = db.execute("SELECT name, value FROM notes WHERE kind = ?", (kind,)).fetchall()
        return dict(rows)

    def put_note(self, kind: str, name: str, value: str) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO notes (kind, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value",
                (kind, name, value),
            )

    def swap_note(self, kind: str, name: str, old: str, new: str | None) -> bool:
        with self._writing() as db:
            if new is None:
                sql = "DELETE FROM notes WHERE kind = ? AND name = ? AND value = ?"
                return db.execute(sql, (kind, name, old)).rowcount == 1
            sql = "UPDATE notes SET value = ? WHERE kind = ? AND name = ? AND value = ?"
            return db.execute(sql, (new, kind, name, old)).rowcount == 1

    def _file(
        self, db: sqlite3.Connection, category: str, items: Sequence[Item], now: float
    ) -> tuple[MergePlan, set[ArticleKey], Versions]:
        """Write ``items`` as stories and members of ``category``: what a refresh and a
        repair share. Returns the plan, which of them the category had before, and whose
        versions it moves (the stories' listers moved already)."""
        keys = [str(item.key) for item in items]
        marks = ",".join("?" * len(keys))
        stored = {
            item.key: item
            for (data,) in db.execute(f"SELECT data FROM stories WHERE key IN ({marks})", keys)
            for item in [item_from_dict(json.loads(data))]
        }
        members = {
            ArticleKey(ts, article_id)
            for ts, article_id in db.execute(
                f"SELECT ts, article_id FROM memberships WHERE category = ? AND story IN ({marks})",
                [category, *keys],
            )
        }
        plan = plan_merge(items, stored, members, datetime.fromtimestamp(now, UTC))
        for item in plan.writes:
            db.execute(
                "INSERT INTO stories (key, published, ts, article_id, data, search, first_seen,"
                " last_seen, full_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET data = excluded.data,"
                " search = excluded.search, published = excluded.published",
                (
                    str(item.key), item.published.timestamp(), item.key.ts, item.key.id,
                    json.dumps(item_to_dict(item)), search_text(item), now, now,
                    not wants_full_text(item),
                ),
            )  # fmt: skip
        db.executemany(
            "UPDATE stories SET last_seen = ? WHERE key = ?", [(now, key) for key in keys]
        )
        db.executemany(
            "INSERT OR IGNORE INTO memberships (category, story, published, ts, article_id)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (category, str(item.key), item.published.timestamp(), item.key.ts, item.key.id)
                for item in items
            ],
        )
        versions = Versions.of_merge(plan, stored)
        self._bump(db, category, versions)
        return plan, members, versions

    def touch(self, category: str, *, now: float) -> None:
        previous = self.state(category)
        with self._writing() as db:
            db.execute("UPDATE categories SET refreshed_at = ? WHERE slug = ?", (now, category))
            _resolve_failure(db, category, previous.failure)

    def save_failure(self, category: str, failure: Failure) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO categories (slug, failure) VALUES (?, ?)"
                " ON CONFLICT (slug) DO UPDATE SET failure = excluded.failure",
                (category, failure_to_json(failure)),
            )

    def save_cadence(self, category: str, cadence: Cadence) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE categories SET cadence = ? WHERE slug = ?",
                (record_to_json(cadence), category),
            )

    def published_hours(self, category: str, *, since: float) -> dict[int, int]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT CAST(published / 3600 AS INTEGER) AS hour, count(*) FROM memberships"
                " WHERE category = ? AND published >= ? GROUP BY hour",
                (category, since),
            ).fetchall()
        return dict(rows)

    def newest(self, category: str, limit: int, words: Sequence[str] = ()) -> list[Item]:
        wanted = limit + DUPLICATE_MARGIN
        with self._reading() as db:
            if words:
                rows = _search(db, category, words, wanted)
            else:
                rows = db.execute(
                    "SELECT s.data FROM memberships m JOIN stories s ON s.key = m.story"
                    f" WHERE m.category = ?{_NEWEST_FIRST}",
                    (category, wanted),
                ).fetchall()
        return dedupe_window(_items(rows), limit)

    def pending(self, category: str, *, now: float, limit: int) -> list[Pending]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT s.data, s.full_text_attempts, s.full_text_retry_at FROM memberships m"
                " JOIN stories s ON s.key = m.story"
                " WHERE m.category = ? AND s.full_text = 0 AND s.full_text_retry_at <= ?"
                " ORDER BY m.published DESC, m.ts DESC, m.article_id DESC LIMIT ?",
                (category, now, limit),
            ).fetchall()
        return [
            Pending(item_from_dict(json.loads(data)), n)
            for data, n, retry_at in rows
            if is_due(retry_at, now)
        ]

    def save_full_text(self, item: Item) -> None:
        """A patch of the story as stored when it is written (:func:`with_full_text`)."""
        with self._writing(stories=True) as db:
            row = db.execute("SELECT data FROM stories WHERE key = ?", (str(item.key),)).fetchone()
            if row is None:
                return  # pruned while its article was read
            patched = with_full_text(item_from_dict(json.loads(row[0])), item)
            db.execute(
                "UPDATE stories SET data = ?, full_text = 1 WHERE key = ?",
                (json.dumps(item_to_dict(patched)), str(item.key)),
            )
            self._bump(db, "", Versions.of_full_text(item.key))

    def postpone_full_text(self, key: ArticleKey, *, retry_at: float) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE stories SET full_text_attempts = full_text_attempts + 1,"
                " full_text_retry_at = ? WHERE key = ?",
                (retry_at, str(key)),
            )

    def prune(self, category: str, retention: Retention, *, now: float) -> int:
        oldest = now - retention.days * 86_400
        with self._writing(stories=True) as db:
            dropped = db.execute(
                "DELETE FROM memberships WHERE category = ? AND (story IN"
                " (SELECT key FROM stories WHERE last_seen < ?) OR story NOT IN"
                " (SELECT story FROM memberships WHERE category = ?"
                "  ORDER BY published DESC, ts DESC, article_id DESC LIMIT ?))",
                (category, oldest, category, retention.stories),
            ).rowcount
            if dropped:
                db.execute(
                    "DELETE FROM stories WHERE NOT EXISTS"
                    " (SELECT 1 FROM memberships WHERE story = stories.key)"
                )
                db.execute(
                    "UPDATE categories SET stories = stories - ? WHERE slug = ?",
                    (dropped, category),
                )
            self._bump(db, category, Versions.of_prune(dropped))
        return dropped

    def try_lease(self, name: str, token: str, ttl: float) -> bool:
        now = self._clock()
        with self._writing() as db:
            taken = db.execute(
                "INSERT INTO leases (name, token, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
                " expires = excluded.expires WHERE leases.token = excluded.token"
                " OR leases.expires <= ?",
                (name, token, now + ttl, now),
            ).rowcount
        return taken == 1

    def release(self, name: str, token: str) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND token = ?", (name, token))

    def paused_for(self) -> float:
        with self._reading() as db:
            row = db.execute("SELECT until FROM site WHERE name = ?", (PAUSE_ROW,)).fetchone()
        return max(0.0, row[0] - self._clock()) if row else 0.0

    def pause(self, seconds: float) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO site (name, until) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET until = max(until, excluded.until)",
                (PAUSE_ROW, self._clock() + seconds),
            )

    @staticmethod
    def _bump(db: sqlite3.Connection, category: str, versions: Versions) -> None:
        """New versions, as :class:`~feedbridge.history.Versions` says."""
        if versions.category:
            db.execute("UPDATE categories SET version = version + 1 WHERE slug = ?", (category,))
        if versions.stories:
            keys = [str(key) for key in versions.stories]
            marks = ",".join("?" * len(keys))
            db.execute(
                "UPDATE categories SET version = version + 1 WHERE slug IN"
                f" (SELECT category FROM memberships WHERE story IN ({marks}))",
                keys,
            )


def _resolve_failure(db: sqlite3.Connection, category: str, failure: Failure | None) -> None:
    """A success ends the back-off; ``/status`` still tells what went wrong last."""
    resolved = resolution(failure)
    if resolved is not None:
        db.execute(
            "UPDATE categories SET failure = ? WHERE slug = ?",
            (failure_to_json(resolved), category),
        )


def _require_fts5(db: sqlite3.Connection, where: str) -> None:
    """``?q=`` needs FTS5 and its trigram tokenizer (SQLite 3.34 or later, built with
    FTS5, as Python's own builds are): without them the store cannot open."""
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5 (x, tokenize = 'trigram')")
        db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError as exc:
        raise ConfigError(
            f"{where}: this SQLite ({sqlite3.sqlite_version}) has no FTS5 with the trigram "
            f"tokenizer ({_reason(exc)}); feedbridge needs SQLite 3.34 or later built with FTS5"
        ) from exc


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script``, a trigger's body kept whole."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _search(
    db: sqlite3.Connection, category: str, words: Sequence[str], wanted: int
) -> list[tuple[str]]:
    """The newest ``wanted`` members holding every one of ``words`` (as substrings of
    their search text), as cheaply as their frequency allows.

    The newest :data:`SEARCH_FIRST` members are checked first: a common word is found
    among them at once. With too few matches there, the history is walked newest first
    while matches are frequent enough to end the walk early; otherwise (a rare word) the
    trigram index gives the candidates, costing what its matches do. Each candidate is
    checked for every word: the index finds no word shorter than a trigram.
    """
    condition = "".join(" AND instr(s.search, ?) > 0" for _ in words)
    # The publication time of the SEARCH_FIRST-th newest member, if there are so many.
    cutoff = db.execute(
        "SELECT published FROM memberships WHERE category = ?"
        " ORDER BY published DESC LIMIT 1 OFFSET ?",
        (category, SEARCH_FIRST - 1),
    ).fetchone()
    if cutoff is not None:
        rows = db.execute(
            "SELECT s.data FROM memberships m JOIN stories s ON s.key = m.story"
            f" WHERE m.category = ? AND m.published >= ?{condition}{_NEWEST_FIRST}",
            (category, cutoff[0], *words, wanted),
        ).fetchall()
        indexed = " ".join(_phrase(word) for word in words if len(word) >= 3)
        if len(rows) >= wanted:
            return rows
        if indexed and len(rows) < SEARCH_RARE:
            return db.execute(
                "SELECT s.data FROM stories_search f CROSS JOIN memberships m"
                " CROSS JOIN stories s WHERE f.stories_search MATCH ?"
                " AND m.category = ? AND m.story = f.key AND s.key = m.story"
                f"{condition}{_NEWEST_FIRST}",
                (indexed, category, *words, wanted),
            ).fetchall()
    return db.execute(
        "SELECT s.data FROM memberships m JOIN stories s ON s.key = m.story"
        f" WHERE m.category = ?{condition}{_NEWEST_FIRST}",
        (category, *words, wanted),
    ).fetchall()


def _items(rows: list[tuple[str]]) -> list[Item]:
    return [item_from_dict(json.loads(data)) for (data,) in rows]


def _phrase(word: str) -> str:
    """``word`` as an FTS5 phrase: with trigrams, found wherever it occurs."""
    return '"' + word.replace('"', '""') + '"'


def _reason(exc: sqlite3.Error) -> str:
    """What went wrong, in SQLite's words (``database or disk is full``, …)."""
    return str(exc) or type(exc).__name__


def _state_of(row: tuple[Any, ...] | None) -> CategoryState:
    if row is None:
        return CategoryState()
    return CategoryState(
        refreshed_at=row[0],
        version=str(row[1]),
        stories=row[7],
        etag=row[2],
        last_modified=row[3],
        source_path=row[4],
        failure=failure_from_json(row[5]),
        gap=record_from_json(Gap, row[6]),
        cadence=record_from_json(Cadence, row[8]),
    )
