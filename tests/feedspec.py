"""Spec-level checkers for the feed formats feedbridge serves.

These are deliberately stricter than feedparser, which tolerates almost
anything.  Each checker collects *every* violation it finds and then raises a
single :class:`SpecViolation` (an ``AssertionError``, so pytest reports it as
a plain assertion failure) whose message lists them all, one per line, each
tagged with a stable rule id such as ``[atom.date]``.  On success the parsed
document is returned so tests can make further assertions on it.

Checkers:

* :func:`check_atom`     -- Atom 1.0 (RFC 4287)
* :func:`check_rss`      -- RSS 2.0 (https://www.rssboard.org/rss-specification)
* :func:`check_jsonfeed` -- JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/)
* :func:`check_opml`     -- OPML 2.0
* :func:`check_feed`     -- dispatch on a response media type
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

from lxml import etree

__all__ = [
    "ATOM_MEDIA_TYPE",
    "ATOM_NS",
    "JSONFEED_MEDIA_TYPE",
    "JSONFEED_VERSION",
    "MEDIA_NS",
    "OPML_MEDIA_TYPE",
    "RSS_MEDIA_TYPE",
    "SpecViolation",
    "Violation",
    "check_atom",
    "check_feed",
    "check_jsonfeed",
    "check_opml",
    "check_rss",
]

ATOM_NS = "http://www.w3.org/2005/Atom"
XHTML_NS = "http://www.w3.org/1999/xhtml"
JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"

ATOM_MEDIA_TYPE = "application/atom+xml"
RSS_MEDIA_TYPE = "application/rss+xml"
JSONFEED_MEDIA_TYPE = "application/feed+json"
OPML_MEDIA_TYPE = "text/x-opml"

MEDIA_NS = "http://search.yahoo.com/mrss/"

_IANA_REL_PREFIX = "http://www.iana.org/assignments/relation/"


# --------------------------------------------------------------------------
# Violation reporting
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One broken rule: a stable rule id plus a human-readable detail."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.detail}"


class SpecViolation(AssertionError):
    """Raised by the checkers; the message lists every violation found."""

    def __init__(self, document: str, violations: Sequence[Violation]) -> None:
        self.document = document
        self.violations: tuple[Violation, ...] = tuple(violations)
        lines = [f"{document}: {len(self.violations)} spec violation(s):"]
        lines.extend(f"  - {v}" for v in self.violations)
        super().__init__("\n".join(lines))

    @property
    def rules(self) -> frozenset[str]:
        """The set of rule ids that were violated."""
        return frozenset(v.rule for v in self.violations)


class _Report:
    """Collects violations, then raises them all at once."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.violations: list[Violation] = []

    def add(self, rule: str, detail: str) -> None:
        self.violations.append(Violation(rule, detail))

    def fatal(self, rule: str, detail: str) -> SpecViolation:
        """Record a violation that makes further checking pointless."""
        self.add(rule, detail)
        return SpecViolation(self.document, self.violations)

    def raise_if_any(self) -> None:
        if self.violations:
            raise SpecViolation(self.document, self.violations)


# --------------------------------------------------------------------------
# Value syntax helpers (each returns None when valid, else a problem string)
# --------------------------------------------------------------------------

# RFC 3339 section 5.6 ``date-time``; Atom (RFC 4287 section 3.3) further
# requires the "T" and "Z" to be upper case, which we apply everywhere.
_RFC3339_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.[0-9]+)?"
    r"(?P<offset>Z|[+-](?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)
_RFC3339_NAIVE_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
)


def _rfc3339_problem(value: str) -> str | None:
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        if _RFC3339_NAIVE_RE.fullmatch(value):
            return f"{value!r} has no timezone offset (naive date-time)"
        return f"{value!r} is not an RFC 3339 date-time like 2026-03-22T09:00:00+09:00"
    second = int(m["second"])
    try:
        datetime(
            int(m["year"]),
            int(m["month"]),
            int(m["day"]),
            int(m["hour"]),
            int(m["minute"]),
            59 if second == 60 else second,  # RFC 3339 allows a leap second
        )
    except ValueError as exc:
        return f"{value!r} has an out-of-range component ({exc})"
    if m["oh"] is not None and (int(m["oh"]) > 23 or int(m["om"]) > 59):
        return f"{value!r} has an out-of-range timezone offset"
    return None


