"""Pure parsing: a page's bytes in, items out. No I/O here.

The site's markup is only partly known (no raw HTML of the current theme survives; the
saved pages of ``tests/fixtures`` are a reconstruction), so the parser anchors on what
is certain: an item is a link to ``/newstream/<ts>-<id>/…``, and a source's listing is
the stretch of the page between the heading "More From <label>" and the next section
heading ("More Articles"). Within that stretch, each item is the largest element
holding links to one story only; its title, excerpt and date are read from its text
blocks, whatever their class names.

Listings are parsed with lxml directly: BeautifulSoup on top of it was measured at
about 20x the time of the bare parse (bench/), for nothing the listing needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from bs4.dammit import UnicodeDammit
from lxml import etree
from lxml.etree import _Element, _ElementUnicodeResult, iterwalk

from feedbridge.errors import Blocked, LayoutChanged
from feedbridge.model import ArticleKey, Item, merge_duplicates, newest_first
from feedbridge.site import (
    ARCHIVE_PAGE,
    ARCHIVE_ROOT,
    ARTICLE_PATH,
    CHROME_TAGS,
    HEADING_START,
    HOSTS,
    LATEST,
    LISTED_DATE,
    MORE_FROM,
    SECTION_END,
    WALL_MARKERS,
    parse_listed_date,
)
from feedbridge.text import collapse, squash, xml_safe

_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"  # RFC 3986's reserved characters, and escapes
# Start and end tags, for the rare page nested deeper than libxml2 parses (see _parse).
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)[^>]*>")
# Elements with no end tag, or whose end the parser implies: never what nests a page deep.
_NO_END_NEEDED = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody",
        "tfoot", "option", "optgroup", "colgroup", "caption", "html", "head", "body",
    }
)  # fmt: skip
_BLOCK = frozenset(
    {
        "address", "article", "blockquote", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "li", "main", "ol", "p",
        "section", "table", "td", "th", "time", "tr", "ul", "br",
    }
)  # fmt: skip
_SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


def parse_listing(
    body: bytes,
    *,
    label: str,
    base_url: str,
    encoding: str | None = None,
    page_path: str | None = None,
) -> list[Item]:
    """The items of the page's "More From <label>" block, in the page's order, duplicates merged.

    Raises :class:`LayoutChanged` when the block is missing or holds no story, and
    :class:`Blocked` when the page is a sign-up wall rather than an article.
    """
    root = _parse(body, encoding)
    chains = _heading_chains(root)
    wanted = label_key(label)
    heading = next(
        (el for el, found in _headings(chains, MORE_FROM) if label_key(found) == wanted), None
    )
    if heading is None:
        _raise_if_wall(root)
        raise LayoutChanged(f"no 'More From {label}' block on the page")
    own_key = _key_of_path(page_path) if page_path else None
    items = _items_after(root, heading, chains, base_url=base_url, source=label, skip=own_key)
    if not items:
        raise LayoutChanged(f"the 'More From {label}' block lists no article")
    return items


def parse_home(body: bytes, *, base_url: str, encoding: str | None = None) -> list[Item]:
    """The latest articles of the home page (all sources), in the page's order."""
    root = _parse(body, encoding)
    chains = _heading_chains(root)
    heading = next((el for el, _ in _headings(chains, LATEST)), None)
    items = _items_after(root, heading, chains, base_url=base_url, source=None, skip=None)
    if not items:
        _raise_if_wall(root)
        raise LayoutChanged("the home page lists no article")
    return items


def parse_page(
    body: bytes,
    *,
    label: str | None,
    base_url: str,
    encoding: str | None = None,
    page_path: str | None = None,
) -> list[Item]:
    """A category's anchor page read as its listing, newest first: the home page's
    latest articles when ``label`` is None, else the "More From <label>" block."""
    if label is None:
        items = parse_home(body, base_url=base_url, encoding=encoding)
    else:
        items = parse_listing(
            body, label=label, base_url=base_url, encoding=encoding, page_path=page_path
        )
    return newest_first(items)


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """One page of the all-sources archive: its stories, newest first, and whether the
    archive goes on (a link to the next page)."""

    items: tuple[Item, ...]
    has_next: bool


def archive_path(page: int) -> str:
    """The path of the archive's ``page`` (1 is ``/newstream/`` itself)."""
    return ARCHIVE_ROOT if page == 1 else f"{ARCHIVE_ROOT}page/{page}/"


