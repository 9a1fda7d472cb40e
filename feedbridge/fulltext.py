"""Full text: each story's body, read from its own article page, sanitized.

Three parts, I/O at the edge only:

* :func:`parse_article` (pure): an article page's bytes → :class:`Article`, the body
  followed by a link to the outlet's own copy. The body is ``.article-content``; when
  the markup differs, it is found by the page's structure instead: what lies between
  the ``Date: … | Source: …`` line and the "More From <label>" heading.
* :func:`sanitize` (pure): the one nh3 allow-list every scraped HTML goes through
  before it reaches a feed or a page.
* :class:`FullText`: fetches the pages through :class:`~feedbridge.upstream.Upstream`,
  a bounded number at once, each story's once: the store keeps what was read.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import date
from urllib.parse import urljoin, urlsplit

import nh3
from bs4 import BeautifulSoup, Tag
from bs4.element import PageElement

from feedbridge import observe
from feedbridge.errors import LayoutChanged, UpstreamError
from feedbridge.model import Item
from feedbridge.scrape import ARTICLE_DATE, CHROME_TAGS, parse_article_date
from feedbridge.text import squash, xml_safe
from feedbridge.upstream import Upstream

log = logging.getLogger(__name__)

ORIGINAL_LINK_TEXT = "Read original version at source"

# What a feed reader or the front page may receive: text, structure, links and images.
_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "dl", "dt",
        "em", "figcaption", "figure", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
        "li", "ol", "p", "pre", "q", "s", "small", "strong", "sub", "sup", "table", "tbody",
        "td", "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
# Dropped with everything inside them, not just unwrapped.
_DROPPED = frozenset(
    {
        "button", "embed", "form", "iframe", "math", "noscript", "object", "script",
        "select", "style", "svg", "template", "textarea", "title",
    }
)  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
    "abbr": {"title"},
}
_SCHEMES = frozenset({"http", "https"})

_DATE_LINE = re.compile(rf"^{ARTICLE_DATE.pattern}.*\bSource:", re.IGNORECASE)
_BODY_END = re.compile(r"^(more from\s.{1,60}|more articles)$", re.IGNORECASE)
# Lines the site injects into some bodies (template (b)); they are not the story.
_PROMO = re.compile(r"^(join the nk pro team|nk news is hiring|upgrade to nk pro)\b", re.IGNORECASE)
_PROMO_BLOCKS = ["p", "div", "section", "aside"]
_MAX_LINE = 300  # characters: a date line or a heading is short, a body is not


@dataclass(frozen=True, slots=True)
class Article:
    """A story's full text, sanitized, the outlet's own URL of it if the page gives one,
    and the day its ``Date:`` line gives."""

    content_html: str
    original_url: str | None = None
    dated: date | None = None


def sanitize(markup: str, *, base_url: str) -> str:
    """Scraped HTML made safe to embed: allowed tags and attributes only, http(s) URLs only.

    Relative URLs are resolved against ``base_url``; scripts, styles, frames, forms,
    event handlers, inline styles and ``javascript:`` links go, whatever the input.
    """
    cleaner = nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags=set(_DROPPED),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        url_schemes=set(_SCHEMES),
        url_relative=("rewrite_with_base", base_url),
        link_rel="noopener noreferrer nofollow",
    )
    return xml_safe(cleaner.clean(markup)).strip()


def parse_article(body: bytes, *, page_url: str, encoding: str | None = None) -> Article:
    """The full text of an article page: its body and the link to the original, sanitized.

    ``page_url`` is the page's own URL, against which relative links are resolved.
    Raises :class:`LayoutChanged` when the page holds no article text.
    """
    soup = BeautifulSoup(body, "lxml", from_encoding=encoding)
    original = _original_url(soup, page_url)
    date_line = _first_line(soup.find_all(string=True), "date:", _DATE_LINE)
    nodes = _body_nodes(soup, date_line)
    content = sanitize("".join(str(node) for node in nodes), base_url=page_url)
    if not _has_text(content):
        raise LayoutChanged(f"no article text on {page_url}")
    if original:
        link = f'<p><a href="{html.escape(original)}">{ORIGINAL_LINK_TEXT}</a></p>'
        content += "\n" + sanitize(link, base_url=page_url)
    dated = parse_article_date(date_line.get_text()) if date_line is not None else None
    return Article(content, original, dated)


def _original_url(soup: BeautifulSoup, page_url: str) -> str | None:
    for anchor in soup.find_all("a", href=True):
        if squash(anchor.get_text()).casefold() == ORIGINAL_LINK_TEXT.casefold():
            url = urljoin(page_url, str(anchor["href"]).strip())
            parts = urlsplit(url)
            if parts.scheme in _SCHEMES and parts.hostname:
                return url
    return None


def _body_nodes(soup: BeautifulSoup, date_line: Tag | None) -> list[PageElement]:
    """The body's elements: ``.article-content``, else what the structure says, promos out."""
    content = soup.select_one(".article-content")
    if content is not None and squash(content.get_text()):
        nodes: list[PageElement] = list(content.children)
    else:
        nodes = _between_date_line_and_more_from(date_line)
    return _without_promos(nodes)