# RFC 822 section 5 (as amended by RFC 1123: four-digit years).  Military
# single-letter zones are not accepted; "-0000" is rejected below because
# RFC 2822 defines it as "no zone information".
_RFC822_RE = re.compile(
    r"(?:(?P<wday>Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?"
    r"(?P<day>[0-9]{1,2}) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[0-9]{4} [0-9]{2}:[0-9]{2}(?::[0-9]{2})? "
    r"(?P<zone>[+-][0-9]{4}|UT|GMT|[ECMP][SD]T)"
)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _rfc822_problem(value: str) -> str | None:
    m = _RFC822_RE.fullmatch(value)
    if m is None:
        return (
            f"{value!r} is not an RFC 822 date with a 4-digit year and a zone, "
            "like 'Sun, 22 Mar 2026 09:00:00 +0900'"
        )
    zone = m["zone"]
    if zone[0] in "+-" and int(zone[3:]) > 59:
        return f"{value!r} has an out-of-range zone offset"
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        return f"{value!r} is not a valid date ({exc})"
    if parsed.tzinfo is None:
        return f"{value!r} has no zone information ('-0000' means unknown zone)"
    if m["wday"] is not None and m["wday"] != _WEEKDAYS[parsed.weekday()]:
        return (
            f"{value!r}: day-of-week {m['wday']!r} does not match the date "
            f"(it is a {_WEEKDAYS[parsed.weekday()]})"
        )
    return None


_FORBIDDEN_URI_CHARS = re.compile(r"[\s<>\"{}|\\^`\x00-\x1f\x7f]")


def _http_url_problem(value: str) -> str | None:
    """An absolute http(s) URL with a host and no whitespace."""
    if _FORBIDDEN_URI_CHARS.search(value):
        return f"{value!r} contains whitespace or characters not allowed in a URL"
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        return f"{value!r} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"{value!r} is not an absolute http(s) URL"
    return None


_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.+)", re.DOTALL)
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DNS_NAME = rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*"
# RFC 4151: tag:authorityName,date:specific[#fragment]
_TAG_RE = re.compile(
    rf"(?:{_DNS_NAME}|[A-Za-z0-9._-]+@{_DNS_NAME}),"
    r"[0-9]{4}(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]))?)?"
    r":[^#]*(?:#.*)?",
    re.DOTALL,
)
# RFC 8141: urn:<NID>:<NSS>
_URN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]:.+", re.DOTALL)


def _absolute_iri_problem(value: str) -> str | None:
    """An absolute IRI: has a scheme; tag:, urn: and http(s): are checked further."""
    if _FORBIDDEN_URI_CHARS.search(value):
        return f"{value!r} contains whitespace or characters not allowed in an IRI"
    m = _SCHEME_RE.fullmatch(value)
    if m is None:
        return f"{value!r} is not an absolute IRI (no scheme)"
    scheme, rest = m[1].lower(), m[2]
    if scheme == "tag" and _TAG_RE.fullmatch(rest) is None:
        return f"{value!r} is not an RFC 4151 tag URI (tag:authority,date:specific)"
    if scheme == "urn" and _URN_RE.fullmatch(rest) is None:
        return f"{value!r} is not an RFC 8141 URN (urn:nid:nss)"
    if scheme in ("http", "https"):
        return _http_url_problem(value)
    return None


# type "/" subtype, RFC 6838 restricted names.
_MIME_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)


def _is_mime_type(value: str) -> bool:
    return _MIME_RE.fullmatch(value) is not None


# --------------------------------------------------------------------------
# XML helpers
# --------------------------------------------------------------------------


def _parse_xml(body: bytes, report: _Report) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False,
        recover=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise report.fatal("xml.well-formed", f"not well-formed XML: {exc}") from None


def _a(local: str) -> str:
    """Clark-notation Atom tag."""
    return f"{{{ATOM_NS}}}{local}"