def parse_archive(
    body: bytes, *, page: int, base_url: str, encoding: str | None = None
) -> ArchivePage:
    """The stories of archive page ``page`` and whether a next page exists.

    Anchored on URL shapes only: an item is a link to an article; the next page is a
    link (``<a>`` or ``<link rel=next>``) to ``/newstream/page/<page + 1>/``. Raises
    :class:`LayoutChanged` when the page lists no story, :class:`Blocked` for a wall.
    """
    root = _parse(body, encoding)
    items = _items_after(
        root, None, _heading_chains(root), base_url=base_url, source=None, skip=None
    )
    if not items:
        _raise_if_wall(root)
        raise LayoutChanged(f"archive page {page} lists no article")
    has_next = False
    for el in root.iter("a", "link"):
        match = ARCHIVE_PAGE.match(urlsplit(el.get("href", "").strip()).path)
        if match and int(match.group(1)) == page + 1:
            has_next = True
            break
    return ArchivePage(tuple(items), has_next)


def article_link(href: str, *, base_url: str) -> tuple[ArticleKey, str] | None:
    """``(key, canonical path)`` when ``href`` points at an article of the site, else None.

    Absolute links to kcnawatch.org or to the configured base, and relative links, are
    accepted; scheme, host, query, fragment and a missing trailing slash do not matter.
    """
    parts = urlsplit(href.strip())
    if parts.scheme not in ("", "http", "https"):
        return None
    if parts.netloc:
        host = (parts.hostname or "").lower()
        if host not in HOSTS and host != urlsplit(base_url).hostname:
            return None
    path = parts.path if parts.path.startswith("/") else urlsplit(urljoin("/x/", parts.path)).path
    match = ARTICLE_PATH.match(path)
    if not match:
        return None
    ts, ident, slug = match.groups()
    key = ArticleKey(int(ts), ident)
    slug = quote(unquote(slug), safe="-_.~%") if slug else ""
    return key, f"/newstream/{key}/{slug}/" if slug else f"/newstream/{key}/"


# ---------------------------------------------------------------------------------
# Internals


def _parse(body: bytes, encoding: str | None) -> _Element:
    """Decode with the HTTP charset, else the page's own, else a guess; then parse."""
    known = [encoding] if encoding else []
    text = UnicodeDammit(body, known_definite_encodings=known, is_html=True).unicode_markup
    markup = xml_safe(text or "") or "<html></html>"
    try:
        root, too_deep = _parse_markup(markup)
        if too_deep:
            # libxml2 stops reading at 256 open elements, and what follows (the listing)
            # is lost. Unclosed start tags are what nest a page that deep: drop them.
            root, _ = _parse_markup(_without_unclosed_tags(markup))
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise LayoutChanged(f"the page is not readable HTML ({exc})") from exc
    if root is None:
        raise LayoutChanged("the page is empty")
    return root


def _parse_markup(markup: str) -> tuple[_Element | None, bool]:
    """The tree of ``markup``, and whether the parser stopped at its depth limit."""
    # Plain elements, not lxml.html's: its per-element class lookup in Python was a fifth
    # of the scraper's time, for methods the scraper does not use. One parser per page, so
    # that its error log is this page's whatever thread parses another.
    parser = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True)
    root = etree.fromstring(markup, parser)
    too_deep = any(e.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT for e in parser.error_log)
    return root, too_deep


def _without_unclosed_tags(markup: str) -> str:
    """``markup`` without the start tags that no end tag closes (of elements whose end
    the parser does not imply). Linear: each start tag is pushed and popped once."""
    stack: list[tuple[str, int]] = []  # open elements: name, offset of the start tag
    counts: dict[str, int] = {}  # open elements by name, so a stray end tag costs nothing
    unclosed: set[int] = set()
    for match in _TAG.finditer(markup):
        closing, name = match.group(1), match.group(2).lower()
        if name in _NO_END_NEEDED or match.group(0).endswith("/>"):
            continue
        if not closing:
            stack.append((name, match.start()))
            counts[name] = counts.get(name, 0) + 1
            continue
        if not counts.get(name):
            continue
        while True:  # the nearest open element of that name; those above it stay unclosed
            open_name, offset = stack.pop()
            counts[open_name] -= 1
            if open_name == name:
                break
            unclosed.add(offset)
    unclosed.update(offset for _, offset in stack)
    return _TAG.sub(lambda m: "" if m.start() in unclosed else m.group(0), markup)


def _text(el: _Element) -> str:
    """All the text inside ``el`` (lxml.html's ``text_content()``, on a plain element)."""
    return "".join(str(text) for text in el.itertext())


