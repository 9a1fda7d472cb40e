"""Feeds put together from entries kept in memory.

A story is in many documents: its category's feed and ``all`` in three formats, a new
version of each whenever any story of the category changes, and every ``?limit=`` and
``?q=`` selection that finds it. feedgen renders a story's entry in about 60 µs, so a
selection of 400 stories took 25 ms of a worker's CPU before it was sent. Here an entry
is rendered once per story, format and site address (:func:`feedbridge.feeds.entries`)
and kept, within :data:`ENTRY_BYTES`; a document is its shell around the entries, byte
for byte what rendering it whole gives (a property test says so).

The ETag is a digest of the shell and of the entries' own digests, made when each entry
was: it changes with the content as a digest of the body does, without reading the
body (1.5 MB for 400 stories) once more.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cachetools import LRUCache

from feedbridge import feeds
from feedbridge.feeds import FeedInfo, Format, Shell
from feedbridge.model import Item

ENTRY_BYTES = 32 * 1024 * 1024  # rendered entries kept per process (with their stories)
SHELLS = 256  # shells kept: a few per category and format, one per version and selection


@dataclass(frozen=True, slots=True)
class Document:
    body: bytes
    etag: str  # weak: the same content gives the same tag in every process
    updated: datetime  # when its newest story changed (:func:`feedbridge.feeds.updated`)


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    digest: bytes


class Renderer:
    """Renders feeds like :func:`feedbridge.feeds.render`, from entries kept in memory."""

    def __init__(self, entry_bytes: int = ENTRY_BYTES) -> None:
        self._lock = threading.Lock()
        # Keyed by the story itself: a story changed is another key, never a stale entry.
        # Its size counts the story the key holds as well as the entry.
        self._entries: LRUCache[tuple[Format, str, Item], _Entry] = LRUCache(
            entry_bytes, getsizeof=lambda entry: 2 * len(entry.body)
        )
        self._shells: LRUCache[tuple[Format, FeedInfo, datetime], Shell] = LRUCache(SHELLS)

    def render(
        self, fmt: Format, info: FeedInfo, items: Sequence[Item], *, base_url: str
    ) -> Document:
        updated = feeds.updated(items)
        shell = self._shell(fmt, info, updated)
        entries = self._entries_of(fmt, items, base_url)
        body = shell.around([entry.body for entry in entries])
        digest = hashlib.sha256(shell.head)
        for entry in entries:
            digest.update(entry.digest)
        digest.update(shell.tail)
        return Document(body, 'W/"' + digest.hexdigest()[:32] + '"', updated)

    def entry_count(self) -> int:
        """How many rendered entries are kept now."""
        with self._lock:
            return len(self._entries)

    def _shell(self, fmt: Format, info: FeedInfo, updated: datetime) -> Shell:
        key = (fmt, info, updated)
        with self._lock:
            shell = self._shells.get(key)
        if shell is None:
            shell = feeds.shell(fmt, info, updated)
            with self._lock:
                self._shells[key] = shell
        return shell

    def _entries_of(self, fmt: Format, items: Sequence[Item], base_url: str) -> list[_Entry]:
        """``items``' entries: those kept, and the others rendered in one go and kept."""
        with self._lock:
            kept = [self._entries.get((fmt, base_url, item)) for item in items]
        missing = [item for item, entry in zip(items, kept, strict=True) if entry is None]
        if not missing:
            return [entry for entry in kept if entry is not None]
        rendered = iter(
            _Entry(body, hashlib.sha256(body).digest())
            for body in feeds.entries(fmt, missing, base_url=base_url)
        )
        entries = [entry if entry is not None else next(rendered) for entry in kept]
        with self._lock:
            for item, entry in zip(items, entries, strict=True):
                with contextlib.suppress(ValueError):  # an entry larger than the bound
                    self._entries[(fmt, base_url, item)] = entry
        return entries