def _text(el: etree._Element) -> str:
    return el.text or ""


def _normalize_rel(rel: str | None) -> str:
    """RFC 4287 section 4.2.7.2: no rel means alternate; IANA IRIs are equivalent."""
    if rel is None:
        return "alternate"
    if rel.startswith(_IANA_REL_PREFIX):
        return rel[len(_IANA_REL_PREFIX) :]
    return rel


# --------------------------------------------------------------------------
# Atom 1.0 (RFC 4287)
# --------------------------------------------------------------------------

_ATOM_FEED_AT_MOST_ONE = ("generator", "icon", "logo", "rights", "subtitle")
_ATOM_ENTRY_AT_MOST_ONE = ("content", "published", "rights", "source", "summary")
_ATOM_TEXT_CONSTRUCTS = ("title", "subtitle", "summary", "rights")


def _atom_exactly_one(
    el: etree._Element, local: str, where: str, scope: str, report: _Report
) -> etree._Element | None:
    found = el.findall(_a(local))
    if len(found) != 1:
        report.add(
            f"atom.{scope}.{local}",
            f"{where} must contain exactly one atom:{local} (found {len(found)})",
        )
    return found[0] if found else None


def _atom_at_most_one(
    el: etree._Element, names: Iterable[str], where: str, scope: str, report: _Report
) -> None:
    for local in names:
        n = len(el.findall(_a(local)))
        if n > 1:
            report.add(
                f"atom.{scope}.at-most-one",
                f"{where} must contain at most one atom:{local} (found {n})",
            )


def _atom_id(el: etree._Element, where: str, scope: str, report: _Report) -> str | None:
    id_el = _atom_exactly_one(el, "id", where, scope, report)
    if id_el is None:
        return None
    value = _text(id_el)
    problem = _absolute_iri_problem(value)
    if problem is not None:
        report.add("atom.id.iri", f"{where} atom:id: {problem}")
    return value


def _atom_links(el: etree._Element, where: str, report: _Report) -> list[etree._Element]:
    links = el.findall(_a("link"))
    alternates: Counter[tuple[str | None, str | None]] = Counter()
    for link in links:
        if not link.get("href"):
            report.add(
                "atom.link.href",
                f"{where} atom:link rel={link.get('rel')!r} has no (or an empty) href",
            )
        if _normalize_rel(link.get("rel")) == "alternate":
            alternates[(link.get("type"), link.get("hreflang"))] += 1
    for (type_, hreflang), n in alternates.items():
        if n > 1:
            report.add(
                "atom.link.alternate-unique",
                f"{where} has {n} rel=alternate links with type={type_!r} "
                f"hreflang={hreflang!r} (at most one allowed)",
            )
    return links


def _atom_text_constructs(el: etree._Element, where: str, report: _Report) -> None:
    for local in _ATOM_TEXT_CONSTRUCTS:
        for construct in el.findall(_a(local)):
            type_ = construct.get("type", "text")
            if type_ not in ("text", "html", "xhtml"):
                report.add(
                    "atom.text.type",
                    f"{where} atom:{local} type={type_!r} must be text, html or xhtml",
                )
            elif type_ == "xhtml":
                _atom_xhtml_div(construct, f"{where} atom:{local}", report)
            elif any(isinstance(c.tag, str) for c in construct):
                report.add(
                    "atom.text.type",
                    f"{where} atom:{local} type={type_!r} must not contain child elements",
                )


def _atom_xhtml_div(el: etree._Element, where: str, report: _Report) -> None:
    children = [c for c in el if isinstance(c.tag, str)]
    stray_text = _text(el).strip() or any((c.tail or "").strip() for c in el)
    if len(children) != 1 or children[0].tag != f"{{{XHTML_NS}}}div" or stray_text:
        report.add(
            "atom.text.xhtml-div",
            f"{where} type='xhtml' must contain exactly one xhtml:div and nothing else",
        )