def _strings(el: _Element, path: str) -> list[_ElementUnicodeResult]:
    """The results of an XPath that selects text or attributes (lxml's are typed loosely)."""
    found = el.xpath(path)
    assert isinstance(found, list)
    return [value for value in found if isinstance(value, _ElementUnicodeResult)]


def _elements(el: _Element, path: str) -> list[_Element]:
    """The results of an XPath that selects elements."""
    found = el.xpath(path)
    assert isinstance(found, list)
    return [value for value in found if isinstance(value, _Element)]


def _raise_if_wall(root: _Element) -> None:
    markup_classes = " ".join(_strings(root, "//form/@class | //form/@action | //div/@class"))
    if any(marker in markup_classes for marker in WALL_MARKERS):
        raise Blocked("the site answered with its sign-up wall instead of the page")


def label_key(label: str) -> str:
    """Labels compare case-insensitively, whitespace collapsed: (EN) equals (En).

    The one rule for "the same source": listings, article pages and the registry."""
    return squash(label).casefold()


Chain = list[tuple[_Element, str]]


def _heading_chains(root: _Element) -> list[Chain]:
    """For each text node that starts like a section heading, its element and ancestors
    while their whole text is short, innermost first, each with its squashed text.

    Found from the text nodes up, so the cost is one pass over the text, not a
    text of every element; done once per page for every heading pattern.
    """
    chains: list[Chain] = []
    for node in _strings(root, "//body//text()"):
        if not node.is_text or not HEADING_START.match(node):
            continue
        chain: Chain = []
        el = node.getparent()
        while el is not None and el.tag not in ("body", "html") and el.tag not in _SKIP:
            text = collapse(_text(el))
            # A heading is short and lists no story: a block of one short card is both
            # heading and card only to the length test.
            if len(text) > 160 or _holds_a_story(el):
                break
            chain.append((el, text))
            el = el.getparent()
        chains.append(chain)
    return chains


def _holds_a_story(el: _Element) -> bool:
    return any(ARTICLE_PATH.match(urlsplit(a.get("href", "")).path) for a in el.iter("a"))


def _headings(chains: list[Chain], pattern: re.Pattern[str]) -> list[tuple[_Element, str]]:
    """Elements whose whole (short) text matches ``pattern``, with its first group; the
    outermost matching element of a chain wins."""
    found: list[tuple[_Element, str]] = []
    for chain in chains:
        best = None
        for el, text in chain:
            match = pattern.match(text)
            if match:
                best = (el, match.group(1) if match.groups() else text)
        if best is not None and (not found or found[-1][0] is not best[0]):
            found.append(best)
    return found


def _items_after(
    root: _Element,
    start: _Element | None,
    chains: list[Chain],
    *,
    base_url: str,
    source: str | None,
    skip: ArticleKey | None,
) -> list[Item]:
    links = list(_section_links(root, start, chains, base_url))
    keys_by_element: dict[_Element, set[ArticleKey]] = {}
    for anchor, key, _ in links:
        for ancestor in anchor.iterancestors():
            keys_by_element.setdefault(ancestor, set()).add(key)
    # An item never reaches up to its section's heading: the block of a single card holds
    # links to one story only, and so does all the page around it.
    above_start = set(start.iterancestors()) if start is not None else set()
    grouped: dict[ArticleKey, list[tuple[_Element, str]]] = {}
    for anchor, key, path in links:
        grouped.setdefault(key, []).append((anchor, path))
    items = []
    for key, anchors in grouped.items():
        if key == skip:
            continue
        container = _container(anchors[0][0], keys_by_element, above_start)
        items.append(_item(key, anchors, container, base_url=base_url, source=source))
    return merge_duplicates(items)


def _section_links(
    root: _Element, start: _Element | None, chains: list[Chain], base_url: str
) -> Iterator[tuple[_Element, ArticleKey, str]]:
    """Article links after ``start`` (or from the top) up to the next section heading.

    Links in the page's header, navigation, sidebars and footer are never items.
    """
    ends = {el for el, _ in _headings(chains, SECTION_END)} - {start}
    inside_start = set(start.iter("a")) if start is not None else set()
    started = start is None
    # Only the tags that matter, in document order: lxml skips the others in C.
    tags = {"a"} | {el.tag for el in ends} | ({start.tag} if start is not None else set())
    for el in root.iter(*tags):
        if not started:
            started = el is start
            continue
        if el in ends:
            return
        if el.tag == "a" and el not in inside_start and not _in_chrome(el):
            found = article_link(el.get("href", ""), base_url=base_url)
            if found:
                yield el, *found


