"""The archive walk: stories a listing never showed, read from the site's archive.

A source's listing shows its ~11 newest stories. When a refresh of a category shares no
story with what the category kept, while it kept some, stories may have been published
and pushed out of the listing between two refreshes: that is a **gap** (see
docs/operating.md). Its span is every story newer than the newest one the category kept
before it (``OpenGap.after``) and older than what the refresh listed.

The all-sources archive (``/newstream/``, then ``/newstream/page/<n>/``, newest first,
``upstream/SITE.md``) lists every story without its source. A **walk** reads it from
page 1 back past the oldest gap's ``after``; each story of that span the store lacks is
read from its own article page (its full text, and the ``Source: <label> |`` that says
its category) and filed in its category and in ``all`` through the store's contract.
One walk repairs every gap it passes. ``feedbridge backfill`` is the same walk for a new
deployment, bounded by pages, a day, or what is kept.

Bounds: one walk at a time among every process sharing the store (the ``archive``
lease); a repair reads at most ``pages`` pages; every request goes through
:class:`~feedbridge.upstream.Upstream` (its pace, the site's Retry-After, the deadline).
What a walk did is noted in the store after each page, so one that is interrupted (the
site fails, the process is killed) resumes where it stopped and loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime

from feedbridge import observe
from feedbridge.article import parse_article
from feedbridge.categories import Registry
from feedbridge.errors import Blocked, HTTPStatusError, LayoutChanged, UpstreamError
from feedbridge.fulltext import with_article
from feedbridge.model import PYONGYANG, ArticleKey, Item
from feedbridge.politeness import Backoff
from feedbridge.scrape import ArchivePage, archive_path, label_key, parse_archive
from feedbridge.store import Lease, Retention, Store
from feedbridge.text import logfmt
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)

GAPS = "gap"  # notes of this kind: the open gaps, by category
WALKS = "walk"  # and where each walk stopped: "repair", "backfill"
LEASE = "archive"
LEASE_TTL = 30.0  # seconds a dead walker holds up the others
ARCHIVE = "archive"  # what the site's requests of a walk are counted under

# Why a gap is still open.
REPAIRING = "repairing"  # found, or its repair resumes at the next chance
PAGE_LIMIT = "page-limit"  # the walk reached its last page before the gap's start
MISSING = "archive-missing"  # an archive page answered 404 (the archive is elsewhere)
WALL = "wall"  # a sign-up wall or a challenge instead of an archive page
EMPTY = "empty"  # an archive page that lists no story (its layout changed)
SITE_FAILED = "site-failed"  # the site failed meanwhile (timeout, 5xx, 429): resumed
LEASE_LOST = "lease-lost"  # another process took the walk over
BUSY = "busy"  # another process walks the archive: this one did not start


@dataclass(frozen=True, slots=True)
class OpenGap:
    """A gap of one category that no walk has closed yet."""

    category: str
    since: float  # when a refresh first found it
    after: ArticleKey  # the newest story the category kept before it
    found: int = 1  # refreshes that found it
    why: str = REPAIRING

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "after": str(self.after)}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> OpenGap:
        data = json.loads(raw)
        ts, ident = data["after"].split("-", 1)
        return cls(data["category"], data["since"], ArticleKey(int(ts), ident), data["found"],
                   data["why"])  # fmt: skip


@dataclass(frozen=True, slots=True)
class Walk:
    """Where a walk stands: kept in the store after each page it read to the end."""

    name: str  # "repair" or "backfill"
    started: float  # when its page 1 was read: gaps found later are not its to close
    page: int = 0  # the last page read to its end
    stop: ArticleKey | None = None  # read back past this story (a repair)
    since: date | None = None  # read back to this day (a backfill)
    pages: int | None = None  # read this page at the most
    reached: ArticleKey | None = None  # the oldest story read; (0, "") past the last page
    failures: int = 0  # in a row
    retry_at: float = 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["stop"] = str(self.stop) if self.stop else None
        data["reached"] = str(self.reached) if self.reached else None
        data["since"] = self.since.isoformat() if self.since else None
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> Walk:
        data = json.loads(raw)
        for name in ("stop", "reached"):
            if data[name]:
                ts, ident = data[name].split("-", 1)
                data[name] = ArticleKey(int(ts), ident)
        data["since"] = date.fromisoformat(data["since"]) if data["since"] else None
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Step:
    """One archive page read by a walk: for a progress bar."""

    page: int
    pages: int | None  # the last page it will read, when known
    stories: int  # stories new to the store, so far


@dataclass(slots=True)
class Walked:
    """What a walk did; ``why`` says why it stopped short (None: it got where it went)."""

    pages: int = 0  # pages read
    stories: int = 0  # stories new to the store
    recovered: dict[str, int] = field(default_factory=dict)  # new stories by category
    closed: list[str] = field(default_factory=list)  # categories whose gap it closed
    why: str | None = None
    error: UpstreamError | None = None

    @property
    def complete(self) -> bool:
        return self.why is None


class Archive:
    """Walks the site's archive into the store: repairs of gaps, and backfills."""

    def __init__(
        self,
        registry: Registry,
        *,
        upstream: Upstream,
        store: Store,
        retention: Retention,
        pages: int = 10,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
    ) -> None:
        """``pages``: the deepest archive page a repair reads."""
        self.registry = registry
        self.upstream = upstream
        self.store = store
        self.retention = retention
        self.pages = pages
        self.clock = clock
        self.backoff = backoff or Backoff()
        self._by_label = {label_key(c.label): c.slug for c in registry.values() if c.label}
        self._all = next((c.slug for c in registry.values() if c.label is None), None)

    # --- gaps ---------------------------------------------------------------------------

    def gaps(self) -> list[OpenGap]:
        """Every open gap, oldest first."""
        found = [OpenGap.from_json(raw) for raw in self.store.notes(GAPS).values()]
        return sorted(found, key=lambda gap: (gap.since, gap.category))

    def open_gap(self, category: str, after: ArticleKey) -> None:
        """A refresh of ``category`` found a gap after the story ``after``. An open gap of
        the category grows to cover both: it is closed when a walk passes its start."""
        while True:  # a walk may close or mark the gap meanwhile: read it again then
            raw = self.store.notes(GAPS).get(category)
            if raw is None:
                # Only a refresh of the category makes its gap, under the category's lease.
                new = OpenGap(category, self.clock(), after)
                self.store.put_note(GAPS, category, new.to_json())
                break
            old = OpenGap.from_json(raw)
            grown = replace(old, after=min(old.after, after), found=old.found + 1, why=REPAIRING)
            if self.store.swap_note(GAPS, category, raw, grown.to_json()):
                break
        observe.gaps_open(len(self.store.notes(GAPS)))

    def due(self) -> bool:
        """Whether a repair has work now: a gap it may close, and no back-off."""
        gaps = self.gaps()
        observe.gaps_open(len(gaps))
        if not any(gap.why != PAGE_LIMIT for gap in gaps):
            return False
        raw = self.store.notes(WALKS).get("repair")
        return raw is None or Walk.from_json(raw).retry_at <= self.clock()

    def probe(self) -> ArchivePage:
        """Archive page 1, read now: a canary of the archive's address and layout."""
        with observe.fetching_for(ARCHIVE):
            page = self.upstream.fetch(archive_path(1))
        return parse_archive(
            page.body, page=1, base_url=self.upstream.base_url, encoding=page.encoding
        )

    # --- walks --------------------------------------------------------------------------

    def repair(self) -> Walked | None:
        """Walk the archive back past every open gap it may close, resuming a repair that
        was interrupted; None when there is nothing to do (or not yet), or another
        process walks the archive. The site's failures are recorded, not raised."""
        lease = Lease(self.store, LEASE, LEASE_TTL)
        if not lease.acquire():
            return None
        try:
            if not self.due():
                return None
            gaps = [gap for gap in self.gaps() if gap.why != PAGE_LIMIT]
            raw = self.store.notes(WALKS).get("repair")
            stop = min(gap.after for gap in gaps)
            walk = Walk("repair", started=self.clock(), stop=stop, pages=self.pages)
            if raw is not None:
                resumed = Walk.from_json(raw)
                # Resumed only for a gap it can close: one found before its page 1.
                if any(gap.since <= resumed.started for gap in gaps):
                    walk = replace(resumed, stop=stop, pages=self.pages)
            walked, walk = self._walk(walk, lease, None)
            self._settle(walk, gaps, walked)
            return walked
        finally:
            lease.release()

    def backfill(
        self,
        *,
        pages: int | None = None,
        since: date | None = None,
        restart: bool = False,
        progress: Callable[[Step], None] | None = None,
    ) -> Walked:
        """Walk the archive from page 1 (or where the last backfill stopped, unless
        ``restart``) to page ``pages``, to the day ``since``, to the end of what is kept
        or of the archive. ``why`` is :data:`BUSY` when another process walks it."""
        lease = Lease(self.store, LEASE, LEASE_TTL)
        if not lease.acquire():
            return Walked(why=BUSY)
        try:
            raw = None if restart else self.store.notes(WALKS).get("backfill")
            walk = Walk("backfill", started=self.clock(), pages=pages, since=since)
            if raw is not None:
                resumed = Walk.from_json(raw)
                walk = replace(
                    walk, started=resumed.started, page=resumed.page, reached=resumed.reached
                )
            gaps = self.gaps()
            walked, walk = self._walk(walk, lease, progress)
            self._settle(walk, gaps, walked)
            return walked
        finally:
            lease.release()

    def _walk(
        self, walk: Walk, lease: Lease, progress: Callable[[Step], None] | None
    ) -> tuple[Walked, Walk]:
        """Read pages until the walk gets where it goes or fails; its progress is noted
        in the store after each page. Returns what it did, and where it stands."""
        walked = Walked()
        page = walk.page + 1
        horizon = datetime.fromtimestamp(self.clock() - self.retention.days * 86_400, UTC)
        while True:
            if walk.pages is not None and page > walk.pages:
                walked.why = PAGE_LIMIT if walk.stop is not None else None
                return walked, walk
            if not lease.held:
                walked.why = LEASE_LOST
                return walked, walk
            try:
                with observe.fetching_for(ARCHIVE):
                    fetched = self.upstream.fetch(archive_path(page))
                listed = parse_archive(
                    fetched.body, page=page, base_url=self.upstream.base_url,
                    encoding=fetched.encoding,
                )  # fmt: skip
                wanted = [item for item in listed.items if _within(item, horizon, walk.since)]
                self._file(wanted, walked)
            except UpstreamError as exc:
                walked.why, walked.error = _why(exc), exc
                return walked, self._failed(walk, exc)
            oldest = min(item.key for item in listed.items)
            if not listed.has_next:
                oldest = ArticleKey(0, "")  # the archive's end: past every story
            reached = min(oldest, walk.reached) if walk.reached else oldest
            walk = replace(walk, page=page, reached=reached, failures=0, retry_at=0.0)
            self.store.put_note(WALKS, walk.name, walk.to_json())
            walked.pages += 1
            if progress is not None:
                progress(Step(page, walk.pages, walked.stories))
            log.info(
                logfmt(event="archive_page", walk=walk.name, page=page,
                       stories=len(listed.items), filed=len(wanted))
            )  # fmt: skip
            if (
                not listed.has_next
                or (walk.stop is not None and oldest <= walk.stop)
                # The page ends past the day asked for, or what is kept.
                or not _within(listed.items[-1], horizon, walk.since)
            ):
                return walked, walk
            page += 1

    def _file(self, items: Sequence[Item], walked: Walked) -> None:
        """File the stories of one archive page: those the store lacks, or knows without
        their source, read from their article pages first."""
        known = self.store.stored([item.key for item in items])
        now = self.clock()
        filed: dict[str, list[Item]] = {}
        for item in items:
            story = known.get(item.key)
            if story is None or story.source is None:
                walked.stories += story is None
                story = self._read(item)
            slug = self._by_label.get(label_key(story.source)) if story.source else None
            for where in (slug, self._all):
                if where is not None:
                    filed.setdefault(where, []).append(story)
        for slug, stories in filed.items():
            added = self.store.add(slug, stories, now=now)
            if added:
                walked.recovered[slug] = walked.recovered.get(slug, 0) + len(added)
                observe.recovered(slug, len(added))
                self.store.prune(slug, self.retention, now=now)
        for story in {s.key: s for stories in filed.values() for s in stories}.values():
            old = known.get(story.key)
            if old is not None and old.content_html is None and story.content_html is not None:
                self.store.save_full_text(replace(old, content_html=story.content_html,
                                                  original_url=story.original_url))  # fmt: skip

    def _read(self, item: Item) -> Item:
        """``item`` with its full text and source from its article page; as it is when
        the page is gone or holds no article (kept in ``all`` only, full text later)."""
        try:
            with observe.fetching_for(ARCHIVE):
                page = self.upstream.fetch(item.path)
            article = parse_article(page.body, page_url=page.url, encoding=page.encoding)
        except (LayoutChanged, HTTPStatusError) as exc:
            if isinstance(exc, HTTPStatusError) and exc.upstream_status not in (404, 410):
                raise
            log.warning(logfmt(event="archive_story_unread", story=item.key, error=str(exc)))
            return item
        slug = self._by_label.get(label_key(article.source)) if article.source else None
        source = self.registry[slug].label if slug else article.source
        return replace(with_article(item, article), source=source)

    def _failed(self, walk: Walk, error: UpstreamError) -> Walk:
        """Keep where the walk stopped, and when to try again."""
        failures = walk.failures + 1
        delay = self.backoff.delay(failures, error.retry_after)
        walk = replace(walk, failures=failures, retry_at=self.clock() + delay)
        self.store.put_note(WALKS, walk.name, walk.to_json())
        log.warning(
            logfmt(event="archive_failed", walk=walk.name, page=walk.page + 1, kind=error.kind,
                   retry_in_s=round(delay), error=str(error))
        )  # fmt: skip
        return walk

    def _settle(self, walk: Walk, gaps: list[OpenGap], walked: Walked) -> None:
        """After a walk: the gaps it read back past are closed (those found before its
        page 1 was read: a later one may span stories that page did not show yet); a
        repair's others say why they are open. A walk that got where it went, or to its
        page limit, is done with: the next starts from page 1."""
        for gap in gaps:
            if walk.reached is not None and walk.reached <= gap.after and gap.since <= walk.started:
                if self.store.swap_note(GAPS, gap.category, gap.to_json(), None):
                    walked.closed.append(gap.category)
            elif walk.name == "repair" and walked.why is not None and walked.why != LEASE_LOST:
                why = replace(gap, why=walked.why)
                self.store.swap_note(GAPS, gap.category, gap.to_json(), why.to_json())
        if walked.why in (None, PAGE_LIMIT):
            raw = self.store.notes(WALKS).get(walk.name)
            if raw is not None:
                self.store.swap_note(WALKS, walk.name, raw, None)
        observe.gaps_open(len(self.store.notes(GAPS)))
        log.info(
            logfmt(event="archive_walked", walk=walk.name, pages=walked.pages,
                   recovered=sum(walked.recovered.values()), closed=",".join(walked.closed),
                   stopped=walked.why or "done")
        )  # fmt: skip


def _within(item: Item, horizon: datetime, since: date | None) -> bool:
    """Whether a walk keeps ``item``: published within what is kept, and on or after
    ``since`` (a day in Pyongyang, as the site dates its stories)."""
    published = item.published
    return published >= horizon and (
        since is None or published.astimezone(PYONGYANG).date() >= since
    )


def _why(error: UpstreamError) -> str:
    if isinstance(error, HTTPStatusError) and error.upstream_status in (404, 410):
        return MISSING
    if isinstance(error, Blocked):
        return WALL
    if isinstance(error, LayoutChanged):
        return EMPTY
    return SITE_FAILED
