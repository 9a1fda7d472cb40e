"""Tests of the spec checkers in tests/feedspec.py themselves.

Each format has one small, valid, hand-written document that must pass, and a
table of minimal mutations of it, each breaking exactly one rule.  A mutation
must make the checker raise ``SpecViolation`` naming that rule (and only that
rule, so the checkers are also shown not to cascade false positives).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from lxml import etree

from tests.feedspec import (
    ATOM_NS,
    SpecViolation,
    Violation,
    check_atom,
    check_feed,
    check_jsonfeed,
    check_opml,
    check_rss,
)

TextMutation = Callable[[str], str]
JsonMutation = Callable[[dict[str, Any]], None]


def _sub(*pairs: tuple[str, str]) -> TextMutation:
    """Replace the first occurrence of each ``old`` (which must exist) with ``new``."""

    def mutate(text: str) -> str:
        for old, new in pairs:
            assert old in text, f"mutation target {old!r} not in the valid document"
            text = text.replace(old, new, 1)
        return text

    return mutate


def _rep(old: str, new: str) -> TextMutation:
    return _sub((old, new))


def _assert_single_violation(exc: SpecViolation, rule: str, fragment: str) -> None:
    message = str(exc)
    assert f"[{rule}]" in message, message
    assert fragment in message, message
    assert exc.rules == {rule}, message


# --------------------------------------------------------------------------
# Atom
# --------------------------------------------------------------------------

ATOM_SELF = "https://feeds.example.com/atom"

ATOM_VALID = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"
      xml:lang="en">
  <id>tag:example.com,2026:feed</id>
  <title type="text">Example feed</title>
  <subtitle>Things &amp; stuff</subtitle>
  <updated>2026-03-22T09:00:00+09:00</updated>
  <author><name>Alice</name><email>alice@example.com</email></author>
  <link rel="self" type="application/atom+xml" href="https://feeds.example.com/atom"/>
  <link rel="alternate" type="text/html" href="https://example.com/"/>
  <category term="news" label="News"/>
  <entry>
    <id>tag:example.com,2026:entry-1</id>
    <title>First</title>
    <updated>2026-03-22T08:00:00Z</updated>
    <published>2026-03-21T08:30:00.123+09:00</published>
    <contributor><name>Carol</name></contributor>
    <link href="https://example.com/1"/>
    <link rel="alternate" type="text/html" hreflang="ja" href="https://example.com/ja/1"/>
    <link rel="enclosure" type="audio/mpeg" length="1234" href="https://example.com/1.mp3"/>
    <category term="tech"/>
    <summary type="html">&lt;p&gt;Hi&lt;/p&gt;</summary>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hello</p></div></content>
  </entry>
  <entry>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <title>Second</title>
    <updated>2026-03-21T10:00:00-05:00</updated>
    <link rel="alternate" type="text/html" href="https://example.com/2"/>
    <summary>An image</summary>
    <content type="image/png" src="https://example.com/2.png"/>
    <media:thumbnail url="https://example.com/2-small.png"/>
    <media:group>
      <media:content url="https://example.com/2.png" type="image/png"/>
      <media:content url="https://example.com/2.webp" type="image/webp"/>
    </media:group>
  </entry>
  <entry>
    <id>https://example.com/3</id>
    <title>Third</title>
    <updated>2026-03-20T23:59:60Z</updated>
    <author><name>Bob</name></author>
    <link rel="http://www.iana.org/assignments/relation/alternate" href="https://example.com/3"/>
  </entry>
</feed>
"""