def _in_chrome(el: _Element) -> bool:
    return next(el.iterancestors(*CHROME_TAGS), None) is not None


def _container(
    anchor: _Element,
    keys_by_element: dict[_Element, set[ArticleKey]],
    above_start: set[_Element],
) -> _Element:
    """The largest ancestor of ``anchor`` that holds links to this one story only, below
    the elements that hold the section's heading."""
    container = anchor
    for ancestor in anchor.iterancestors():
        if (
            len(keys_by_element.get(ancestor, ())) > 1
            or ancestor.tag in ("body", "html")
            or ancestor in above_start
        ):
            break
        container = ancestor
    return container


def _item(
    key: ArticleKey,
    anchors: list[tuple[_Element, str]],
    container: _Element,
    *,
    base_url: str,
    source: str | None,
) -> Item:
    blocks = _text_blocks(container)
    listed = next((d for d in map(parse_listed_date, blocks) if d), None)
    title = _title(anchors, container, blocks)
    excerpt = next(
        (
            text
            for text in blocks
            if text.casefold() != title.casefold()
            and not LISTED_DATE.fullmatch(text)
            and (source is None or text.casefold() != source.casefold())
        ),
        "",
    )
    if source is None:
        logo = _elements(
            container, ".//img[contains(@class, 'source') or contains(@class, 'logo')]"
        )
        source = collapse(logo[0].get("alt", "")) or None if logo else None
    # The tree's text is whitespace-collapsed as it is read; what is kept is made XML-safe
    # here, once: character references such as "&#11;" come back as control characters.
    return Item(
        key=key,
        title=squash(title),
        path=anchors[0][1],
        excerpt=squash(excerpt),
        listed=listed,
        thumbnail=_thumbnail(container, base_url),
        source=squash(source) if source else None,
    )


def _title(anchors: list[tuple[_Element, str]], container: _Element, blocks: list[str]) -> str:
    """Heading text; else an image's alt or the link's title; else the link text; else slug."""
    for heading in container.iter(*_HEADINGS):
        text = collapse(_text(heading))
        if text:
            return text
    for anchor, _ in anchors:
        for img in anchor.iter("img"):
            alt = collapse(img.get("alt", ""))
            if alt:
                return alt
        if collapse(anchor.get("title", "")):
            return collapse(anchor.get("title", ""))
    excerpts = {text.casefold() for text in blocks[1:]}
    for anchor, _ in anchors:
        text = collapse(_text(anchor))
        if text and text.casefold() not in excerpts and not LISTED_DATE.fullmatch(text):
            return text
    slug = anchors[0][1].rstrip("/").rsplit("/", 1)[-1]
    words = squash(unquote(slug).replace("-", " "))
    return words[:1].upper() + words[1:] if words and not words.isdigit() else str(anchors[0][1])


def _text_blocks(container: _Element) -> list[str]:
    """The container's text, one string per block element (paragraph, heading, cell …)."""
    blocks: list[str] = []
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            text = collapse(" ".join(buffer))
            buffer.clear()
            if text:
                blocks.append(text)

    # lxml's own walk (its C loop) rather than a recursion of Python generators.
    walk = iterwalk(container, events=("start", "end"))
    for event, el in walk:
        if event == "start":
            if el.tag in _SKIP:
                walk.skip_subtree()  # its end still comes, for its tail
            else:
                if el.tag in _BLOCK:
                    flush()
                if el.text:
                    buffer.append(el.text)
            continue
        if el.tag in _BLOCK:
            flush()
        if el.tail and el is not container:
            buffer.append(el.tail)
    flush()
    return blocks


def _thumbnail(container: _Element, base_url: str) -> str | None:
    for img in container.iter("img"):
        classes = img.get("class", "")
        src = (img.get("data-src") or img.get("src") or "").strip()
        if not src or "source" in classes or src.startswith("data:"):
            continue
        url = urljoin(base_url + "/", src)
        if urlsplit(url).scheme in ("http", "https"):
            # What a URL may not hold as it is (a backslash, a space, "<") is escaped.
            return quote(url, safe=_URL_SAFE)
    return None


def _key_of_path(path: str) -> ArticleKey | None:
    match = ARTICLE_PATH.match(path)
    return ArticleKey(int(match.group(1)), match.group(2)) if match else None
