"""What this process keeps of the feeds it serves, in memory.

* the full feed of each category and format, rendered once per version of the category
  in the store (:class:`Kept`), and what a request with its own root gets of it
  (:class:`FeedRenderer`'s answers prepared for a root);
* ``?limit=``/``?q=`` selections, rendered a few at a time off the worker's loop;
* the last good copy: when the store has nothing (a Redis restarted or flushed) or
  fails, readers get what this process rendered last, marked stale.

Feeds are rendered with :data:`ROOT_MARKER` in their self links, put in place when
served, so that what is rendered and kept never depends on a request's Host header.
"""

from __future__ import annotations

import gzip
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Generic, TypeVar

from cachetools import LRUCache

from feedbridge.categories import Category
from feedbridge.feeds import FeedInfo, Format
from feedbridge.model import Item
from feedbridge.prepared import Freshness, Prepared, Served
from feedbridge.renderer import Renderer
from feedbridge.store import CategoryState, Listing, Store, select
from feedbridge.window import Windows

T = TypeVar("T")

ROOT_MARKER = "https://feedbridge.invalid/"
SELECTION_BYTES = 8 * 1024 * 1024  # renderings of ?limit= / ?q= kept in memory
SERVED_BYTES = 16 * 1024 * 1024  # bodies with a request's root put in, kept in memory
STORE_RETRY_AFTER = 10.0  # seconds: when to ask again for what the store must answer
# ?limit= / ?q= renderings of one process at once, how long one waits for its turn, and
# when a reader turned away is told to come back. Each reads the store (a ?q= searches
# it) and copies up to 1.5 MB: a few ms of a worker's CPU, past what a cached feed costs.
SELECTIONS = 2
SELECTION_WAIT = 2.0
SELECTION_RETRY_AFTER = 5.0
OFF_THE_LOOP = 256 * 1024  # bytes of a body compressed in a real thread under gevent


@dataclass(frozen=True, slots=True)
class Rendered:
    """A feed document with :data:`ROOT_MARKER` for the service's own URL, and its validators."""

    body: bytes
    etag: str
    last_modified: datetime
    media_type: str


class Unavailable(Exception):
    """No right answer now: the web layer says ``503`` with ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Selection:
    """What ``?limit=`` and ``?q=`` asked for, and their own query string (for self links)."""

    limit: int | None = None
    words: tuple[str, ...] = ()
    query: str = ""

    def __bool__(self) -> bool:
        return self.limit is not None or bool(self.words)

    def path(self, category: Category, fmt: Format) -> str:
        path = f"feeds/{category.slug}.{fmt.value}"
        return f"{path}?{self.query}" if self else path


@dataclass(frozen=True, slots=True)
class Kept(Generic[T]):
    """Something this process keeps of a category (a rendering, the stories it was
    rendered from), and where it came from."""

    value: T
    refreshed_at: float  # when the category was refreshed (or its listing read here)
    # The store's version of the category it was made from; None when it was made from
    # the site's listing, read by this process while the store had nothing or failed.
    version: str | None

    @property
    def from_site(self) -> bool:
        return self.version is None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """How much the feed cache holds now: what its bounds are checked against."""

    feeds: int  # full feeds rendered, by category and format
    selections: int  # ?limit= / ?q= renderings
    selection_bytes: int
    served: int  # answers prepared for a root
    served_bytes: int
    entries: int  # stories' entries rendered, by format


def feed_info(category: Category, base_url: str, hub: str | None, self_url: str) -> FeedInfo:
    """The feed-level fields of a category's feed on the site at ``base_url``."""
    if category.label is None:
        description = "The latest articles from every source on KCNA Watch."
    else:
        description = f"The latest articles from {category.label}, as KCNA Watch lists them."
    return FeedInfo(
        id=f"tag:kcnawatch.org,2014:feedbridge/{category.slug}",
        title=category.feed_title,
        description=description,
        self_url=self_url,
        home_url=base_url + category.paths[0],
        language=category.language,
        hub=hub,
    )


def off_the_loop(work: Callable[[], T]) -> T:
    """``work()``, in a real thread when gevent runs this process (its workers): a long
    render on the loop would hold every other connection of the worker for as long.
    The loop then takes the interpreter back at each switch interval (5 ms)."""
    if "gevent.monkey" in sys.modules:
        from gevent import get_hub
        from gevent.monkey import is_module_patched

        if is_module_patched("threading"):
            result: T = get_hub().threadpool.apply(work)
            return result
    return work()


