"""Full text: article pages read, sanitized, cached, fetched within a budget.

The site here is threaded (a hanging article page must not hold up the others), and
time is the test's :class:`~tests.conftest.Clock`: a refresh's budget runs out only when
a test moves the clock, never because the machine is slow.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import lxml.html
import pytest
from flask import Flask
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.test import TestResponse

from feedbridge import create_app
from feedbridge.article import parse_article, sanitize
from feedbridge.config import Settings
from feedbridge.errors import LayoutChanged
from feedbridge.model import ArticleKey, Item
from feedbridge.site import ORIGINAL_LINK_TEXT
from feedbridge.text import squash
from tests.conftest import FIXTURES, SITE, Clock, FakeSite, settle
from tests.feedspec import ATOM_NS, check_feed
from tests.servers import wait_until

VARIANTS = FIXTURES / "variants"
PAGE_URL = "https://kcnawatch.org/newstream/1730538240-666693401/press-release/"
VOK_ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)
CEMENT = "/newstream/1774175393-841384190/cement-production-increases/"
COAL = (
    "/newstream/1774168186-216401676/production-increases-at-different-units-of-national-economy/"
)
COMMENTARY = "/newstream/1773978885-620897010/kcna-issues-commentary/"  # the oldest vok-en item
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
# Whatever of hostile.html's body must never reach a reader.
HOSTILE = (
    "<script", "&lt;script", "alert(", "onerror", "onclick", "onload", "javascript:",
    "<iframe", "&lt;iframe", "evil.example", "<svg", "&lt;svg", "style=", "color:red",
)  # fmt: skip


@pytest.fixture(scope="module")
def make_httpserver() -> Iterator[HTTPServer]:
    """pytest-httpserver's server, threaded: article fetches run side by side."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def article_page(path: str) -> bytes:
    return (SITE / "articles" / f"{path.split('/')[2]}.html").read_bytes()


def text_of(markup: str) -> str:
    return squash(lxml.html.fragment_fromstring(markup, create_parent="div").text_content())


def json_feed(app: Flask, slug: str = "vok-en", *, settled: bool = True) -> dict:
    """The category's JSON feed; ``settled``: once its full text has followed."""
    response = app.test_client().get(f"/feeds/{slug}.json")
    assert response.status_code == 200, response.text
    if settled:
        settle(app)
        response = app.test_client().get(f"/feeds/{slug}.json")
    return check_feed(
        response.data, response.content_type, self_url=f"http://localhost/feeds/{slug}.json"
    )


def items_by_path(feed: dict, site: FakeSite) -> dict[str, dict]:
    return {item["url"].removeprefix(site.url): item for item in feed["items"]}


# --- the article page → its full text (pure) --------------------------------------------


@pytest.mark.parametrize(
    ("page", "first", "last", "original"),
    [
        (
            SITE / "articles" / "1774175393-841384190.html",
            "The Sangwon Cement Complex is increasing the production.",
            "Their daily output has reached a new height this month.",
            "http://www.vok.rep.kp/index.php/detail/55610",
        ),
        (
            VARIANTS / "vok-en-template-b.html",
            "A strategic dialogue between Choe Son Hui",
            "external policy organs of the two countries at different levels.",
            "http://www.vok.rep.kp/index.php/detail/88315",
        ),
        (
            VARIANTS / "vok-en-template-c.html",
            "A strategic dialogue between Choe Son Hui",
            "external policy organs of the two countries at different levels.",
            None,
        ),
        (
            VARIANTS / "template-d.html",
            "Pyongyang, October 10 (KCNA) — A national exhibition of industrial art opened",
            "works of commercial art, graphic art and fashion design.",
            "http://www.kcna.co.jp/item/2018/201810/news10/20181010-01ee.html",
        ),
    ],
    ids=["a", "b", "c", "d"],
)
def test_body_and_original_link_of_every_template(
    page: Path, first: str, last: str, original: str | None
) -> None:
    article = parse_article(page.read_bytes(), page_url=PAGE_URL)
    text = text_of(article.content_html)
    assert text.startswith(first)
    assert article.original_url == original
    if original is None:
        assert text.endswith(last)
        assert ORIGINAL_LINK_TEXT not in text
    else:
        assert text.endswith(f"{last} {ORIGINAL_LINK_TEXT}")
        link = lxml.html.fragment_fromstring(article.content_html, create_parent="div")[-1][0]
        assert (link.tag, link.get("href"), link.text) == ("a", original, ORIGINAL_LINK_TEXT)
    for chrome in ("Join the NK Pro team", "NK News is hiring", "More From", "Trending"):
        assert chrome not in text


