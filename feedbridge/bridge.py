"""The service in the middle: category → cached entry → rendered feed.

It wires the pure parts (scrape, feeds) to the I/O (upstream) through the cache, and is
what both the web layer and the command line call.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from feedbridge import observe
from feedbridge.cache import Entry, FeedCache, Lookup
from feedbridge.categories import Category, Registry
from feedbridge.errors import HTTPStatusError, LayoutChanged
from feedbridge.feeds import FeedInfo, Format, render
from feedbridge.fulltext import FullText
from feedbridge.model import Item, newest_first
from feedbridge.scrape import parse_home, parse_listing
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A feed document ready to send, compressed once, with its validators."""

    body: bytes
    gzipped: bytes
    etag: str
    last_modified: datetime
    media_type: str

    @classmethod
    def of(cls, body: bytes, media_type: str, last_modified: datetime) -> Rendered:
        # The ETag is a digest of the body: it changes with the content, never with time.
        etag = 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(body, gzip.compress(body, 6, mtime=0), etag, last_modified, media_type)

    def to_bytes(self) -> bytes:
        """One line of JSON saying what follows, then the body and its gzipped form."""
        head = {
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat(),
            "media_type": self.media_type,
            "body": len(self.body),
        }
        return json.dumps(head).encode() + b"\n" + self.body + self.gzipped

    @classmethod
    def from_bytes(cls, data: bytes) -> Rendered:
        """The inverse of :meth:`to_bytes`; ValueError when ``data`` is not one."""
        line, _, rest = data.partition(b"\n")
        try:
            head = json.loads(line)
            size = head["body"]
            return cls(
                rest[:size],
                rest[size:],
                head["etag"],
                datetime.fromisoformat(head["last_modified"]),
                head["media_type"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a saved rendering: {exc!r}") from None


class Bridge:
    def __init__(
        self,
        registry: Registry,
        *,
        upstream: Upstream,
        cache: FeedCache,
        fulltext: FullText,
        fulltext_by_default: bool = True,
    ) -> None:
        self.registry = registry
        self.upstream = upstream
        self.cache = cache
        self.fulltext = fulltext
        self.fulltext_by_default = fulltext_by_default

    def lookup(self, category: Category) -> Lookup:
        """The category's items, from the cache or the site."""

        def load(previous: Entry | None) -> Entry:
            entry = self.load(category, previous)
            observe.loaded(category.slug, entry)
            return entry

        found = self.cache.get(category.slug, load)
        observe.looked_up(category.slug, found)
        return found

    def load(
        self, category: Category, previous: Entry | None = None, *, full_text: bool = True
    ) -> Entry:
        """Fetch and scrape the category's listing now; ``previous`` enables a 304.

        Items then get their full text (when the category wants it and ``full_text``)
        within the budget; those that do not keep their excerpt, and the next load tries
        them again.
        """
        last_error: HTTPStatusError | None = None
        for path in category.paths:
            conditional = previous is not None and previous.source_path == path
            try:
                page = self.upstream.fetch(
                    path,
                    etag=previous.etag if conditional and previous else None,
                    last_modified=previous.last_modified if conditional and previous else None,
                    category=category.slug,
                )
            except HTTPStatusError as exc:
                if exc.upstream_status not in (404, 410):
                    raise
                log.warning("%s: anchor %s is gone (%s), trying the next", category.slug, path, exc)
                last_error = exc
                continue
            if page.not_modified and previous is not None:
                return self._completed(category, previous) if full_text else previous
            base = self.upstream.base_url
            try:
                if category.label is None:
                    items = parse_home(page.body, base_url=base, encoding=page.encoding)
                else:
                    items = parse_listing(
                        page.body,
                        label=category.label,
                        base_url=base,
                        encoding=page.encoding,
                        page_path=path,
                    )
            except LayoutChanged:
                observe.parse_failed(category.slug)
                raise
            items = newest_first(items)
            if full_text:
                items = self._with_full_text(category, items, previous)
            return Entry(
                items=tuple(items),
                version=content_version(items),
                etag=page.etag,
                last_modified=page.last_modified,
                source_path=path,
            )
        assert last_error is not None
        raise HTTPStatusError(
            f"every anchor page of {category.slug} is gone ({last_error})",
            upstream_status=last_error.upstream_status,
        )

    def _wants_full_text(self, category: Category) -> bool:
        return self.fulltext_by_default if category.fulltext is None else category.fulltext

    def _with_full_text(
        self, category: Category, items: Sequence[Item], previous: Entry | None = None
    ) -> list[Item]:
        """``items`` with their full text: from ``previous`` where it had it already (an
        entry is shared between processes through Redis, the article cache is not), else
        from the article pages, within the budget."""
        if not self._wants_full_text(category):
            return list(items)
        known = {i.key: i for i in previous.items if i.content_html} if previous else {}
        carried = [
            dataclasses.replace(
                item, content_html=known[item.key].content_html,
                original_url=known[item.key].original_url,
            )
            if item.key in known and item.content_html is None
            else item
            for item in items
        ]  # fmt: skip
        return self.fulltext.fill(carried, category=category.slug)

    def _completed(self, category: Category, previous: Entry) -> Entry:
        """``previous`` with the full text it still lacked, as far as the budget goes."""
        items = self._with_full_text(category, previous.items)
        if tuple(items) == previous.items:
            return previous
        return dataclasses.replace(previous, items=tuple(items), version=content_version(items))

    def feed_info(self, category: Category, self_url: str) -> FeedInfo:
        base = self.upstream.base_url
        if category.label is None:
            description = "The latest articles from every source on KCNA Watch."
        else:
            description = f"The latest articles from {category.label}, as KCNA Watch lists them."
        return FeedInfo(
            id=f"tag:kcnawatch.org,2014:feedbridge/{category.slug}",
            title=category.feed_title,
            description=description,
            self_url=self_url,
            home_url=base + category.paths[0],
            language=category.language,
        )

    def rendered(
        self,
        category: Category,
        entry: Entry,
        fmt: Format,
        self_url: str,
        items: Sequence[Item] | None = None,
    ) -> Rendered:
        """The feed of ``entry`` (or of a selection of its ``items``).

        The full feed is rendered once per content version and self URL, then served
        from memory; a selection (``?limit=``, ``?q=``) is rendered for its request.
        """

        def make(selection: Sequence[Item]) -> Rendered:
            info = self.feed_info(category, self_url)
            body = render(fmt, info, selection, base_url=self.upstream.base_url)
            # An entry is never empty (a page with no items is a failure); a selection may be.
            newest = (selection or entry.items)[0].published
            return Rendered.of(body, fmt.media_type, newest)

        if items is None:
            key = ("feed", category.slug, entry.version, fmt, self_url)
            codec = (Rendered.to_bytes, Rendered.from_bytes)
            return self.cache.memo(key, lambda: make(entry.items), codec)
        return make(items)


def content_version(items: Sequence[Item]) -> str:
    return hashlib.sha256(repr(tuple(items)).encode("utf-8", "surrogatepass")).hexdigest()[:24]