def _between_date_line_and_more_from(start: Tag | None) -> list[PageElement]:
    """The largest subtrees after the ``Date: … | Source: …`` line and before the heading
    that ends the story ("More From …", "More Articles"); without such a heading, the
    rest of the date line's own container."""
    if start is None:
        return []
    stop = _first_line(start.find_all_next(string=True), "more", _BODY_END)
    stop_ancestors = {id(el) for el in stop.parents} if stop is not None else set()
    nodes: list[PageElement] = []
    node: PageElement = start
    while True:
        following = node.next_sibling
        while following is None:
            if stop is None or node.parent is None:
                return nodes
            node = node.parent
            following = node.next_sibling
        node = following
        while id(node) in stop_ancestors and isinstance(node, Tag):
            node = node.contents[0]  # the stop is inside: go down to what precedes it
        if node is stop:
            return nodes
        if not (isinstance(node, Tag) and node.name in CHROME_TAGS):
            nodes.append(node)


def _first_line(
    strings: Iterable[PageElement], first_word: str, pattern: re.Pattern[str]
) -> Tag | None:
    """The smallest element around one of ``strings`` whose whole, short text matches
    ``pattern``: a line of the page, however its words are split into elements."""
    for string in strings:
        if not squash(str(string)).casefold().startswith(first_word):
            continue
        el = string.parent
        while isinstance(el, Tag) and el.name not in ("body", "html", "[document]"):
            text = squash(el.get_text())
            if len(text) > _MAX_LINE:
                break
            if pattern.match(text):
                return el
            el = el.parent
    return None


def _without_promos(nodes: list[PageElement]) -> list[PageElement]:
    """``nodes`` without the promotion lines the site injects, at any depth."""
    kept = []
    for node in nodes:
        if _is_promo(node):
            continue
        if isinstance(node, Tag):
            for inner in node.find_all(_PROMO_BLOCKS):
                if not inner.decomposed and _is_promo(inner):
                    inner.decompose()
        kept.append(node)
    return kept


def _is_promo(node: PageElement) -> bool:
    if isinstance(node, Tag) and "nk-inline-promo" in (node.get("class") or []):
        return True
    text = squash(node.get_text())
    return len(text) <= _MAX_LINE and bool(_PROMO.match(text))


def _has_text(content: str) -> bool:
    return bool(squash(nh3.clean(content, tags=set()))) or "<img" in content


class FullText:
    """Reads stories' full text from their article pages, a few pages at once.

    What is read is kept by the store, not here: each story's page is asked for until it
    has been read once (article pages never change once published).
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        concurrency: int = 2,
        budget: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.budget = budget
        self.clock = clock
        self._lock = threading.Lock()
        self._inflight: set[Future[Item | None]] = set()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="feedbridge-article")

    def submit(
        self, item: Item, category: str, then: Callable[[Item | None], None]
    ) -> Future[Item | None]:
        """Read ``item``'s page in the background and pass ``then`` the item with its
        full text, or None if it could not be had; the future is done after ``then``."""

        def task() -> Item | None:
            read = self._read(item, category)
            then(read)
            return read

        flight = self._pool.submit(task)
        with self._lock:
            self._inflight.add(flight)
        flight.add_done_callback(self._landed)
        return flight

    def wait(
        self, flights: Iterable[Future[Item | None]], budget: float | None = None
    ) -> set[Future[Item | None]]:
        """Until every flight is done or ``budget`` (default: the configured one) is
        spent; the flights not started by then are cancelled. Returns those done.

        The deadline is read from ``clock`` after each wait, so an injected clock alone
        decides when the budget is spent; with the real clock this is a single wait.
        """
        deadline = self.clock() + (self.budget if budget is None else budget)
        pending = set(flights)
        done: set[Future[Item | None]] = set()
        while pending:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            finished, pending = wait(pending, timeout=remaining)
            done |= finished
        for flight in pending:
            flight.cancel()  # not started: the next fill asks again
        if done or pending:
            log.info(
                "full text: %d of %d articles read, %d not within the budget",
                sum(1 for f in done if f.result() is not None), len(done) + len(pending),
                len(pending),
            )  # fmt: skip
        return done

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the article fetches in flight (tests and shutdown)."""
        with self._lock:
            pending = list(self._inflight)
        wait(pending, timeout=timeout)

    def _landed(self, flight: Future[Item | None]) -> None:
        with self._lock:
            self._inflight.discard(flight)

    def _read(self, item: Item, category: str) -> Item | None:
        try:
            with observe.fetching_for(category):
                page = self.upstream.fetch(item.path)
            article = parse_article(page.body, page_url=page.url, encoding=page.encoding)
        except UpstreamError as exc:
            log.warning("full text of %s: %s; keeping the excerpt", item.key, exc)
            return None
        except Exception:
            log.exception("full text of %s failed unexpectedly; keeping the excerpt", item.key)
            return None
        return _with_article(item, article)


def _with_article(item: Item, article: Article) -> Item:
    """``item`` with its full text; a listing that gave no date takes the article's."""
    return replace(
        item,
        content_html=article.content_html,
        original_url=article.original_url,
        listed=item.listed or article.dated,
    )