ATOM_CASES = [
    pytest.param(_rep("</feed>", ""), "xml.well-formed", "not well-formed", id="malformed"),
    pytest.param(
        _rep('xmlns="http://www.w3.org/2005/Atom"', 'xmlns="http://purl.org/atom/ns#"'),
        "atom.root",
        "expected '{http://www.w3.org/2005/Atom}feed'",
        id="atom-0.3-namespace",
    ),
    pytest.param(
        _rep("<id>tag:example.com,2026:feed</id>", ""),
        "atom.feed.id",
        "exactly one atom:id (found 0)",
        id="feed-id-missing",
    ),
    pytest.param(
        _rep("<id>tag:example.com,2026:feed</id>", "<id>tag:example.com,2026:feed</id>" * 2),
        "atom.feed.id",
        "exactly one atom:id (found 2)",
        id="feed-id-twice",
    ),
    pytest.param(
        _rep("tag:example.com,2026:feed", "feed-1"),
        "atom.id.iri",
        "not an absolute IRI",
        id="feed-id-relative",
    ),
    pytest.param(
        _rep("tag:example.com,2026:feed", "tag:example.com:feed"),
        "atom.id.iri",
        "RFC 4151",
        id="feed-id-tag-without-date",
    ),
    pytest.param(
        _rep("tag:example.com,2026:feed", "tag:example.com,2026:my feed"),
        "atom.id.iri",
        "whitespace",
        id="feed-id-whitespace",
    ),
    pytest.param(
        _rep('<title type="text">Example feed</title>', ""),
        "atom.feed.title",
        "exactly one atom:title (found 0)",
        id="feed-title-missing",
    ),
    pytest.param(
        _rep("<updated>2026-03-22T09:00:00+09:00</updated>", ""),
        "atom.feed.updated",
        "exactly one atom:updated (found 0)",
        id="feed-updated-missing",
    ),
    pytest.param(
        _rep("2026-03-22T09:00:00+09:00", "2026-03-22T09:00:00"),
        "atom.date",
        "no timezone offset (naive",
        id="naive-date",
    ),
    pytest.param(
        _rep("2026-03-21T08:30:00.123+09:00", "2026-03-21 08:30:00.123+09:00"),
        "atom.date",
        "not an RFC 3339 date-time",
        id="published-space-separator",
    ),
    pytest.param(
        _rep("2026-03-21T08:30:00.123+09:00", "2026-03-21T08:30:00"),
        "atom.date",
        "atom:published",
        id="published-naive",
    ),
    pytest.param(
        _rep("2026-03-22T08:00:00Z", "2026-03-22T08:00:00z"),
        "atom.date",
        "not an RFC 3339 date-time",
        id="lowercase-z",
    ),
    pytest.param(
        _rep("2026-03-22T08:00:00Z", "2026-02-30T08:00:00Z"),
        "atom.date",
        "out-of-range",
        id="february-30",
    ),
    pytest.param(
        _rep("2026-03-21T10:00:00-05:00", "2026-03-21T10:00:00-0500"),
        "atom.date",
        "not an RFC 3339 date-time",
        id="offset-without-colon",
    ),
    pytest.param(
        _rep("<author><name>Alice</name><email>alice@example.com</email></author>", ""),
        "atom.author",
        "neither do: entry[0]",
        id="no-author-for-some-entries",
    ),
    pytest.param(
        _rep("<contributor><name>Carol</name></contributor>", "<contributor/>"),
        "atom.person.name",
        "exactly one atom:name (found 0)",
        id="person-without-name",
    ),
    pytest.param(
        _rep(
            '<link rel="self" type="application/atom+xml" href="https://feeds.example.com/atom"/>',
            "",
        ),
        "atom.link.self",
        "exactly one atom:link rel='self' (found 0)",
        id="self-link-missing",
    ),
    pytest.param(
        _rep('href="https://feeds.example.com/atom"', 'href="http://feeds.example.com/atom"'),
        "atom.link.self-url",
        "!= expected 'https://feeds.example.com/atom'",
        id="self-link-mismatch",
    ),
    pytest.param(
        _rep('<link rel="alternate" type="text/html" href="https://example.com/"/>', "<link/>"),
        "atom.link.href",
        "has no (or an empty) href",
        id="link-without-href",
    ),
    pytest.param(
        _rep(
            '<link rel="enclosure" type="audio/mpeg" length="1234" href="https://example.com/1.mp3"/>',
            '<link rel="enclosure" type="audio/mpeg" length="1234"/>',
        ),
        "atom.link.href",
        "rel='enclosure'",
        id="enclosure-without-href",
    ),
    pytest.param(
        _rep(
            '<link rel="alternate" type="text/html" href="https://example.com/"/>',
            '<link rel="alternate" type="text/html" href="https://example.com/"/>'
            '<link rel="alternate" type="text/html" href="https://example.com/other"/>',
        ),
        "atom.link.alternate-unique",
        "feed has 2 rel=alternate links with type='text/html'",
        id="feed-duplicate-alternate",
    ),
    pytest.param(
        _rep(
            '<link href="https://example.com/1"/>',
            '<link href="https://example.com/1"/><link rel="alternate" href="https://x.example/"/>',
        ),
        "atom.link.alternate-unique",
        "entry[0] ('tag:example.com,2026:entry-1') has 2 rel=alternate links",
        id="entry-duplicate-alternate",
    ),
    pytest.param(
        _rep("<id>https://example.com/3</id>", "<id>tag:example.com,2026:entry-1</id>"),
        "atom.entry.id-unique",
        "entry[2] ('tag:example.com,2026:entry-1') repeats the atom:id of entry[0]",
        id="duplicate-entry-id",
    ),
    pytest.param(
        _rep("<id>https://example.com/3</id>", ""),
        "atom.entry.id",
        "entry[2] must contain exactly one atom:id (found 0)",
        id="entry-id-missing",
    ),
    pytest.param(
        _rep("<id>https://example.com/3</id>", "<id>/3</id>"),
        "atom.id.iri",
        "'/3' is not an absolute IRI",
        id="entry-id-relative",
    ),
    pytest.param(
        _rep("<id>https://example.com/3</id>", "<id>urn:x</id>"),
        "atom.id.iri",
        "RFC 8141",
        id="entry-id-bad-urn",
    ),
    pytest.param(
        _rep("<title>Second</title>", ""),
        "atom.entry.title",
        "entry[1] ('urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a') must contain exactly one",
        id="entry-title-missing",
    ),
    pytest.param(
        _rep("<updated>2026-03-21T10:00:00-05:00</updated>", ""),
        "atom.entry.updated",
        "exactly one atom:updated (found 0)",
        id="entry-updated-missing",
    ),
    pytest.param(
        _rep(
            '<link rel="http://www.iana.org/assignments/relation/alternate" '
            'href="https://example.com/3"/>',
            "",
        ),
        "atom.entry.content-or-alternate",
        "entry[2] ('https://example.com/3') has no atom:content",
        id="no-content-no-alternate",
    ),
    pytest.param(
        _rep(
            '<content type="image/png" src="https://example.com/2.png"/>',
            '<content type="image/png" src="https://example.com/2.png">iVBORw0KGgo=</content>',
        ),
        "atom.content.src-empty",
        "has a src attribute so it must be empty",
        id="content-src-with-body",
    ),
    pytest.param(
        _rep("<summary>An image</summary>", ""),
        "atom.entry.summary-required",
        "content with src, so it must have an atom:summary",
        id="content-src-without-summary",
    ),
    pytest.param(
        _rep('type="image/png"', 'type="image"'),
        "atom.content.type",
        "neither text, html, xhtml nor a MIME media type",
        id="content-type-not-mime",
    ),
    pytest.param(
        _rep('type="image/png"', 'type="multipart/mixed"'),
        "atom.content.type",
        "composite type",
        id="content-type-composite",
    ),
    pytest.param(
        _rep("<subtitle>", '<subtitle type="markdown">'),
        "atom.text.type",
        "atom:subtitle type='markdown' must be text, html or xhtml",
        id="text-construct-bad-type",
    ),
    pytest.param(
        _rep("<title>First</title>", "<title>First <b>bold</b></title>"),
        "atom.text.type",
        "must not contain child elements",
        id="text-construct-with-markup",
    ),
    pytest.param(
        _sub(('<div xmlns="http://www.w3.org/1999/xhtml">', ""), ("</p></div>", "</p>")),
        "atom.text.xhtml-div",
        "exactly one xhtml:div",
        id="xhtml-content-without-div",
    ),
    pytest.param(
        _rep('<category term="tech"/>', "<category/>"),
        "atom.category.term",
        "atom:category has no term attribute",
        id="category-without-term",
    ),
    pytest.param(
        _rep("<summary>An image</summary>", "<summary>An image</summary><summary>B</summary>"),
        "atom.entry.at-most-one",
        "at most one atom:summary (found 2)",
        id="entry-two-summaries",
    ),
    pytest.param(
        _rep("<subtitle>", "<subtitle>Again</subtitle><subtitle>"),
        "atom.feed.at-most-one",
        "at most one atom:subtitle (found 2)",
        id="feed-two-subtitles",
    ),
    pytest.param(
        _rep(
            '<media:thumbnail url="https://example.com/2-small.png"/>',
            '<media:group><media:thumbnail url="https://example.com/2-small.png"/></media:group>',
        ),
        "media.group",
        "at least two media:content (found 0)",
        id="media-group-around-a-lone-thumbnail",
    ),
    pytest.param(
        _rep('<media:content url="https://example.com/2.webp" type="image/webp"/>', ""),
        "media.group",
        "at least two media:content (found 1)",
        id="media-group-of-one-content",
    ),
]


