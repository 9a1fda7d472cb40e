"""Properties that must hold for any input, checked with Hypothesis.

- The scraper raises nothing but its own typed errors, whatever the page: arbitrary
  bytes, generated HTML, and the saved pages with elements deleted, attributes shuffled,
  the document cut short or re-encoded; and every item it returns links to an article.
- Rendering gives well-formed, spec-valid feeds whatever the text.
- An item's id depends on ``<ts>-<id>`` only: not on slug, scheme, host, slash or query.
- No request parameter or header makes the bridge fetch anything but its site's pages.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC
from urllib.parse import quote, urlencode

import hypothesis.strategies as st
import lxml.html
from flask import Flask
from hypothesis import HealthCheck, given, settings
from lxml import etree

from feedbridge import feeds
from feedbridge.categories import Category, load_registry
from feedbridge.errors import Blocked, LayoutChanged
from feedbridge.feeds import FeedInfo, Format, render
from feedbridge.model import ArticleKey, Item
from feedbridge.scrape import article_link, parse_home, parse_listing
from feedbridge.site import ARTICLE_PATH
from feedbridge.text import xml_safe
from tests.conftest import SITE, FakeSite
from tests.feedspec import check_feed

BASE = "http://127.0.0.1:9"
REGISTRY = load_registry()
ATOM = "{http://www.w3.org/2005/Atom}"
# Characters that break naive XML or JSON writers, and text of the domain.
AWKWARD = [
    "\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\uffff", "\u200b", "\u200e", "\u200f",
    "\u202a", "\u202e", "\u2028", "\u2029", "\ufeff", "😀", "👨‍👩‍👧", "한국어", "김정은",
    "조선중앙통신", "]]>", "<![CDATA[", "]]", "<", ">", "&", "&amp;", '"', "'", "\r\n", "\t",
]  # fmt: skip
awkward_text = st.lists(st.one_of(st.characters(), st.sampled_from(AWKWARD)), max_size=30).map(
    "".join
)
# As many examples as the profile says (conftest.py: all of them in CI, fewer at a desk).
PROPERTY = settings(suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Page:
    """A saved page of the site and the category read from it."""

    category: Category
    body: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Page({self.category.slug!r})"

    def scrape(self, body: bytes | None = None, encoding: str | None = None) -> list[Item]:
        body = self.body if body is None else body
        if self.category.label is None:
            return parse_home(body, base_url=BASE, encoding=encoding)
        return parse_listing(
            body,
            label=self.category.label,
            base_url=BASE,
            encoding=encoding,
            page_path=self.category.paths[0],
        )


def _saved_page(category: Category) -> Page:
    path = category.paths[0]
    if path == "/":
        return Page(category, (SITE / "home.html").read_bytes())
    key = ARTICLE_PATH.match(path)
    assert key is not None
    return Page(category, (SITE / "articles" / f"{key.group(1)}-{key.group(2)}.html").read_bytes())


PAGES = [_saved_page(category) for category in REGISTRY.values()]


def _linked_keys(page: Page) -> set[ArticleKey]:
    """Every story the page links to, wherever: damage may move a link into the listing."""
    root = lxml.html.document_fromstring(page.body)
    found = (article_link(href, base_url=BASE) for href in root.xpath("//a/@href"))
    return {link[0] for link in found if link}


LINKED_KEYS = {page.category.slug: _linked_keys(page) for page in PAGES}


def scrape_safely(page: Page, body: bytes, encoding: str | None = None) -> list[Item]:
    """The items, or none when the scraper says why with one of its own errors."""
    try:
        items = page.scrape(body, encoding)
    except (LayoutChanged, Blocked):
        return []
    assert_items_are_sound(items)
    return items


def assert_items_are_sound(items: list[Item]) -> None:
    """Every item links to an article of the site and renders into valid feeds."""
    assert len({item.key for item in items}) == len(items)
    for item in items:
        url = BASE + item.path
        assert ARTICLE_PATH.match(item.path), item.path
        assert article_link(url, base_url=BASE) == (item.key, item.path)
        assert item.title and item.title == item.title.strip() == xml_safe(item.title)
        assert item.excerpt == xml_safe(item.excerpt)
    if items:
        for fmt in Format:
            check_feed(render(fmt, feed_info(fmt), items, base_url=BASE), fmt.media_type)


def feed_info(fmt: Format, title: str = "KCNA Watch — test") -> FeedInfo:
    return FeedInfo(
        id="tag:kcnawatch.org,2014:feedbridge/test",
        title=title,
        description="Test feed",
        self_url=f"http://localhost/feeds/test.{fmt.value}",
        home_url="http://localhost/",
    )


# --- the scraper on anything ------------------------------------------------------------


@PROPERTY
@given(page=st.sampled_from(PAGES), body=st.binary(max_size=4096))
def test_arbitrary_bytes(page: Page, body: bytes) -> None:
    scrape_safely(page, body)


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tags = st.sampled_from(
        ["div", "p", "h3", "h4", "a", "article", "section", "span", "li", "ul", "td", "img",
         "aside", "nav", "header", "script", "br", "form", "time"]
    )  # fmt: skip
    hrefs = st.one_of(
        st.builds(
            "https://kcnawatch.org/newstream/{}-{}/{}/".format,
            st.integers(0, 10**11),
            st.integers(0, 10**13),
            st.text(max_size=8),
        ),
        st.sampled_from(["/newstream/1774175393-841384190", "javascript:alert(1)", "#", ""]),
        st.text(max_size=20),
    )
    attributes = st.lists(
        st.tuples(
            st.sampled_from(["href", "class", "alt", "src", "title", "action", "onclick"]),
            st.one_of(hrefs, st.sampled_from(["article-desc", "nk-paywall-free-member-form"])),
        ),
        max_size=3,
    ).map(lambda pairs: "".join(f' {name}="{html.escape(value)}"' for name, value in pairs))
    return st.builds(
        "<{0}{1}>{2}</{0}>".format, tags, attributes, st.lists(children, max_size=4).map("".join)
    )


PAGE_TEXTS = [
    "More From Voice of Korea (EN)", "More From KCNA.kp (En)", "More Articles",
    "Latest Articles from North Korea", "March 22, 2026", "January 02, 2026", "Date: 02/11/2024",
]  # fmt: skip
texts = st.one_of(awkward_text.map(html.escape), st.sampled_from(PAGE_TEXTS))
html_fragments = st.recursive(texts, _element, max_leaves=30)


@PROPERTY
@given(
    page=st.sampled_from(PAGES),
    fragments=st.lists(html_fragments, max_size=8),
    encoding=st.sampled_from(["utf-8", "utf-16", "cp1252", "euc-kr"]),
)
def test_arbitrary_html(page: Page, fragments: list[str], encoding: str) -> None:
    document = f"<html><body>{''.join(fragments)}</body></html>"
    scrape_safely(page, document.encode(encoding, errors="xmlcharrefreplace"), encoding)


# --- the saved pages, damaged ----------------------------------------------------------


@st.composite
def damaged_pages(draw: st.DrawFn) -> tuple[Page, bytes]:
    """A saved page with elements deleted and attributes shuffled or swapped."""
    page = draw(st.sampled_from(PAGES))
    root = lxml.html.document_fromstring(page.body)
    for _ in range(draw(st.integers(1, 6))):
        elements = [el for el in root.iter() if isinstance(el.tag, str) and el is not root]
        if not elements:
            break
        el = elements[draw(st.integers(0, len(elements) - 1))]
        other = elements[draw(st.integers(0, len(elements) - 1))]
        action = draw(st.sampled_from(["delete", "unwrap", "shuffle", "swap"]))
        if action == "delete":
            el.drop_tree()
        elif action == "unwrap":
            el.drop_tag()
        elif action == "shuffle":
            attributes = list(el.attrib.items())
            order = draw(st.permutations(range(len(attributes))))
            el.attrib.clear()
            for i in order:
                el.set(*attributes[i])
        else:
            mine, theirs = dict(el.attrib), dict(other.attrib)
            el.attrib.clear()
            other.attrib.clear()
            el.attrib.update(theirs)
            other.attrib.update(mine)
    return page, lxml.html.tostring(root, encoding="utf-8")


@PROPERTY
@given(damaged=damaged_pages())
def test_saved_pages_with_elements_deleted_and_attributes_shuffled(
    damaged: tuple[Page, bytes],
) -> None:
    page, body = damaged
    items = scrape_safely(page, body, "utf-8")
    assert {item.key for item in items} <= LINKED_KEYS[page.category.slug]


@PROPERTY
@given(page=st.sampled_from(PAGES), cut=st.floats(0, 1))
def test_saved_pages_cut_short(page: Page, cut: float) -> None:
    scrape_safely(page, page.body[: int(len(page.body) * cut)])


ENCODINGS = [
    "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252", "euc-kr", "shift_jis", "koi8-r", "ascii"
]  # fmt: skip


@PROPERTY
@given(
    page=st.sampled_from(PAGES),
    actual=st.sampled_from(ENCODINGS),
    declared=st.sampled_from([None, "same", "utf-8", "iso-8859-1", "utf-16", "x-bogus"]),
    meta=st.sampled_from([None, "utf-8", "euc-kr", "x-bogus"]),
)
def test_saved_pages_in_odd_encodings(
    page: Page, actual: str, declared: str | None, meta: str | None
) -> None:
    text = page.body.decode("utf-8")
    if meta is not None:
        text = text.replace('<meta charset="UTF-8">', f'<meta charset="{meta}">')
    body = text.encode(actual, errors="xmlcharrefreplace")
    header = actual if declared == "same" else declared
    items = scrape_safely(page, body, header)
    assert {item.key for item in items} <= LINKED_KEYS[page.category.slug]
    if header == actual:
        # Told the truth, the scraper reads the page as it was.
        assert [(i.key, i.title) for i in items] == [(i.key, i.title) for i in page.scrape()]


# --- rendering whatever the text ------------------------------------------------------------


keys = st.builds(
    ArticleKey,
    st.integers(0, 2**40),
    st.integers(0, 10**12).map(str),
)
items = st.builds(
    Item,
    key=keys,
    title=awkward_text.filter(lambda t: xml_safe(t).strip()),
    path=st.builds("/newstream/{}/{}/".format, keys, st.text().map(lambda s: quote(s, ""))),
    excerpt=awkward_text,
    listed=st.none() | st.dates(),
    source=st.none() | awkward_text.filter(lambda t: xml_safe(t).strip()),
)


@PROPERTY
@given(
    entries=st.lists(items, max_size=5, unique_by=lambda item: item.key),
    title=awkward_text,
    fmt=st.sampled_from(Format),
)
def test_rendering_is_well_formed_whatever_the_text(
    entries: list[Item], title: str, fmt: Format
) -> None:
    info = feed_info(fmt, title=f"KCNA Watch — {title}")
    body = render(fmt, info, entries, base_url=BASE)
    parsed = check_feed(body, fmt.media_type, self_url=info.self_url)
    if fmt is Format.JSON:
        assert isinstance(parsed, dict)
        shown = [item["title"] for item in parsed["items"]]
    elif fmt is Format.ATOM:
        assert isinstance(parsed, etree._Element)
        shown = [entry.findtext(f"{ATOM}title") for entry in parsed.iter(f"{ATOM}entry")]
    else:
        assert isinstance(parsed, etree._Element)
        shown = [item.findtext("title") for item in parsed.iter("item")]
    assert shown == [xml_safe(entry.title) for entry in entries]


stories = st.builds(
    replace,
    items,
    content_html=st.none() | awkward_text.map(lambda t: f"<p>{t}</p>"),
    thumbnail=st.none() | st.just("https://kcnawatch.org/wp-content/uploads/a b.jpg?x=1&y=2"),
    original_url=st.none() | st.just("http://www.vok.rep.kp/index.php/detail/1?lang=eng"),
    modified=st.none() | st.datetimes(timezones=st.just(UTC)),
)


def whole(fmt: Format, info: FeedInfo, entries: list[Item]) -> bytes:
    """The document as feedgen (or one ``json.dumps``) renders it with every entry in."""
    if fmt is Format.JSON:
        feed = feeds._json_feed(info)
        feed["items"] = [feeds._json_item(item, BASE) for item in entries]
        return feeds._json_bytes(feed)
    generator = feeds._feedgen(info, entries, BASE, feeds.updated(entries))
    if fmt is Format.ATOM:
        atom: bytes = generator.atom_str(pretty=False)
        return atom
    rss: bytes = generator.rss_str(pretty=False)
    return feeds._with_rss_hub(rss, info.hub) if info.hub else rss


@PROPERTY
@given(
    entries=st.lists(stories, max_size=6, unique_by=lambda item: item.key),
    hub=st.none() | st.just("https://hub.example/?a=1&b=2"),
    fmt=st.sampled_from(Format),
)
def test_entries_rendered_apart_make_the_document_rendered_whole(
    entries: list[Item], hub: str | None, fmt: Format
) -> None:
    """Entries are rendered once per story and put into a shell (so that a selection
    costs no feedgen run): byte for byte what rendering the document at once gives."""
    info = replace(feed_info(fmt), hub=hub)
    assert render(fmt, info, entries, base_url=BASE) == whole(fmt, info, entries)


# --- ids -----------------------------------------------------------------------------


slugs = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="/?#"), max_size=30)


@st.composite
def article_hrefs(draw: st.DrawFn, key: ArticleKey) -> str:
    """One of the many ways a page may link to the article ``key``."""
    host = draw(
        st.sampled_from(
            ["https://kcnawatch.org", "http://kcnawatch.org", "https://www.kcnawatch.org",
             "HTTP://KCNAWatch.org", "//kcnawatch.org", "", BASE]
        )
    )  # fmt: skip
    slug = draw(slugs)
    slug = draw(st.sampled_from([slug, quote(slug, safe=""), quote(slug, safe="").lower()]))
    path = f"/newstream/{key}" + (f"/{slug}" if slug or draw(st.booleans()) else "")
    if draw(st.booleans()):
        path += "/"
    query = draw(st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=10)))
    fragment = draw(st.none() | st.text(max_size=10))
    return (
        host
        + path
        + (f"?{urlencode(query)}" if query is not None else "")
        + (f"#{quote(fragment)}" if fragment is not None else "")
    )


@st.composite
def one_story_linked_two_ways(draw: st.DrawFn) -> tuple[ArticleKey, str, str]:
    key = draw(
        st.builds(
            ArticleKey,
            st.integers(10**8, 10**10 - 1),
            st.text("0123456789", min_size=5, max_size=12),
        )
    )
    return key, draw(article_hrefs(key)), draw(article_hrefs(key))


def _listing_with(href: str) -> bytes:
    return f"""<html><body><h3>More From Voice of Korea (EN)</h3>
    <article><h4><a href="{html.escape(href)}">A story</a></h4><p>Its excerpt.</p>
    <p>March 22, 2026</p></article><h3>More Articles</h3></body></html>""".encode()


@PROPERTY
@given(story=one_story_linked_two_ways())
def test_id_is_stable_under_slug_scheme_host_slash_and_query(
    story: tuple[ArticleKey, str, str],
) -> None:
    key, first, second = story
    ids = []
    for href in (first, second):
        found = article_link(href, base_url=BASE)
        assert found is not None and found[0] == key, href
        [item] = parse_listing(_listing_with(href), label="Voice of Korea (EN)", base_url=BASE)
        atom = render(Format.ATOM, feed_info(Format.ATOM), [item], base_url=BASE)
        root = check_feed(atom, Format.ATOM.media_type)
        assert isinstance(root, etree._Element)
        ids.append(root.findtext(f"{ATOM}entry/{ATOM}id"))
    assert ids == [key.tag_uri, key.tag_uri]


# --- requests cannot choose what the bridge fetches -----------------------------------------


REQUEST_HEADERS = [
    "Host", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Original-URL",
    "X-Rewrite-URL", "Referer", "If-None-Match", "If-Modified-Since", "Accept-Encoding",
]  # fmt: skip
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
ELSEWHERE = "{elsewhere}"  # the other server's host:port, filled in by the test


@settings(
    PROPERTY,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    slug=st.sampled_from(list(REGISTRY)),
    fmt=st.sampled_from(Format),
    query=st.dictionaries(
        st.sampled_from(["url", "upstream", "path", "anchor", "next", "q", "limit", "format"]),
        st.one_of(st.text(max_size=30), st.just(f"http://{ELSEWHERE}/newstream/1774000000-12345/")),
        max_size=4,
    ),
    headers=st.dictionaries(
        st.sampled_from(REQUEST_HEADERS),
        st.one_of(header_values, st.just(ELSEWHERE), st.just(f"http://{ELSEWHERE}/")),
        max_size=4,
    ),
)
def test_requests_cannot_choose_what_is_fetched(
    make_app: Callable[..., Flask],
    site: FakeSite,
    elsewhere: FakeSite,
    slug: str,
    fmt: Format,
    query: dict[str, str],
    headers: dict[str, str],
) -> None:
    other = elsewhere.url.removeprefix("http://")
    query = {name: value.replace(ELSEWHERE, other) for name, value in query.items()}
    headers = {name: value.replace(ELSEWHERE, other) for name, value in headers.items()}
    allowed = set(REGISTRY[slug].paths)
    before = site.hits()
    client = make_app().test_client()
    response = client.get(f"/feeds/{slug}.{fmt.value}", query_string=query, headers=headers)
    assert response.status_code in (200, 304, 400), response.text
    assert {request.path for request in site.requests[before:]} <= allowed
    assert site.hits() - before <= 1
    assert elsewhere.hits() == 0
    if response.status_code == 200:
        body = response.get_data()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        check_feed(body, response.content_type)
        if fmt is Format.JSON:
            urls = [item["url"] for item in json.loads(body)["items"]]
            assert all(url.startswith(site.url + "/newstream/") for url in urls)