def _gzip(body: bytes) -> bytes:
    """``body`` gzipped; a large one in a real thread (under gevent, the worker's other
    requests go on meanwhile)."""
    compress = partial(gzip.compress, body, 6, mtime=0)
    return off_the_loop(compress) if len(body) > OFF_THE_LOOP else compress()


class FeedRenderer:
    """Renders a category's stories as its feed, and prepares a rendering for a
    request's root (kept by rendering and root, within :data:`SERVED_BYTES`)."""

    def __init__(self, base_url: str, *, hub: str | None = None) -> None:
        self.base_url = base_url
        self.hub = hub
        self._lock = threading.Lock()
        self.documents = Renderer()  # feeds put together from entries kept per story
        self._served: LRUCache[tuple[str, str], Prepared] = LRUCache(
            SERVED_BYTES, getsizeof=lambda prepared: prepared.size
        )

    def render(self, category: Category, fmt: Format, items: list[Item], path: str) -> Rendered:
        info = feed_info(category, self.base_url, self.hub, ROOT_MARKER + path)
        document = self.documents.render(fmt, info, items, base_url=self.base_url)
        return Rendered(document.body, document.etag, document.updated, fmt.media_type)

    def served_as(
        self, rendered: Rendered, root: str, freshness: Freshness, age: float, fresh_for: float
    ) -> Served:
        key = (rendered.etag, root)
        with self._lock:
            prepared = self._served.get(key)
        if prepared is None:
            body = rendered.body.replace(ROOT_MARKER.encode(), root.encode())
            prepared = Prepared.of(
                body, rendered.etag, rendered.last_modified, rendered.media_type, _gzip
            )
            with self._lock:
                self._served[key] = prepared
        return Served(prepared, freshness, age, fresh_for)

    def prepared(self, rendered: Rendered, root: str) -> Prepared | None:
        """The answer already prepared for ``rendered`` and ``root``, if any."""
        with self._lock:
            return self._served.get((rendered.etag, root))

    def served_sizes(self) -> list[int]:
        with self._lock:
            return [prepared.size for prepared in self._served.values()]