@pytest.mark.parametrize(
    "page",
    [
        SITE / "articles" / "1774175393-841384190.html",
        VARIANTS / "vok-en-template-b.html",
        VARIANTS / "template-d.html",
    ],
    ids=["a", "b", "d"],
)
def test_body_found_by_structure_when_the_class_is_gone(page: Path) -> None:
    """Between the Date line and "More From" (or the date line's container's end)."""
    markup = page.read_bytes()
    renamed = markup.replace(b'class="article-content"', b'class="entry-body"')
    assert renamed != markup
    expected = parse_article(markup, page_url=PAGE_URL)
    found = parse_article(renamed, page_url=PAGE_URL)
    assert text_of(found.content_html) == text_of(expected.content_html)
    assert found.original_url == expected.original_url


def test_structure_of_an_unknown_theme() -> None:
    page = b"""<html><body><main>
      <div class="when"><b>Date:</b> 01/02/2024 | Source: Naenara (En) |
        <a href="/out/story">Read original version at source</a></div>
      <p>First paragraph of the story.</p>
      <aside><h3>Trending</h3><p>Not the story.</p></aside>
      <div><p>Second paragraph, with <a href="../photo/">a photo</a>.</p></div>
      <section><h2>More From Naenara (En)</h2><p>Another story's excerpt.</p></section>
      <h2>More Articles</h2>
    </main></body></html>"""
    article = parse_article(page, page_url="https://kcnawatch.org/newstream/1-2/slug/")
    assert article.original_url == "https://kcnawatch.org/out/story"
    assert text_of(article.content_html) == (
        f"First paragraph of the story. Second paragraph, with a photo. {ORIGINAL_LINK_TEXT}"
    )
    assert 'href="https://kcnawatch.org/newstream/1-2/photo/"' in article.content_html


@pytest.mark.parametrize(
    "page",
    [
        b"<html><body><p>Nothing to read here.</p></body></html>",
        b"<html><body><div class='article-content'> </div><h3>More From X</h3></body></html>",
        (VARIANTS / "signup-wall.html").read_bytes(),
        b"",
    ],
    ids=["no-date-line", "empty-content", "signup-wall", "empty"],
)
def test_page_without_article_text_is_a_layout_change(page: bytes) -> None:
    with pytest.raises(LayoutChanged, match="no article text"):
        parse_article(page, page_url=PAGE_URL)


@pytest.mark.parametrize(
    "href", ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "ftp://x/"]
)
def test_original_link_must_be_http(href: str) -> None:
    page = (
        "<html><body><p>Date: 01/02/2024 | Source: X | "
        f'<a href="{href}">Read original version at source</a></p>'
        "<div class='article-content'><p>Body.</p></div></body></html>"
    ).encode()
    article = parse_article(page, page_url=PAGE_URL)
    assert article.original_url is None
    assert article.content_html == "<p>Body.</p>"


# --- the sanitizer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "markup",
    [
        "<p>ok<script>alert(1)</script></p>",
        '<p onclick="alert(1)" style="color:red">ok</p>',
        "<p>ok <img src=x onerror=alert(1)></p>",
        '<p><a href="javascript:alert(1)">ok</a></p>',
        '<p><a href=" JaVaScRiPt:alert(1)">ok</a></p>',
        '<p><a href="jav&#x09;ascript:alert(1)">ok</a></p>',
        '<p>ok<iframe src="https://evil.example/"></iframe></p>',
        "<p>ok<svg onload=alert(1)><circle r=1 /></svg></p>",
        "<style>p{color:red}</style><p>ok</p>",
        '<p>ok<object data="https://evil.example/x.swf"></object></p>',
        '<p>ok</p><form action="https://evil.example/"><input name=x><button>Go</button></form>',
        '<p><a href="data:text/html,alert(1)">ok</a></p>',
        "<p>ok<!-- <script>alert(1)</script> --></p>",
        '<p>ok</p><base href="https://evil.example/"><meta http-equiv="refresh">',
    ],
)
def test_sanitize_removes_everything_active(markup: str) -> None:
    clean = sanitize(markup, base_url=PAGE_URL)
    assert "ok" in clean
    for token in (*HOSTILE, "<object", "<form", "<input", "data:", "<!--", "<base", "<meta"):
        assert token not in clean.casefold().replace(" ", "")