def test_atom_valid_document_passes() -> None:
    root = check_atom(ATOM_VALID.encode(), self_url=ATOM_SELF)
    assert root.tag == f"{{{ATOM_NS}}}feed"
    assert len(root.findall(f"{{{ATOM_NS}}}entry")) == 3


def test_atom_self_url_is_optional() -> None:
    check_atom(ATOM_VALID.encode())


@pytest.mark.parametrize(("mutation", "rule", "fragment"), ATOM_CASES)
def test_atom_violation(mutation: TextMutation, rule: str, fragment: str) -> None:
    with pytest.raises(SpecViolation) as info:
        check_atom(mutation(ATOM_VALID).encode(), self_url=ATOM_SELF)
    _assert_single_violation(info.value, rule, fragment)


def test_atom_authors_in_every_entry_suffice() -> None:
    doc = _sub(
        ("<author><name>Alice</name><email>alice@example.com</email></author>", ""),
        ("<title>First</title>", "<title>First</title><author><name>A</name></author>"),
        (
            "<title>Second</title>",
            "<title>Second</title><source><author><name>S</name></author></source>",
        ),
    )(ATOM_VALID)
    check_atom(doc.encode(), self_url=ATOM_SELF)


@pytest.mark.parametrize(
    "atom_id",
    [
        "tag:alice@example.com,2026-03-22:entry/1",
        "tag:example.com,2026-03:x#frag",
        "TAG:example.com,2026:",
        "urn:isbn:0451450523",
        "mailto:alice@example.com",
        "http://example.com/a?b=c",
    ],
)
def test_atom_accepts_absolute_iris(atom_id: str) -> None:
    doc = ATOM_VALID.replace("tag:example.com,2026:feed", atom_id, 1)
    check_atom(doc.encode(), self_url=ATOM_SELF)


