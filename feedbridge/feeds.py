"""Pure rendering: items in, feed documents (bytes) out.

RSS 2.0 and Atom 1.0 through feedgen, around what it gets wrong: entries appended (it
prepends by default), the self link set before the alternate one (RSS's channel link is
the last set), HTML content as ``type="html"`` (its CDATA is invalid Atom), timezone-aware
dates only, text made XML-safe first (it raises on control characters), thumbnails
without ``media:group`` (the W3C validator rejects a group of one), and the hub link
added to RSS by hand. JSON Feed 1.1 and OPML 2.0 by hand. The output depends only on
the arguments, never on the clock, so the same items give the same bytes and the same
ETag in every process.
"""

from __future__ import annotations

import enum
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from feedgen.feed import FeedGenerator
from lxml import etree

from feedbridge import __version__
from feedbridge.model import EARLIEST, Item
from feedbridge.text import xml_safe

GENERATOR_URI = "https://pypi.org/project/feedbridge/"


class Format(enum.Enum):
    RSS = "rss"
    ATOM = "atom"
    JSON = "json"

    @property
    def media_type(self) -> str:
        return _MEDIA_TYPES[self]


_MEDIA_TYPES = {
    Format.RSS: "application/rss+xml",
    Format.ATOM: "application/atom+xml",
    Format.JSON: "application/feed+json",
}
OPML_MEDIA_TYPE = "text/x-opml"
_JSON_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_JSON_ITEMS = b'"items":[]'  # in a document only as the key: quotes in strings are escaped
# Where an XML format's entry starts, where two meet and where one ends; and the tag
# that entries end before: the last in the document, as feedgen writes them last.
_XML_ENTRIES = {
    Format.ATOM: (b"<entry>", b"</entry><entry>", b"</entry>"),
    Format.RSS: (b"<item>", b"</item><item>", b"</item>"),
}
_XML_ENTRIES_END = {Format.ATOM: b"</feed>", Format.RSS: b"</channel>"}


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What a feed says about itself."""

    id: str
    title: str
    description: str
    self_url: str
    home_url: str
    language: str = "en"
    hub: str | None = None  # a WebSub hub that pushes the feed to its subscribers


# The feed that entries are rendered in, to be cut out of it (see :func:`entries`).
_NO_INFO = FeedInfo(
    "urn:feedbridge:entries", "-", "-", "https://feedbridge.invalid/", "https://feedbridge.invalid/"
)


@dataclass(frozen=True, slots=True)
class Shell:
    """A feed document without its entries: what comes before them, between two and after."""

    head: bytes
    separator: bytes
    tail: bytes

    def around(self, entries: Sequence[bytes]) -> bytes:
        """The document holding ``entries`` (each as :func:`entries` renders it)."""
        # One join: a selection's body is megabytes, and each concatenation copies it.
        parts = [self.head]
        for entry in entries:
            parts += (entry, self.separator)
        if entries:
            parts.pop()  # no separator after the last entry
        parts.append(self.tail)
        return b"".join(parts)


def render(fmt: Format, info: FeedInfo, items: Sequence[Item], *, base_url: str) -> bytes:
    """The feed document for ``items`` (already newest first) in ``fmt``."""
    return shell(fmt, info, updated(items)).around(entries(fmt, items, base_url=base_url))


def updated(items: Sequence[Item]) -> datetime:
    """When a feed of ``items`` last changed: when its newest change was."""
    return max((item.updated for item in items), default=EARLIEST)


def shell(fmt: Format, info: FeedInfo, updated: datetime) -> Shell:
    """The feed document for ``info`` with no entries, cut where they go.

    Entries are rendered on their own (:func:`entries`) and put in, so that a story's
    entry is rendered once, not once per feed, selection and version it is part of.
    """
    if fmt is Format.JSON:
        document = _json_bytes(_json_feed(info))
        head, tail = document.split(_JSON_ITEMS, 1)
        return Shell(head + _JSON_ITEMS[:-1], b",", b"]" + tail)
    generator = _feedgen(info, (), "", updated)
    if fmt is Format.RSS:
        rss: bytes = generator.rss_str(pretty=False)
        document = _with_rss_hub(rss, info.hub) if info.hub else rss
    else:
        document = generator.atom_str(pretty=False)
    cut = document.rindex(_XML_ENTRIES_END[fmt])
    return Shell(document[:cut], b"", document[cut:])


def entries(fmt: Format, items: Sequence[Item], *, base_url: str) -> list[bytes]:
    """Each of ``items``' entries, as it is in a document of ``fmt`` (feedgen renders
    them in one document, which is cut between its entries)."""
    if fmt is Format.JSON:
        return [_json_bytes(_json_item(item, base_url)) for item in items]
    if not items:
        return []
    generator = _feedgen(_NO_INFO, items, base_url, EARLIEST)
    document: bytes = (
        generator.rss_str(pretty=False) if fmt is Format.RSS else generator.atom_str(pretty=False)
    )
    opening, between, closing = _XML_ENTRIES[fmt]
    # Text and attributes are escaped: the tags occur in the document as tags only.
    inner = document[document.index(opening) + len(opening) : document.rindex(closing)]
    parts = inner.split(between)
    if len(parts) != len(items):
        raise AssertionError(f"feedgen rendered {len(parts)} entries of {len(items)}")
    return [opening + part + closing for part in parts]


def _with_rss_hub(rss: bytes, hub: str) -> bytes:
    """The RSS feed with ``<atom:link rel="hub">`` after its self link: feedgen writes
    only the self link of an RSS channel."""
    root = etree.fromstring(rss)
    [self_link] = root.iterfind("channel/{http://www.w3.org/2005/Atom}link[@rel='self']")
    hub_link = etree.Element("{http://www.w3.org/2005/Atom}link", href=hub, rel="hub")
    self_link.addnext(hub_link)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def render_opml(title: str, feeds: Sequence[tuple[str, str, str]]) -> bytes:
    """An OPML 2.0 subscription list of ``(title, feed URL, web page URL)``."""
    opml = etree.Element("opml", version="2.0")
    head = etree.SubElement(opml, "head")
    etree.SubElement(head, "title").text = xml_safe(title)
    body = etree.SubElement(opml, "body")
    for text, xml_url, html_url in feeds:
        etree.SubElement(
            body, "outline", type="rss", text=xml_safe(text), title=xml_safe(text),
            xmlUrl=xml_url, htmlUrl=html_url,
        )  # fmt: skip
    return etree.tostring(opml, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _feedgen(
    info: FeedInfo, items: Sequence[Item], base_url: str, updated: datetime
) -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("media", atom=True, rss=True)
    fg.id(info.id)
    fg.title(xml_safe(info.title))
    fg.description(xml_safe(info.description))
    fg.author({"name": "KCNA Watch"})
    fg.language(info.language)
    fg.generator("feedbridge", version=__version__, uri=GENERATOR_URI)
    # RSS's <channel><link> is the last link set: self first, alternate last.
    fg.link(href=info.self_url, rel="self")
    if info.hub:
        fg.link(href=info.hub, rel="hub")
    fg.link(href=info.home_url, rel="alternate", type="text/html")
    fg.updated(updated)  # feedgen's default is "now"
    for item in items:
        entry = fg.add_entry(order="append")  # feedgen prepends by default
        entry.guid(item.key.tag_uri, permalink=False)
        entry.title(xml_safe(item.title))
        entry.link(href=base_url + item.path, rel="alternate", type="text/html")
        entry.published(item.published)
        entry.updated(item.updated)
        if item.excerpt:
            # The excerpt is text, and RSS readers render <description> as HTML: escape
            # it, or "<script>" shown as text on the site would run in the reader.
            entry.summary(html.escape(xml_safe(item.excerpt), quote=False), type="html")
        if item.content_html:
            # type="html", not CDATA: feedgen's CDATA content is invalid Atom.
            entry.content(xml_safe(item.content_html), type="html")
        if item.source:
            entry.category(term=xml_safe(item.source))
        if item.thumbnail:
            # group=None: feedgen's default media:group around a lone thumbnail is an
            # error for the W3C validator (a group needs several media:content).
            entry.media.thumbnail({"url": item.thumbnail}, group=None)
    return fg


def _json_feed(info: FeedInfo) -> dict[str, object]:
    feed: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": info.title,
        "home_page_url": info.home_url,
        "feed_url": info.self_url,
        "description": info.description,
        "language": info.language,
        "authors": [{"name": "KCNA Watch"}],
        "items": [],
    }
    if info.hub:
        feed["hubs"] = [{"type": "WebSub", "url": info.hub}]
    return feed


def _json_bytes(value: dict[str, object]) -> bytes:
    text = json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"))
    # "<", ">" and "&" only occur inside strings here; as escapes they mean the same to
    # a JSON parser, and the raw document holds no markup for anything that sniffs it.
    for char, escape in _JSON_HTML_ESCAPES.items():
        text = text.replace(char, escape)
    return text.encode("utf-8")


def _json_item(item: Item, base_url: str) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": item.key.tag_uri,
        "url": base_url + item.path,
        "title": item.title,
        "date_published": item.published.isoformat(),
    }
    if item.modified:
        entry["date_modified"] = item.modified.isoformat()
    if item.original_url:
        entry["external_url"] = item.original_url  # the outlet's own copy of the story
    if item.content_html:
        entry["content_html"] = item.content_html
    else:
        entry["content_text"] = item.excerpt or item.title
    if item.excerpt:
        entry["summary"] = item.excerpt
    if item.source:
        entry["tags"] = [item.source]
    if item.thumbnail:
        entry["image"] = item.thumbnail
    return entry


def _clean(value: object) -> object:
    """Every string made XML-safe too: a reader may turn JSON Feed text into XML."""
    if isinstance(value, str):
        return xml_safe(value)
    if isinstance(value, dict):
        return {key: _clean(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_clean(inner) for inner in value]
    return value