def test_sanitize_keeps_text_links_and_images_with_absolute_urls() -> None:
    markup = (
        '<h2>Head</h2><p><strong>b</strong> <em>i</em> <a href="/newstream/1-2/x/">rel</a> '
        '<a href="https://www.vok.rep.kp/">abs</a> <img src="../pic.jpg" alt="A picture"></p>'
        "<ul><li>one</li></ul><blockquote>q</blockquote><div><span>unwrapped</span></div>"
    )
    clean = sanitize(markup, base_url="https://kcnawatch.org/newstream/1-2/slug/")
    assert clean == (
        "<h2>Head</h2><p><strong>b</strong> <em>i</em> "
        '<a href="https://kcnawatch.org/newstream/1-2/x/" rel="noopener noreferrer nofollow">'
        'rel</a> <a href="https://www.vok.rep.kp/" rel="noopener noreferrer nofollow">abs</a> '
        '<img src="https://kcnawatch.org/newstream/1-2/pic.jpg" alt="A picture"></p>'
        "<ul><li>one</li></ul><blockquote>q</blockquote>unwrapped"
    )


def test_sanitize_drops_xml_illegal_characters() -> None:
    assert sanitize("<p>a\x0bb\x00c</p>", base_url=PAGE_URL) == "<p>a bc</p>"


# --- in the feeds ------------------------------------------------------------------------


