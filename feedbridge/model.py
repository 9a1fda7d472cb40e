"""The domain: what a story is, independent of where it was read or how it is shown."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

PYONGYANG = timezone(timedelta(hours=9), "KST")
# Timestamps outside this range cannot be KCNA Watch ingestion times.
# No KCNA Watch story is older; a feed with no story is dated here too (never "now").
EARLIEST = datetime(2010, 1, 1, tzinfo=UTC)
_PLAUSIBLE = (EARLIEST, datetime(2100, 1, 1, tzinfo=UTC))


@dataclass(frozen=True, slots=True, order=True)
class ArticleKey:
    """``<unix_ts>-<id>`` from an article URL: the one thing that identifies a story."""

    ts: int
    id: str

    def __str__(self) -> str:
        return f"{self.ts}-{self.id}"

    @property
    def tag_uri(self) -> str:
        """A permanent id, the same whatever host, scheme or slug the link had."""
        return f"tag:kcnawatch.org,2014:newstream/{self}"

    @property
    def timestamp(self) -> datetime | None:
        try:
            moment = datetime.fromtimestamp(self.ts, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return moment if _PLAUSIBLE[0] <= moment < _PLAUSIBLE[1] else None


@dataclass(frozen=True, slots=True)
class Item:
    """One story in a listing, plus its full text once it has been read."""

    key: ArticleKey
    title: str
    path: str  # canonical: /newstream/<ts>-<id>/<slug>/, the slug percent-encoded
    excerpt: str = ""
    listed: date | None = None
    thumbnail: str | None = None
    source: str | None = None
    content_html: str | None = None
    original_url: str | None = None
    modified: datetime | None = None  # when the store saw its content change, if it did

    @property
    def updated(self) -> datetime:
        """When the story last changed: its publication, or a later change of content."""
        return max(self.modified, self.published) if self.modified else self.published

    @property
    def published(self) -> datetime:
        """The URL timestamp; else the listed day at 00:00 in Pyongyang; never "now"."""
        stamp = self.key.timestamp
        if stamp is not None:
            return stamp
        if self.listed is not None:
            day = datetime.combine(self.listed, time(0), PYONGYANG)
            # A page may say "March 22, 0999": RSS dates cannot carry a 3-digit year.
            if _PLAUSIBLE[0] <= day < _PLAUSIBLE[1]:
                return day
        return _PLAUSIBLE[0]


def newest_first(items: list[Item]) -> list[Item]:
    return sorted(items, key=lambda item: (item.published, item.key), reverse=True)


def merge_duplicates(items: Iterable[Item]) -> list[Item]:
    """One item per story, in first-seen order.

    Links to the same ``<ts>-<id>`` are one story. The site sometimes ingests a story
    twice under two ids a day apart: same source, title and listed date are one story
    too, and the earliest ingestion (the smaller timestamp) is kept, so its id never
    changes when the later copy appears or disappears.
    """
    kept: dict[tuple[object, ...], Item] = {}
    for item in items:
        identity: tuple[object, ...] = (item.source, item.title.casefold(), item.listed)
        if item.listed is None:
            identity = (item.key,)
        previous = kept.get(identity)
        if previous is None or item.key < previous.key:
            kept[identity] = item
    seen: set[ArticleKey] = set()
    unique: list[Item] = []
    for item in kept.values():
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return unique