class FeedCache:
    """The feeds of this process: rendered from the store once per version of a
    category, and its last good copies for when the store has nothing or fails."""

    def __init__(
        self,
        store: Store,
        renderer: FeedRenderer,
        *,
        slugs: Iterable[str],
        feed_size: int,
        ttl: float,
        read_listing: Callable[[Category], Listing | None],
    ) -> None:
        """``read_listing``: the category's listing read from the site now, for a last
        good copy of a category this process never served."""
        self.store = store
        self.renderer = renderer
        self.feed_size = feed_size
        self.ttl = ttl
        self.read_listing = read_listing
        self._lock = threading.Lock()
        # The full feeds, by category and format (also the last good copies).
        self._feeds: dict[tuple[str, Format], Kept[Rendered]] = {}
        self._selections: LRUCache[tuple[object, ...], Rendered] = LRUCache(
            SELECTION_BYTES, getsizeof=lambda r: len(r.body)
        )
        # The stories each category's feed was last rendered from (any format): what a
        # feed in another format is rendered from while the store fails.
        self._stories: dict[str, Kept[list[Item]]] = {}
        self._windows = Windows(store)
        # One read of the site at a time per category for last good copies: every
        # request waiting on it gets what the one read.
        self._site_reads: dict[str, threading.Lock] = {slug: threading.Lock() for slug in slugs}
        self._selecting = threading.BoundedSemaphore(SELECTIONS)

    def holds(self, category: Category, fmt: Format) -> bool:
        """Whether this process rendered the category's full feed in ``fmt``."""
        with self._lock:
            return (category.slug, fmt) in self._feeds

    def fresh(
        self, category: Category, fmt: Format, state: CategoryState, root: str
    ) -> Prepared | None:
        """The full feed of the store's version of the category, prepared for ``root``,
        when this process holds it; reads nothing but memory."""
        with self._lock:
            kept = self._feeds.get((category.slug, fmt))
        if kept is None or kept.version != state.version:
            return None
        return self.renderer.prepared(kept.value, root)

    def stats(self) -> CacheStats:
        served = self.renderer.served_sizes()
        with self._lock:
            return CacheStats(
                feeds=len(self._feeds),
                selections=len(self._selections),
                selection_bytes=int(self._selections.currsize),
                served=len(served),
                served_bytes=sum(served),
                entries=self.renderer.documents.entry_count(),
            )

    def full_feed(self, category: Category, fmt: Format, state: CategoryState) -> Rendered:
        key = (category.slug, fmt)
        with self._lock:
            kept = self._feeds.get(key)
        if kept is not None and kept.version == state.version:
            return kept.value
        items = self.store.newest(category.slug, self.feed_size)
        rendered = self.renderer.render(category, fmt, items, f"feeds/{category.slug}.{fmt.value}")
        assert state.refreshed_at is not None  # a category read once at least (it is seen)
        with self._lock:
            self._feeds[key] = Kept(rendered, state.refreshed_at, state.version)
            self._stories[category.slug] = Kept(items, state.refreshed_at, state.version)
        return rendered

    def selection(
        self, category: Category, fmt: Format, state: CategoryState, selection: Selection
    ) -> Rendered:
        """A ``?limit=``/``?q=`` rendering, made by at most :data:`SELECTIONS` requests
        of this process at once, off the worker's loop: a flood of distinct selections
        waits its turn (or is :class:`Unavailable`) while cached feeds are served."""
        key = (category.slug, state.version, fmt, selection.limit, selection.words)
        with self._lock:
            kept = self._selections.get(key)
        if kept is not None:
            return kept
        rendered = self._render_selection(
            category,
            fmt,
            selection,
            lambda: self._windows.newest(
                category.slug, state.version, selection.limit or self.feed_size, selection.words
            ),
        )
        with self._lock:
            self._selections[key] = rendered
        return rendered

    def _render_selection(
        self,
        category: Category,
        fmt: Format,
        selection: Selection,
        select: Callable[[], list[Item]],
    ) -> Rendered:
        """The stories ``select`` gives, rendered in their turn (one of
        :data:`SELECTIONS`, else :class:`Unavailable` after :data:`SELECTION_WAIT`)."""
        if not self._selecting.acquire(timeout=SELECTION_WAIT):
            raise Unavailable(
                "too many selections (?limit=, ?q=) at once; ask again shortly",
                retry_after=SELECTION_RETRY_AFTER,
            )
        try:
            items = select()
            path = selection.path(category, fmt)
            return off_the_loop(lambda: self.renderer.render(category, fmt, items, path))
        finally:
            self._selecting.release()

    def last_good(
        self, category: Category, fmt: Format, root: str, now: float, selection: Selection
    ) -> Served:
        """What this process has, when the store has nothing or fails: the feed it
        rendered last, else one rendered from the stories it last served in another
        format, else (it never served the category) its listing, read at most once a TTL
        by this process, kept here and not in the store.

        A selection is made from those stories as the store would make it, never
        answered with the whole feed: ``?q=`` finds what they hold (``?limit=`` caps
        it); a ``?limit=`` alone past them is :class:`Unavailable` (the store holds more
        than this process knows).
        """
        with self._lock:
            kept = self._feeds.get((category.slug, fmt))
        if kept is not None and not selection:
            age = max(0.0, now - kept.refreshed_at)
            return self.renderer.served_as(kept.value, root, Freshness.STALE, age, 0.0)
        known, freshness = self._known_stories(category, now)
        items = known.value
        if selection:
            if not selection.words and (selection.limit or 0) > len(items):
                raise Unavailable(
                    "the store is unavailable, and this process holds fewer stories than asked for",
                    retry_after=STORE_RETRY_AFTER,
                )
            rendered = self._render_selection(
                category,
                fmt,
                selection,
                lambda: select(items, selection.limit or self.feed_size, selection.words),
            )
        else:
            rendered = self.renderer.render(category, fmt, items, selection.path(category, fmt))
            with self._lock:
                self._feeds[(category.slug, fmt)] = Kept(
                    rendered, known.refreshed_at, known.version
                )
        age = max(0.0, now - known.refreshed_at)
        return self.renderer.served_as(rendered, root, freshness, age, 0.0)

    def _known_stories(self, category: Category, now: float) -> tuple[Kept[list[Item]], Freshness]:
        """The stories this process last served of the category; else (or when those
        were read from the site a TTL ago) its listing, read now: a miss."""
        with self._site_reads[category.slug]:  # one read of the site for every such request
            with self._lock:
                known = self._stories.get(category.slug)
            if known is not None and not (known.from_site and now - known.refreshed_at >= self.ttl):
                return known, Freshness.STALE
            listing = self.read_listing(category)
            assert listing is not None  # asked without validators: never "not modified"
            known = Kept(list(listing.items[: self.feed_size]), now, None)
            with self._lock:
                self._stories[category.slug] = known
            return known, Freshness.MISS
