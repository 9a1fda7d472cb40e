"""An article page → its full text: pure, no I/O.

* :func:`parse_article`: an article page's bytes → :class:`Article`, the body followed
  by a link to the outlet's own copy. The body is ``.article-content``; when the markup
  differs, it is found by the page's structure instead: what lies between the
  ``Date: … | Source: …`` line and the "More From <label>" heading.
* :func:`sanitize`: the one nh3 allow-list every scraped HTML goes through before it
  reaches a feed or a page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from urllib.parse import urljoin, urlsplit

import nh3
from bs4 import BeautifulSoup, Tag
from bs4.element import PageElement

from feedbridge.errors import LayoutChanged
from feedbridge.site import (
    BODY_END,
    CHROME_TAGS,
    DATE_LINE,
    MORE_FROM,
    ORIGINAL_LINK_TEXT,
    PROMO,
    SOURCE_LINE,
    parse_article_date,
)
from feedbridge.text import squash, xml_safe

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

_PROMO_BLOCKS = ["p", "div", "section", "aside"]
_MAX_LINE = 300  # characters: a date line or a heading is short, a body is not


@dataclass(frozen=True, slots=True)
class Article:
    """A story's full text, sanitized, the outlet's own URL of it if the page gives one,
    the day its ``Date:`` line gives and the label of its source."""

    content_html: str
    original_url: str | None = None
    dated: date | None = None
    source: str | None = None  # the source's label, as the page names it


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
    date_line = _first_line(soup.find_all(string=True), "date:", DATE_LINE)
    nodes = _body_nodes(soup, date_line)
    content = sanitize("".join(str(node) for node in nodes), base_url=page_url)
    if not _has_text(content):
        raise LayoutChanged(f"no article text on {page_url}")
    if original:
        link = f'<p><a href="{html.escape(original)}">{ORIGINAL_LINK_TEXT}</a></p>'
        content += "\n" + sanitize(link, base_url=page_url)
    dated = parse_article_date(date_line.get_text()) if date_line is not None else None
    return Article(content, original, dated, _source(soup, date_line))


def _source(soup: BeautifulSoup, date_line: Tag | None) -> str | None:
    """The label of ``Source: <label> |``; else of the "More From <label>" heading (the
    lighter template has no date line). A label rendered as a logo leaves only its
    language tag, ``(En)``: that names no source."""
    found = SOURCE_LINE.search(squash(date_line.get_text())) if date_line is not None else None
    if found is None:
        heading = _first_line(soup.find_all(string=True), "more", BODY_END)
        found = MORE_FROM.match(squash(heading.get_text())) if heading is not None else None
    label = squash(found.group(1)) if found else ""
    return label if label and not re.fullmatch(r"\(\w+\)", label) else None


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
    stop = _first_line(start.find_all_next(string=True), "more", BODY_END)
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
    return len(text) <= _MAX_LINE and bool(PROMO.match(text))


def _has_text(content: str) -> bool:
    return bool(squash(nh3.clean(content, tags=set()))) or "<img" in content