def _atom_person_constructs(el: etree._Element, where: str, report: _Report) -> bool:
    """Check author/contributor children; return True if a named author exists."""
    has_named_author = False
    for local in ("author", "contributor"):
        for person in el.findall(_a(local)):
            names = person.findall(_a("name"))
            if len(names) != 1:
                report.add(
                    "atom.person.name",
                    f"{where} atom:{local} must contain exactly one atom:name (found {len(names)})",
                )
            elif local == "author" and _text(names[0]).strip():
                has_named_author = True
    return has_named_author


def _atom_categories(el: etree._Element, where: str, report: _Report) -> None:
    for category in el.findall(_a("category")):
        if not category.get("term"):
            report.add("atom.category.term", f"{where} atom:category has no term attribute")


def _atom_content(entry: etree._Element, where: str, report: _Report) -> None:
    for content in entry.findall(_a("content")):
        type_ = content.get("type", "text")
        if type_ not in ("text", "html", "xhtml"):
            if not _is_mime_type(type_):
                report.add(
                    "atom.content.type",
                    f"{where} atom:content type={type_!r} is neither text, html, "
                    "xhtml nor a MIME media type",
                )
            elif type_.lower().startswith(("multipart/", "message/")):
                report.add(
                    "atom.content.type",
                    f"{where} atom:content type={type_!r} must not be a composite type",
                )
        if content.get("src") is not None:
            if len(content) or _text(content).strip():
                report.add(
                    "atom.content.src-empty",
                    f"{where} atom:content has a src attribute so it must be empty",
                )
            if not entry.findall(_a("summary")):
                report.add(
                    "atom.entry.summary-required",
                    f"{where} has atom:content with src, so it must have an atom:summary",
                )
        elif type_ == "xhtml":
            _atom_xhtml_div(content, f"{where} atom:content", report)


def _media_groups(root: etree._Element, report: _Report) -> None:
    """Media RSS: a media:group gathers several media:content versions of one thing.

    The W3C Feed Validation Service rejects a media:group with fewer than two
    media:content children (feedgen writes one around every lone media:thumbnail).
    """
    for group in root.iter(f"{{{MEDIA_NS}}}group"):
        contents = len(group.findall(f"{{{MEDIA_NS}}}content"))
        if contents < 2:
            report.add(
                "media.group",
                f"media:group must contain at least two media:content (found {contents})",
            )


def check_atom(body: bytes, *, self_url: str | None = None) -> etree._Element:
    """Validate an Atom 1.0 document (RFC 4287); return the root element."""
    report = _Report("Atom feed")
    root = _parse_xml(body, report)
    if root.tag != _a("feed"):
        raise report.fatal("atom.root", f"root element is {root.tag!r}, expected {_a('feed')!r}")

    where = "feed"
    _atom_id(root, where, "feed", report)
    _atom_exactly_one(root, "title", where, "feed", report)
    _atom_exactly_one(root, "updated", where, "feed", report)
    _atom_at_most_one(root, _ATOM_FEED_AT_MOST_ONE, where, "feed", report)
    _atom_text_constructs(root, where, report)
    _atom_categories(root, where, report)
    feed_has_author = _atom_person_constructs(root, where, report)

    feed_links = _atom_links(root, where, report)
    self_links = [lk for lk in feed_links if _normalize_rel(lk.get("rel")) == "self"]
    if len(self_links) != 1:
        report.add(
            "atom.link.self",
            f"feed must contain exactly one atom:link rel='self' (found {len(self_links)})",
        )
    if self_url is not None:
        for link in self_links:
            if link.get("href") != self_url:
                report.add(
                    "atom.link.self-url",
                    f"feed rel='self' href {link.get('href')!r} != expected {self_url!r}",
                )

    seen_ids: dict[str, int] = {}
    entries_missing_author: list[str] = []
    for index, entry in enumerate(root.findall(_a("entry"))):
        id_els = entry.findall(_a("id"))
        where = f"entry[{index}]" + (f" ({_text(id_els[0])!r})" if id_els else "")
        entry_id = _atom_id(entry, where, "entry", report)
        if entry_id is not None:
            if entry_id in seen_ids:
                report.add(
                    "atom.entry.id-unique",
                    f"{where} repeats the atom:id of entry[{seen_ids[entry_id]}]",
                )
            else:
                seen_ids[entry_id] = index
        _atom_exactly_one(entry, "title", where, "entry", report)
        _atom_exactly_one(entry, "updated", where, "entry", report)
        _atom_at_most_one(entry, _ATOM_ENTRY_AT_MOST_ONE, where, "entry", report)
        _atom_text_constructs(entry, where, report)
        _atom_categories(entry, where, report)
        has_author = _atom_person_constructs(entry, where, report)
        source = entry.find(_a("source"))
        if source is not None:
            # RFC 4287 4.1.2: an author inside atom:source also satisfies the rule.
            source_author = _atom_person_constructs(source, f"{where} atom:source", report)
            has_author = has_author or source_author
        if not has_author:
            entries_missing_author.append(where)
        links = _atom_links(entry, where, report)
        if not entry.findall(_a("content")) and not any(
            _normalize_rel(lk.get("rel")) == "alternate" for lk in links
        ):
            report.add(
                "atom.entry.content-or-alternate",
                f"{where} has no atom:content, so it must have a link rel='alternate'",
            )
        _atom_content(entry, where, report)

    if not feed_has_author and entries_missing_author:
        report.add(
            "atom.author",
            "feed has no atom:author with a name, and neither do: "
            + ", ".join(entries_missing_author),
        )

    for local in ("updated", "published"):
        for date_el in root.iter(_a(local)):
            problem = _rfc3339_problem(_text(date_el))
            if problem is not None:
                report.add("atom.date", f"atom:{local}: {problem}")
    _media_groups(root, report)

    report.raise_if_any()
    return root