def test_every_item_carries_its_full_text_in_every_format(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    app = make_app(fulltext=True)
    feed = json_feed(app)
    assert len(feed["items"]) == 11
    for item in feed["items"]:
        text = text_of(item["content_html"])
        assert item["summary"] in text, "the excerpt is the start of the body"
        assert text.endswith(ORIGINAL_LINK_TEXT)
        assert item["external_url"].startswith("http://www.vok.rep.kp/")
    cement = items_by_path(feed, site)[CEMENT]
    assert "Their daily output has reached a new height this month." in cement["content_html"]

    client = app.test_client()
    atom = check_feed(*_body_and_type(client.get("/feeds/vok-en.atom")))
    contents = atom.findall(f"{{{ATOM_NS}}}entry/{{{ATOM_NS}}}content")
    assert [c.get("type") for c in contents] == ["html"] * 11
    assert [c.text for c in contents] == [item["content_html"] for item in feed["items"]]
    rss = check_feed(*_body_and_type(client.get("/feeds/vok-en.rss")))
    encoded = rss.findall(f"channel/item/{{{CONTENT_NS}}}encoded")
    assert [c.text for c in encoded] == [item["content_html"] for item in feed["items"]]
    # Each article page was read once for all three formats.
    assert all(site.hits(path) == 1 for path in items_by_path(feed, site))


def _body_and_type(response: TestResponse) -> tuple[bytes, str]:
    assert response.status_code == 200, response.text
    return response.data, response.content_type


def test_hostile_article_is_sanitized_in_the_raw_output(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    site.override(CEMENT, (VARIANTS / "hostile.html").read_bytes())
    app = make_app(fulltext=True)
    client = app.test_client()
    json_feed(app)
    for fmt in ("atom", "rss", "json"):
        response = client.get(f"/feeds/vok-en.{fmt}")
        check_feed(response.data, response.content_type)
        raw = response.data.decode("utf-8")
        assert "Workers of the factories increased the production." in raw
        # The 0x0B between "rose" and " by" is a space now (HTML shows the two as one).
        assert "Output rose  by 10 percent." in raw
        for token in HOSTILE:
            assert token not in raw.casefold(), (fmt, token)
    [cement] = [i for i in json.loads(response.data)["items"] if i["url"].endswith(CEMENT)]
    assert cement["external_url"] == "http://www.vok.rep.kp/index.php/detail/37511"
    body = lxml.html.fragment_fromstring(cement["content_html"], create_parent="div")
    assert {el.tag for el in body.iter()} <= {"div", "p", "a", "img"}
    assert all(set(el.attrib) <= {"href", "rel", "src"} for el in body.iter())
    assert body.xpath("//img/@src") == [f"{site.url}{CEMENT}x"]  # relative, made absolute


def test_failed_article_keeps_its_excerpt_and_gets_full_text_later(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    """Also through a listing that answers 304: the full text still arrives, the ETag moves."""
    site.override(VOK_ANCHOR, _conditional(article_page(VOK_ANCHOR)))
    site.override(COAL, Response("oops", status=500))
    app = make_app(fulltext=True)
    client = app.test_client()
    client.get("/feeds/vok-en.json")
    settle(app)
    first = client.get("/feeds/vok-en.json")
    items = items_by_path(check_feed(first.data, first.content_type), site)
    assert "content_html" not in items[COAL]
    assert items[COAL]["content_text"] == items[COAL]["summary"]
    assert items[COAL]["summary"].startswith("Active efforts are made in the coal industry")
    assert sum("content_html" in item for item in items.values()) == 10

    site.override(COAL, article_page(COAL))
    clock.advance(299)  # a failed article is asked again later, not at every refresh
    settle(app)
    assert site.hits(COAL) == 1
    clock.advance(302)
    assert client.get("/feeds/vok-en.json").headers["X-Cache"] == "stale"
    settle(app)
    second = client.get("/feeds/vok-en.json")
    items = items_by_path(check_feed(second.data, second.content_type), site)
    assert "Active efforts are made in the coal industry" in items[COAL]["content_html"]
    assert second.headers["ETag"] != first.headers["ETag"]
    assert site.hits(VOK_ANCHOR) == 2 and site.hits(COAL) == 2
    assert all(site.hits(path) == 1 for path in items if path != COAL)


def _conditional(body: bytes) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body, content_type="text/html; charset=UTF-8", headers={"ETag": '"v1"'})

    return handle


def test_each_article_is_read_once(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    app = make_app(fulltext=True)
    client = app.test_client()
    vok = items_by_path(json_feed(app), site)
    for _ in range(3):
        clock.advance(601)
        client.get("/feeds/vok-en.json")
        settle(app)
    assert site.hits(VOK_ANCHOR) == 4
    assert all(site.hits(path) == 1 for path in vok)
    # The home page lists vok-en stories too: those are not read again for "all".
    before = site.hits()
    everything = items_by_path(json_feed(app, "all"), site)
    shared = set(everything) & set(vok)
    assert len(shared) == 5
    assert site.hits() - before == 1 + len(everything) - len(shared)
    assert all("content_html" in item for item in everything.values())


def test_slow_article_never_holds_the_feed_past_the_budget(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    """The oldest article hangs (and the budget's time passes meanwhile): the others get
    their full text, that one keeps its excerpt until its page arrives, and then has it
    without the site being asked again."""
    entered, release = threading.Event(), threading.Event()

    def hang(_request: Request) -> Response:
        clock.advance(5)  # well over the 0.2 s budget
        entered.set()
        release.wait(timeout=10)
        return Response(article_page(COMMENTARY), content_type="text/html; charset=UTF-8")

    site.override(COMMENTARY, hang)
    app = make_app(fulltext=True, fulltext_budget=0.2, fulltext_concurrency=1)
    try:
        first = json_feed(app, settled=False)
        assert not any("content_html" in item for item in first["items"]), "no wait"

        def others_filled() -> bool:
            items = items_by_path(json_feed(app, settled=False), site)
            return all("content_html" in items[path] for path in items if path != COMMENTARY)

        wait_until(others_filled, "the full text of the articles that answer", 10)
        # The hanging page is asked for last (one fetch at a time, newest first).
        wait_until(entered.is_set, "the request for the hanging article", 10)
        assert not release.is_set()
        items = items_by_path(json_feed(app, settled=False), site)
        assert items[COMMENTARY]["content_text"] == items[COMMENTARY]["summary"]
    finally:
        release.set()
    app.extensions["feedbridge"].fulltext.drain(timeout=10)
    items = items_by_path(json_feed(app), site)
    assert "The Korean Central News Agency" in items[COMMENTARY]["content_html"]
    assert site.hits(COMMENTARY) == 1


def test_at_most_the_configured_number_of_article_fetches_at_once(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    lock = threading.Lock()
    both_in = threading.Event()
    state = {"now": 0, "most": 0, "seen": 0}

    def count(path: str) -> Callable[[Request], Response]:
        def handle(_request: Request) -> Response:
            with lock:
                state["now"] += 1
                state["seen"] += 1
                state["most"] = max(state["most"], state["now"])
                first_two = state["seen"] <= 2
                if state["now"] == 2:
                    both_in.set()
            if first_two:
                both_in.wait(timeout=10)  # the first two overlap, or this times out
            with lock:
                state["now"] -= 1
            return Response(article_page(path), content_type="text/html; charset=UTF-8")

        return handle

    paths = [p for p in items_by_path(json_feed(make_app()), site) if p != VOK_ANCHOR]
    for path in paths:
        site.override(path, count(path))
    json_feed(make_app(fulltext=True, fulltext_concurrency=2))
    assert state["seen"] == len(paths) == 11
    assert state["most"] == 2


# --- on, off, per category ---------------------------------------------------------------


def test_full_text_is_on_by_default_and_off_with_fulltext_0(site: FakeSite, tmp_path: Path) -> None:
    base = {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_REFRESH": "0",
        "FEEDBRIDGE_DB": str(tmp_path / "on.db"),
    }
    on = create_app(Settings.from_env(base))
    assert all("content_html" in item for item in json_feed(on)["items"])
    hits = site.hits()
    off = create_app(
        Settings.from_env(
            {**base, "FEEDBRIDGE_FULLTEXT": "0", "FEEDBRIDGE_DB": str(tmp_path / "off.db")}
        )
    )
    assert not any("content_html" in item for item in json_feed(off)["items"])
    assert site.hits() == hits + 1  # the listing only


@pytest.mark.parametrize("default", [True, False])
def test_a_category_overrides_the_default(
    make_app: Callable[..., Flask], site: FakeSite, tmp_path: Path, default: bool
) -> None:
    categories = tmp_path / "categories.toml"
    categories.write_text(
        "[categories.vok-en]\n"
        'title = "Voice of Korea (EN)"\n'
        'label = "Voice of Korea (EN)"\n'
        f'anchors = ["{VOK_ANCHOR}"]\n'
        f"fulltext = {str(not default).lower()}\n",
        "utf-8",
    )
    app = make_app(fulltext=default, categories_file=categories)
    vok = json_feed(app, "vok-en")["items"]
    times = json_feed(app, "pyongyang-times")["items"]
    assert all(("content_html" in item) is (not default) for item in vok)
    assert all(("content_html" in item) is default for item in times)


def test_atom_content_is_escaped_html_not_markup(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    """type="html": the markup is text of the element, so a reader unescapes it once."""
    app = make_app(fulltext=True)
    json_feed(app)
    response = app.test_client().get("/feeds/vok-en.atom")
    root = etree.fromstring(response.data)
    [content] = root.xpath(
        "//a:entry[a:id='tag:kcnawatch.org,2014:newstream/1774175393-841384190']/a:content",
        namespaces={"a": ATOM_NS},
    )
    assert len(content) == 0 and content.text.startswith("<p>The Sangwon Cement Complex")
    assert b"&lt;p&gt;The Sangwon Cement Complex" in response.data


def test_full_text_kept_in_the_store_is_not_fetched_again(
    make_app: Callable[..., Flask], site: FakeSite, tmp_path: Path
) -> None:
    """Another process sharing the store (a second worker) refreshing the category reads
    only the listing: its stories have their full text already."""
    shared = tmp_path / "shared.db"
    first = make_app(fulltext=True, db=shared)
    assert all("content_html" in item for item in json_feed(first)["items"])
    before = site.hits()
    other = make_app(fulltext=True, db=shared)
    bridge = other.extensions["feedbridge"]
    bridge.refresh(bridge.registry["vok-en"], force=True, full_text_after=True)
    settle(other)
    assert site.hits() - before == 1  # the listing only
    assert json_feed(other) == json_feed(first)


def test_the_date_line_is_read_day_first() -> None:
    article = parse_article(
        (SITE / "articles/1730538240-666693401.html").read_bytes(), page_url=PAGE_URL
    )
    assert article.dated == date(2024, 11, 2)  # "Date: 02/11/2024"


def test_an_item_listed_without_a_date_takes_its_article_s(
    make_app: Callable[..., Flask],
) -> None:
    bridge = make_app(fulltext=True).extensions["feedbridge"]
    undated = Item(
        key=ArticleKey(1774175393, "841384190"),
        title="Cement production increases",
        path="/newstream/1774175393-841384190/cement-production-increases/",
    )
    filled = bridge.fulltext.submit(undated, "vok-en", then=lambda _item: None).result(10)
    assert (
        filled is not None and filled.content_html and filled.listed == date(2026, 3, 22)
    )  # "Date: 22/03/2026"