def test_atom_does_not_resolve_external_entities() -> None:
    doc = ATOM_VALID.replace(
        '<?xml version="1.0" encoding="utf-8"?>',
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<!DOCTYPE feed [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    ).replace("<title>Third</title>", "<title>&xxe;</title>")
    root = check_atom(doc.encode(), self_url=ATOM_SELF)
    serialized = etree.tostring(root)
    assert b"&xxe;" in serialized
    assert b"root:" not in serialized


# --------------------------------------------------------------------------
# RSS
# --------------------------------------------------------------------------

RSS_SELF = "https://feeds.example.com/rss"

RSS_VALID = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom"
     xmlns:media="http://search.yahoo.com/mrss/">
  <channel>
    <title>Example feed</title>
    <link>https://example.com/</link>
    <description>Things</description>
    <atom:link rel="self" type="application/rss+xml" href="https://feeds.example.com/rss"/>
    <pubDate>Sun, 22 Mar 2026 09:00:00 +0900</pubDate>
    <lastBuildDate>22 Mar 2026 01:00 GMT</lastBuildDate>
    <category>news</category>
    <item>
      <title>First</title>
      <link>https://example.com/1</link>
      <description>&lt;p&gt;Hello&lt;/p&gt;</description>
      <guid>https://example.com/1</guid>
      <pubDate>Sat, 21 Mar 2026 18:30:00 -0500</pubDate>
      <category domain="https://example.com/tags">tech</category>
      <enclosure url="https://example.com/1.mp3" length="1234" type="audio/mpeg"/>
      <media:thumbnail url="https://example.com/1.jpg"/>
      <media:group>
        <media:content url="https://example.com/1.mp3" type="audio/mpeg"/>
        <media:content url="https://example.com/1.ogg" type="audio/ogg"/>
      </media:group>
    </item>
    <item>
      <description>Untitled note</description>
      <guid isPermaLink="false">note-2</guid>
      <pubDate>Fri, 20 Mar 2026 12:00:00 EST</pubDate>
    </item>
    <item>
      <title>Third</title>
      <guid isPermaLink="true">http://example.com/3</guid>
    </item>
  </channel>
</rss>
"""

RSS_CASES = [
    pytest.param(_rep("</rss>", "</rsss>"), "xml.well-formed", "not well-formed", id="malformed"),
    pytest.param(
        _sub(("<rss ", "<feed "), ("</rss>", "</feed>")),
        "rss.root",
        "expected 'rss'",
        id="wrong-root",
    ),
    pytest.param(
        _rep('version="2.0"', 'version="0.92"'),
        "rss.version",
        "version='0.92', expected '2.0'",
        id="wrong-version",
    ),
    pytest.param(
        _rep("</channel>", "</channel><channel/>"),
        "rss.channel",
        "exactly one <channel> (found 2)",
        id="two-channels",
    ),
    pytest.param(
        _rep("<title>Example feed</title>", ""),
        "rss.channel.title",
        "exactly one <title> (found 0)",
        id="channel-title-missing",
    ),
    pytest.param(
        _rep("<title>Example feed</title>", "<title> </title>"),
        "rss.channel.title",
        "<title> must not be empty",
        id="channel-title-empty",
    ),
    pytest.param(
        _rep("<link>https://example.com/</link>", ""),
        "rss.channel.link",
        "exactly one <link> (found 0)",
        id="channel-link-missing",
    ),
    pytest.param(
        _rep("<link>https://example.com/</link>", "<link>/index.html</link>"),
        "rss.channel.link",
        "'/index.html' is not an absolute http(s) URL",
        id="channel-link-relative",
    ),
    pytest.param(
        _rep("<link>https://example.com/</link>", "<link>ftp://example.com/</link>"),
        "rss.channel.link",
        "not an absolute http(s) URL",
        id="channel-link-ftp",
    ),
    pytest.param(
        _rep("<description>Things</description>", ""),
        "rss.channel.description",
        "exactly one <description> (found 0)",
        id="channel-description-missing",
    ),
    pytest.param(
        _rep('href="https://feeds.example.com/rss"', 'href="https://feeds.example.com/rss/"'),
        "rss.self-link",
        "!= expected 'https://feeds.example.com/rss'",
        id="self-link-mismatch",
    ),
    pytest.param(
        _rep(
            '<atom:link rel="self" type="application/rss+xml" '
            'href="https://feeds.example.com/rss"/>',
            "",
        ),
        "rss.self-link",
        "no atom:link rel='self'",
        id="self-link-missing",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 +0900", "Sun, 22 Mar 2026 09:00:00"),
        "rss.date",
        "not an RFC 822 date",
        id="pubdate-without-zone",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 +0900", "Sun, 22 Mar 2026 09:00:00 -0000"),
        "rss.date",
        "no zone information",
        id="pubdate-unknown-zone",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 +0900", "Sun, 22 Mar 26 09:00:00 +0900"),
        "rss.date",
        "4-digit year",
        id="pubdate-two-digit-year",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 +0900", "2026-03-22T09:00:00+09:00"),
        "rss.date",
        "not an RFC 822 date",
        id="pubdate-iso",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 +0900", "Mon, 22 Mar 2026 09:00:00 +0900"),
        "rss.date",
        "day-of-week 'Mon' does not match the date (it is a Sun)",
        id="pubdate-wrong-weekday",
    ),
    pytest.param(
        _rep("22 Mar 2026 01:00 GMT", "31 Feb 2026 01:00 GMT"),
        "rss.date",
        "<lastBuildDate>",
        id="lastbuilddate-invalid-day",
    ),
    pytest.param(
        _rep("Sat, 21 Mar 2026 18:30:00 -0500", "Sat, 21 Mar 2026 18:30:00"),
        "rss.date",
        "item[0] <pubDate>",
        id="item-pubdate-without-zone",
    ),
    pytest.param(
        _rep("<description>Untitled note</description>", ""),
        "rss.item.title-or-description",
        "item[1] must have a non-empty <title> or <description>",
        id="item-without-title-or-description",
    ),
    pytest.param(
        _rep(
            '<guid isPermaLink="true">http://example.com/3</guid>',
            "<guid>https://example.com/1</guid>",
        ),
        "rss.guid.unique",
        "item[2] <guid> 'https://example.com/1' repeats the guid of item[0]",
        id="duplicate-guid",
    ),
    pytest.param(
        _rep('<guid isPermaLink="false">note-2</guid>', "<guid>note-2</guid>"),
        "rss.guid.permalink",
        "is a permalink (isPermaLink absent or 'true') but 'note-2' is not an absolute",
        id="guid-permalink-not-url",
    ),
    pytest.param(
        _rep('isPermaLink="true"', 'isPermaLink="yes"'),
        "rss.guid.ispermalink",
        "isPermaLink='yes' must be 'true' or 'false'",
        id="guid-ispermalink-yes",
    ),
    pytest.param(
        _rep('<guid isPermaLink="false">note-2</guid>', '<guid isPermaLink="false"></guid>'),
        "rss.guid.empty",
        "<guid> must not be empty",
        id="guid-empty",
    ),
    pytest.param(
        _rep('url="https://example.com/1.mp3" ', ""),
        "rss.enclosure.url",
        "no url attribute",
        id="enclosure-without-url",
    ),
    pytest.param(
        _rep('length="1234" ', ""),
        "rss.enclosure.length",
        "length=None must be a non-negative integer",
        id="enclosure-without-length",
    ),
    pytest.param(
        _rep('length="1234"', 'length="1.2kB"'),
        "rss.enclosure.length",
        "length='1.2kB'",
        id="enclosure-length-not-integer",
    ),
    pytest.param(
        _rep(' type="audio/mpeg"', ""),
        "rss.enclosure.type",
        "type=None must be a MIME type",
        id="enclosure-without-type",
    ),
    pytest.param(
        _rep("<link>https://example.com/1</link>", "<link>/1</link>"),
        "rss.item.link",
        "item[0] <link>: '/1' is not an absolute http(s) URL",
        id="item-link-relative",
    ),
    pytest.param(
        _rep("<category>news</category>", "<category>  </category>"),
        "rss.category",
        "<category> must have non-empty text",
        id="empty-category",
    ),
    pytest.param(
        _rep("<title>Third</title>", "<title>Third</title><title>3</title>"),
        "rss.item.at-most-one",
        "item[2] must contain at most one <title> (found 2)",
        id="item-two-titles",
    ),
    pytest.param(
        _rep(
            '<media:thumbnail url="https://example.com/1.jpg"/>',
            '<media:group><media:thumbnail url="https://example.com/1.jpg"/></media:group>',
        ),
        "media.group",
        "at least two media:content (found 0)",
        id="media-group-around-a-lone-thumbnail",
    ),
]


def test_rss_valid_document_passes() -> None:
    root = check_rss(RSS_VALID.encode(), self_url=RSS_SELF)
    assert root.tag == "rss"
    assert len(root.findall("channel/item")) == 3


def test_rss_self_link_optional_without_self_url() -> None:
    doc = _rep(
        '<atom:link rel="self" type="application/rss+xml" href="https://feeds.example.com/rss"/>',
        "",
    )(RSS_VALID)
    check_rss(doc.encode())


@pytest.mark.parametrize(("mutation", "rule", "fragment"), RSS_CASES)
def test_rss_violation(mutation: TextMutation, rule: str, fragment: str) -> None:
    with pytest.raises(SpecViolation) as info:
        check_rss(mutation(RSS_VALID).encode(), self_url=RSS_SELF)
    _assert_single_violation(info.value, rule, fragment)


# --------------------------------------------------------------------------
# JSON Feed
# --------------------------------------------------------------------------

JSON_SELF = "https://feeds.example.com/feed.json"

JSON_VALID: dict[str, Any] = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "Example feed",
    "home_page_url": "https://example.com/",
    "feed_url": "https://feeds.example.com/feed.json",
    "description": "Things",
    "icon": "https://example.com/icon.png",
    "language": "en",
    "authors": [{"name": "Alice", "url": "https://example.com/alice"}],
    "items": [
        {
            "id": "https://example.com/1",
            "url": "https://example.com/1",
            "title": "First",
            "content_html": "<p>Hello</p>",
            "summary": "Hello",
            "image": "https://example.com/1.png",
            "date_published": "2026-03-21T08:30:00.123+09:00",
            "date_modified": "2026-03-22T09:00:00Z",
            "tags": ["news", "tech"],
            "authors": [{"name": "Bob"}],
            "attachments": [
                {"url": "https://example.com/1.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 1}
            ],
        },
        {"id": "2", "content_text": "Untitled note", "external_url": "https://example.org/x"},
    ],
}


def _jset(*path: str | int, value: object) -> JsonMutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _jdel(*path: str | int) -> JsonMutation:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


JSON_CASES = [
    pytest.param(
        _jset("version", value="https://jsonfeed.org/version/1"),
        "json.version",
        "expected 'https://jsonfeed.org/version/1.1'",
        id="version-1.0",
    ),
    pytest.param(_jdel("version"), "json.version", "'version' is None", id="version-missing"),
    pytest.param(_jset("title", value=""), "json.title", "non-empty string", id="title-empty"),
    pytest.param(_jdel("title"), "json.title", "got None", id="title-missing"),
    pytest.param(
        _jset("items", value={}), "json.items", "must be a list, got dict", id="items-dict"
    ),
    pytest.param(_jdel("items"), "json.items", "must be a list", id="items-missing"),
    pytest.param(_jset("items", 1, value="x"), "json.item.object", "items[1]", id="item-string"),
    pytest.param(
        _jset("items", 1, "id", value=2),
        "json.item.id",
        "items[1] 'id' must be a non-empty string, got 2",
        id="id-is-number",
    ),
    pytest.param(_jdel("items", 1, "id"), "json.item.id", "got None", id="id-missing"),
    pytest.param(_jset("items", 1, "id", value=""), "json.item.id", "got ''", id="id-empty"),
    pytest.param(
        _jset("items", 1, "id", value="https://example.com/1"),
        "json.item.id-unique",
        "repeats the id of items[0]",
        id="duplicate-id",
    ),
    pytest.param(
        _jdel("items", 1, "content_text"),
        "json.item.content",
        "items[1] must have content_html and/or content_text",
        id="no-content",
    ),
    pytest.param(
        _jset("items", 0, "content_html", value=["<p>"]),
        "json.string",
        "'content_html' must be a string, got list",
        id="content-html-list",
    ),
    pytest.param(
        _jset("items", 0, "summary", value=1),
        "json.string",
        "'summary' must be a string",
        id="summary-number",
    ),
    pytest.param(
        _jset("items", 0, "url", value="/1"),
        "json.url",
        "items[0] 'url': '/1' is not an absolute http(s) URL",
        id="url-relative",
    ),
    pytest.param(
        _jset("items", 1, "external_url", value=3),
        "json.url",
        "'external_url' must be a string, got int",
        id="external-url-number",
    ),
    pytest.param(
        _jset("items", 0, "image", value="1.png"),
        "json.url",
        "'image': '1.png'",
        id="image-relative",
    ),
    pytest.param(
        _jset("home_page_url", value=None),
        "json.url",
        "'home_page_url' must be a string, got NoneType",
        id="home-page-url-null",
    ),
    pytest.param(
        _jset("feed_url", value="https://feeds.example.com/feed.json?page=1"),
        "json.feed-url",
        "expected 'https://feeds.example.com/feed.json'",
        id="self-url-mismatch",
    ),
    pytest.param(_jdel("feed_url"), "json.feed-url", "'feed_url' is None", id="feed-url-missing"),
    pytest.param(
        _jset("items", 0, "date_published", value="2026-03-22T09:00:00"),
        "json.date",
        "no timezone offset (naive",
        id="naive-date",
    ),
    pytest.param(
        _jset("items", 0, "date_modified", value="Sun, 22 Mar 2026 09:00:00 +0900"),
        "json.date",
        "not an RFC 3339 date-time",
        id="rfc822-date",
    ),
    pytest.param(
        _jset("items", 0, "date_modified", value=1774137600),
        "json.date",
        "must be a string, got int",
        id="epoch-date",
    ),
    pytest.param(
        _jset("items", 0, "tags", value="news"),
        "json.tags",
        "must be a list of strings",
        id="tags-string",
    ),
    pytest.param(
        _jset("items", 0, "tags", value=["news", 1]),
        "json.tags",
        "must be a list of strings",
        id="tags-with-number",
    ),
    pytest.param(
        _jset("authors", value={"name": "Alice"}),
        "json.authors",
        "feed 'authors' must be a list of objects",
        id="authors-object",
    ),
    pytest.param(
        _jset("items", 0, "authors", value=["Bob"]),
        "json.authors",
        "items[0] authors[0] must be an object",
        id="authors-strings",
    ),
    pytest.param(
        _jset("items", 0, "authors", value=[{}]),
        "json.authors",
        "at least one of name, url, avatar",
        id="author-empty",
    ),
    pytest.param(
        _jdel("items", 0, "attachments", 0, "mime_type"),
        "json.attachments",
        "attachments[0] must be an object with string url",
        id="attachment-without-mime-type",
    ),
    pytest.param(
        _jset("expired", value="no"),
        "json.expired",
        "'expired' must be a boolean",
        id="expired-string",
    ),
]


def test_jsonfeed_valid_document_passes() -> None:
    doc = check_jsonfeed(_json_bytes(JSON_VALID), self_url=JSON_SELF)
    assert doc == JSON_VALID


@pytest.mark.parametrize(("mutation", "rule", "fragment"), JSON_CASES)
def test_jsonfeed_violation(mutation: JsonMutation, rule: str, fragment: str) -> None:
    doc = copy.deepcopy(JSON_VALID)
    mutation(doc)
    with pytest.raises(SpecViolation) as info:
        check_jsonfeed(_json_bytes(doc), self_url=JSON_SELF)
    _assert_single_violation(info.value, rule, fragment)


@pytest.mark.parametrize(
    ("body", "rule", "fragment"),
    [
        pytest.param(b"\xef\xbb\xbf{}", "json.encoding", "BOM", id="bom"),
        pytest.param(b'{"title": "\xff"}', "json.encoding", "not valid UTF-8", id="latin-1"),
        pytest.param(b'{"items": [],}', "json.syntax", "not valid JSON", id="trailing-comma"),
        pytest.param(b'{"x": NaN}', "json.syntax", "NaN is not valid JSON", id="nan"),
        pytest.param(b'{"id": 1, "id": 2}', "json.duplicate-key", "'id'", id="duplicate-key"),
        pytest.param(b"[]", "json.root", "must be an object, got list", id="array"),
    ],
)
def test_jsonfeed_rejects_bad_json(body: bytes, rule: str, fragment: str) -> None:
    with pytest.raises(SpecViolation) as info:
        check_jsonfeed(body)
    _assert_single_violation(info.value, rule, fragment)


# --------------------------------------------------------------------------
# OPML
# --------------------------------------------------------------------------

OPML_VALID = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head>
    <title>feedbridge subscriptions</title>
    <dateCreated>Sun, 22 Mar 2026 09:00:00 GMT</dateCreated>
  </head>
  <body>
    <outline text="Tech">
      <outline type="rss" text="Example" xmlUrl="https://example.com/feed.xml"
               htmlUrl="https://example.com/"/>
    </outline>
    <outline type="rss" text="Other" xmlUrl="http://other.example.org/rss"/>
  </body>
</opml>
"""

OPML_HEAD = """<head>
    <title>feedbridge subscriptions</title>
    <dateCreated>Sun, 22 Mar 2026 09:00:00 GMT</dateCreated>
  </head>"""

OPML_CASES = [
    pytest.param(_rep("</opml>", ""), "xml.well-formed", "not well-formed", id="malformed"),
    pytest.param(
        _sub(("<opml ", "<outlines "), ("</opml>", "</outlines>")),
        "opml.root",
        "expected 'opml'",
        id="wrong-root",
    ),
    pytest.param(
        _rep('version="2.0"', 'version="1.0"'),
        "opml.version",
        "version='1.0', expected '2.0'",
        id="version-1.0",
    ),
    pytest.param(_rep(OPML_HEAD, ""), "opml.head", "exactly one <head> (found 0)", id="no-head"),
    pytest.param(
        _rep("<title>feedbridge subscriptions</title>", ""),
        "opml.head.title",
        "exactly one non-empty <title>",
        id="no-title",
    ),
    pytest.param(
        _rep("Sun, 22 Mar 2026 09:00:00 GMT", "2026-03-22"),
        "opml.date",
        "<dateCreated>",
        id="date-created-iso",
    ),
    pytest.param(
        _sub(("<body>", ""), ("</body>", "")),
        "opml.body",
        "exactly one <body> (found 0)",
        id="no-body",
    ),
    pytest.param(
        _sub(("<body>", "<body/><unused>"), ("</body>", "</unused>")),
        "opml.body.outline",
        "at least one <outline>",
        id="empty-body",
    ),
    pytest.param(
        _rep('text="Example" ', ""),
        "opml.outline.text",
        "outline[1] type='rss' must have a non-empty text attribute",
        id="rss-outline-without-text",
    ),
    pytest.param(
        _rep(' xmlUrl="http://other.example.org/rss"', ""),
        "opml.outline.xmlurl",
        "outline[2] type='rss' must have an xmlUrl attribute",
        id="rss-outline-without-xmlurl",
    ),
    pytest.param(
        _rep('xmlUrl="https://example.com/feed.xml"', 'xmlUrl="feed.xml"'),
        "opml.outline.xmlurl",
        "'feed.xml' is not an absolute http(s) URL",
        id="rss-outline-relative-xmlurl",
    ),
]


def test_opml_valid_document_passes() -> None:
    root = check_opml(OPML_VALID.encode())
    assert root.tag == "opml"
    assert len(list(root.iter("outline"))) == 3


@pytest.mark.parametrize(("mutation", "rule", "fragment"), OPML_CASES)
def test_opml_violation(mutation: TextMutation, rule: str, fragment: str) -> None:
    with pytest.raises(SpecViolation) as info:
        check_opml(mutation(OPML_VALID).encode())
    _assert_single_violation(info.value, rule, fragment)


# --------------------------------------------------------------------------
# Cross-cutting behaviour
# --------------------------------------------------------------------------


def test_all_violations_are_reported_at_once() -> None:
    doc = _sub(
        ("2026-03-22T09:00:00+09:00", "2026-03-22T09:00:00"),
        ("<id>https://example.com/3</id>", "<id>tag:example.com,2026:entry-1</id>"),
        ('href="https://feeds.example.com/atom"', 'href="https://feeds.example.com/other"'),
    )(ATOM_VALID)
    with pytest.raises(SpecViolation) as info:
        check_atom(doc.encode(), self_url=ATOM_SELF)
    exc = info.value
    assert exc.rules == {"atom.date", "atom.entry.id-unique", "atom.link.self-url"}
    message = str(exc)
    assert message.startswith("Atom feed: 3 spec violation(s):")
    assert all(f"  - {v}" in message for v in exc.violations)


def test_spec_violation_is_an_assertion_error() -> None:
    exc = SpecViolation("RSS feed", [Violation("rss.date", "bad date")])
    assert isinstance(exc, AssertionError)
    assert str(exc) == "RSS feed: 1 spec violation(s):\n  - [rss.date] bad date"


@pytest.mark.parametrize(
    ("body", "media_type", "self_url", "expected_tag"),
    [
        (ATOM_VALID.encode(), "application/atom+xml", ATOM_SELF, f"{{{ATOM_NS}}}feed"),
        (ATOM_VALID.encode(), "application/atom+xml; charset=utf-8", ATOM_SELF, None),
        (RSS_VALID.encode(), "application/rss+xml", RSS_SELF, "rss"),
        (RSS_VALID.encode(), "Application/RSS+XML;charset=UTF-8", None, "rss"),
        (_json_bytes(JSON_VALID), "application/feed+json", JSON_SELF, None),
        (OPML_VALID.encode(), "text/x-opml; charset=utf-8", None, "opml"),
    ],
)
def test_check_feed_dispatches_on_media_type(
    body: bytes, media_type: str, self_url: str | None, expected_tag: str | None
) -> None:
    result = check_feed(body, media_type, self_url=self_url)
    if isinstance(result, dict):
        assert result["version"] == "https://jsonfeed.org/version/1.1"
    elif expected_tag is not None:
        assert result.tag == expected_tag


def test_check_feed_passes_self_url_through() -> None:
    with pytest.raises(SpecViolation) as info:
        check_feed(RSS_VALID.encode(), "application/rss+xml", self_url="https://elsewhere/")
    assert info.value.rules == {"rss.self-link"}


def test_check_feed_rejects_a_feed_under_the_wrong_media_type() -> None:
    with pytest.raises(SpecViolation) as info:
        check_feed(RSS_VALID.encode(), "application/atom+xml")
    assert info.value.rules == {"atom.root"}


@pytest.mark.parametrize("media_type", ["text/html", "application/xml", "application/json"])
def test_check_feed_rejects_unknown_media_type(media_type: str) -> None:
    with pytest.raises(SpecViolation, match="unsupported feed media type"):
        check_feed(RSS_VALID.encode(), media_type)