# --------------------------------------------------------------------------
# RSS 2.0
# --------------------------------------------------------------------------

_RSS_ITEM_AT_MOST_ONE = ("title", "link", "description", "pubDate", "guid", "author")


def _rss_date(el: etree._Element, where: str, report: _Report) -> None:
    problem = _rfc822_problem(_text(el))
    if problem is not None:
        report.add("rss.date", f"{where} <{el.tag}>: {problem}")


def _rss_categories(el: etree._Element, where: str, report: _Report) -> None:
    for category in el.findall("category"):
        if not _text(category).strip():
            report.add("rss.category", f"{where} <category> must have non-empty text")


def _rss_enclosure(enclosure: etree._Element, where: str, report: _Report) -> None:
    url = enclosure.get("url")
    if url is None:
        report.add("rss.enclosure.url", f"{where} <enclosure> has no url attribute")
    else:
        problem = _http_url_problem(url)
        if problem is not None:
            report.add("rss.enclosure.url", f"{where} <enclosure> url: {problem}")
    length = enclosure.get("length")
    if length is None or re.fullmatch(r"[0-9]+", length) is None:
        report.add(
            "rss.enclosure.length",
            f"{where} <enclosure> length={length!r} must be a non-negative integer",
        )
    type_ = enclosure.get("type")
    if type_ is None or not _is_mime_type(type_):
        report.add("rss.enclosure.type", f"{where} <enclosure> type={type_!r} must be a MIME type")


def _rss_guid(guid: etree._Element, where: str, report: _Report) -> None:
    value = _text(guid)
    permalink = guid.get("isPermaLink", "true")
    if permalink not in ("true", "false"):
        report.add(
            "rss.guid.ispermalink",
            f"{where} <guid> isPermaLink={permalink!r} must be 'true' or 'false'",
        )
    elif permalink == "true":
        problem = _http_url_problem(value)
        if problem is not None:
            report.add(
                "rss.guid.permalink",
                f"{where} <guid> is a permalink (isPermaLink absent or 'true') but {problem}",
            )
    if not value.strip():
        report.add("rss.guid.empty", f"{where} <guid> must not be empty")


def check_rss(body: bytes, *, self_url: str | None = None) -> etree._Element:
    """Validate an RSS 2.0 document; return the root ``rss`` element."""
    report = _Report("RSS feed")
    root = _parse_xml(body, report)
    if root.tag != "rss":
        raise report.fatal("rss.root", f"root element is {root.tag!r}, expected 'rss'")
    if root.get("version") != "2.0":
        report.add("rss.version", f"<rss> version={root.get('version')!r}, expected '2.0'")
    channels = root.findall("channel")
    if len(channels) != 1:
        raise report.fatal(
            "rss.channel", f"<rss> must contain exactly one <channel> (found {len(channels)})"
        )
    channel = channels[0]

    for name in ("title", "link", "description"):
        found = channel.findall(name)
        if len(found) != 1:
            report.add(
                f"rss.channel.{name}",
                f"<channel> must contain exactly one <{name}> (found {len(found)})",
            )
        elif name != "description" and not _text(found[0]).strip():
            report.add(f"rss.channel.{name}", f"<channel> <{name}> must not be empty")
        elif name == "link":
            problem = _http_url_problem(_text(found[0]))
            if problem is not None:
                report.add("rss.channel.link", f"<channel> <link>: {problem}")

    self_links = [
        lk for lk in channel.findall(_a("link")) if _normalize_rel(lk.get("rel")) == "self"
    ]
    if self_url is not None and not self_links:
        report.add(
            "rss.self-link",
            f"<channel> has no atom:link rel='self' (expected href {self_url!r})",
        )
    for link in self_links:
        href = link.get("href")
        if not href:
            report.add("rss.self-link", "<channel> atom:link rel='self' has no href")
        elif self_url is not None and href != self_url:
            report.add(
                "rss.self-link", f"atom:link rel='self' href {href!r} != expected {self_url!r}"
            )

    for name in ("pubDate", "lastBuildDate"):
        for date_el in channel.findall(name):
            _rss_date(date_el, "<channel>", report)
    _rss_categories(channel, "<channel>", report)

    seen_guids: dict[str, int] = {}
    for index, item in enumerate(channel.findall("item")):
        where = f"item[{index}]"
        for name in _RSS_ITEM_AT_MOST_ONE:
            n = len(item.findall(name))
            if n > 1:
                report.add(
                    "rss.item.at-most-one",
                    f"{where} must contain at most one <{name}> (found {n})",
                )
        if not any(_text(el).strip() for el in item.findall("title")) and not any(
            _text(el).strip() for el in item.findall("description")
        ):
            report.add(
                "rss.item.title-or-description",
                f"{where} must have a non-empty <title> or <description>",
            )
        for link in item.findall("link"):
            problem = _http_url_problem(_text(link))
            if problem is not None:
                report.add("rss.item.link", f"{where} <link>: {problem}")
        for guid in item.findall("guid"):
            _rss_guid(guid, where, report)
            value = _text(guid)
            if value in seen_guids:
                report.add(
                    "rss.guid.unique",
                    f"{where} <guid> {value!r} repeats the guid of item[{seen_guids[value]}]",
                )
            else:
                seen_guids[value] = index
        for date_el in item.findall("pubDate"):
            _rss_date(date_el, where, report)
        for enclosure in item.findall("enclosure"):
            _rss_enclosure(enclosure, where, report)
        _rss_categories(item, where, report)
    _media_groups(root, report)

    report.raise_if_any()
    return root


# --------------------------------------------------------------------------
# JSON Feed 1.1
# --------------------------------------------------------------------------

_JSON_FEED_URL_FIELDS = ("home_page_url", "feed_url", "next_url", "icon", "favicon")
_JSON_FEED_STRING_FIELDS = ("description", "user_comment", "language")
_JSON_ITEM_URL_FIELDS = ("url", "external_url", "image", "banner_image")
_JSON_ITEM_STRING_FIELDS = ("title", "summary", "language")


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate object key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _json_url_field(obj: dict[str, Any], key: str, where: str, report: _Report) -> None:
    if key not in obj:
        return
    value = obj[key]
    if not isinstance(value, str):
        report.add("json.url", f"{where} {key!r} must be a string, got {type(value).__name__}")
        return
    problem = _http_url_problem(value)
    if problem is not None:
        report.add("json.url", f"{where} {key!r}: {problem}")


def _json_string_field(obj: dict[str, Any], key: str, where: str, report: _Report) -> None:
    if key in obj and not isinstance(obj[key], str):
        report.add(
            "json.string", f"{where} {key!r} must be a string, got {type(obj[key]).__name__}"
        )


def _json_authors(obj: dict[str, Any], where: str, report: _Report) -> None:
    if "authors" not in obj:
        return
    authors = obj["authors"]
    if not isinstance(authors, list):
        report.add("json.authors", f"{where} 'authors' must be a list of objects")
        return
    for i, author in enumerate(authors):
        if not isinstance(author, dict):
            report.add("json.authors", f"{where} authors[{i}] must be an object")
            continue
        if not any(k in author for k in ("name", "url", "avatar")):
            report.add(
                "json.authors",
                f"{where} authors[{i}] must have at least one of name, url, avatar",
            )
        _json_string_field(author, "name", f"{where} authors[{i}]", report)
        for key in ("url", "avatar"):
            _json_url_field(author, key, f"{where} authors[{i}]", report)


def _json_item(item: dict[str, Any], where: str, report: _Report) -> None:
    html, text = item.get("content_html"), item.get("content_text")
    if html is None and text is None:
        report.add("json.item.content", f"{where} must have content_html and/or content_text")
    for key in ("content_html", "content_text"):
        _json_string_field(item, key, where, report)
    for key in _JSON_ITEM_URL_FIELDS:
        _json_url_field(item, key, where, report)
    for key in _JSON_ITEM_STRING_FIELDS:
        _json_string_field(item, key, where, report)
    for key in ("date_published", "date_modified"):
        if key not in item:
            continue
        value = item[key]
        problem = (
            _rfc3339_problem(value)
            if isinstance(value, str)
            else f"must be a string, got {type(value).__name__}"
        )
        if problem is not None:
            report.add("json.date", f"{where} {key!r}: {problem}")
    if "tags" in item:
        tags = item["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            report.add("json.tags", f"{where} 'tags' must be a list of strings, got {tags!r}")
    _json_authors(item, where, report)
    if "attachments" in item:
        attachments = item["attachments"]
        if not isinstance(attachments, list):
            report.add("json.attachments", f"{where} 'attachments' must be a list")
            return
        for i, att in enumerate(attachments):
            ok = (
                isinstance(att, dict)
                and isinstance(att.get("url"), str)
                and isinstance(att.get("mime_type"), str)
                and _is_mime_type(att["mime_type"])
            )
            if not ok:
                report.add(
                    "json.attachments",
                    f"{where} attachments[{i}] must be an object with string url "
                    "and a MIME type mime_type",
                )
            else:
                _json_url_field(att, "url", f"{where} attachments[{i}]", report)


def check_jsonfeed(body: bytes, *, self_url: str | None = None) -> dict[str, Any]:
    """Validate a JSON Feed 1.1 document; return the decoded top-level object."""
    report = _Report("JSON Feed")
    if body.startswith(b"\xef\xbb\xbf"):
        raise report.fatal("json.encoding", "body starts with a UTF-8 BOM (RFC 8259 8.1)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise report.fatal("json.encoding", f"body is not valid UTF-8: {exc}") from None
    try:
        doc: object = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant
        )
    except _DuplicateKeyError as exc:
        raise report.fatal("json.duplicate-key", str(exc)) from None
    except ValueError as exc:
        raise report.fatal("json.syntax", f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise report.fatal("json.root", f"top level must be an object, got {type(doc).__name__}")

    if doc.get("version") != JSONFEED_VERSION:
        report.add(
            "json.version", f"'version' is {doc.get('version')!r}, expected {JSONFEED_VERSION!r}"
        )
    title = doc.get("title")
    if not isinstance(title, str) or not title.strip():
        report.add("json.title", f"'title' must be a non-empty string, got {title!r}")
    for key in _JSON_FEED_URL_FIELDS:
        _json_url_field(doc, key, "feed", report)
    for key in _JSON_FEED_STRING_FIELDS:
        _json_string_field(doc, key, "feed", report)
    if "expired" in doc and not isinstance(doc["expired"], bool):
        report.add("json.expired", "feed 'expired' must be a boolean")
    _json_authors(doc, "feed", report)
    if self_url is not None and doc.get("feed_url") != self_url:
        report.add("json.feed-url", f"'feed_url' is {doc.get('feed_url')!r}, expected {self_url!r}")

    items = doc.get("items")
    if not isinstance(items, list):
        report.add("json.items", f"'items' must be a list, got {type(items).__name__}")
        items = []
    seen_ids: dict[str, int] = {}
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            report.add("json.item.object", f"{where} must be an object")
            continue
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            report.add(
                "json.item.id",
                f"{where} 'id' must be a non-empty string, got {item_id!r}",
            )
        elif item_id in seen_ids:
            report.add(
                "json.item.id-unique",
                f"{where} 'id' {item_id!r} repeats the id of items[{seen_ids[item_id]}]",
            )
        else:
            seen_ids[item_id] = index
        _json_item(item, where, report)

    report.raise_if_any()
    return doc


# --------------------------------------------------------------------------
# OPML 2.0
# --------------------------------------------------------------------------


def _iter_outlines(el: etree._Element) -> Iterator[etree._Element]:
    yield from el.iter("outline")


def check_opml(body: bytes) -> etree._Element:
    """Validate an OPML 2.0 subscription list; return the root ``opml`` element."""
    report = _Report("OPML")
    root = _parse_xml(body, report)
    if root.tag != "opml":
        raise report.fatal("opml.root", f"root element is {root.tag!r}, expected 'opml'")
    if root.get("version") != "2.0":
        report.add("opml.version", f"<opml> version={root.get('version')!r}, expected '2.0'")

    heads = root.findall("head")
    if len(heads) != 1:
        report.add("opml.head", f"<opml> must contain exactly one <head> (found {len(heads)})")
    for head in heads:
        titles = head.findall("title")
        if len(titles) != 1 or not _text(titles[0]).strip():
            report.add("opml.head.title", "<head> must contain exactly one non-empty <title>")
        for name in ("dateCreated", "dateModified"):
            for date_el in head.findall(name):
                problem = _rfc822_problem(_text(date_el))
                if problem is not None:
                    report.add("opml.date", f"<head> <{name}>: {problem}")

    bodies = root.findall("body")
    if len(bodies) != 1:
        report.add("opml.body", f"<opml> must contain exactly one <body> (found {len(bodies)})")
    for body_el in bodies:
        if not body_el.findall("outline"):
            report.add("opml.body.outline", "<body> must contain at least one <outline>")
        for index, outline in enumerate(_iter_outlines(body_el)):
            if (outline.get("type") or "").lower() != "rss":
                continue
            where = f"outline[{index}] type='rss'"
            if not (outline.get("text") or "").strip():
                report.add("opml.outline.text", f"{where} must have a non-empty text attribute")
            xml_url = outline.get("xmlUrl")
            if xml_url is None:
                report.add("opml.outline.xmlurl", f"{where} must have an xmlUrl attribute")
            else:
                problem = _http_url_problem(xml_url)
                if problem is not None:
                    report.add("opml.outline.xmlurl", f"{where} xmlUrl: {problem}")

    report.raise_if_any()
    return root


# --------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------


def check_feed(
    body: bytes, media_type: str, *, self_url: str | None = None
) -> etree._Element | dict[str, Any]:
    """Run the checker matching ``media_type`` (parameters such as charset ignored).

    ``self_url`` is ignored for OPML, which has no self link.  An unknown media
    type is itself a :class:`SpecViolation`.
    """
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence == ATOM_MEDIA_TYPE:
        return check_atom(body, self_url=self_url)
    if essence == RSS_MEDIA_TYPE:
        return check_rss(body, self_url=self_url)
    if essence == JSONFEED_MEDIA_TYPE:
        return check_jsonfeed(body, self_url=self_url)
    if essence == OPML_MEDIA_TYPE:
        return check_opml(body)
    raise SpecViolation(
        "feed",
        [Violation("media-type", f"unsupported feed media type {media_type!r}")],
    )
