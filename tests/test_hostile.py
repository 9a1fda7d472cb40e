"""Hostile input through the whole bridge: script in the site's text, paths and headers
that try to lead it elsewhere.

Safety is asserted on the raw bytes served and on their parsed structure (lxml), never
through feedparser, which sanitizes by itself and would hide what the bridge let through.
"""

from __future__ import annotations

import html
import http.client
import json
import random
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
import pytest
import redis
from flask import Flask
from lxml import etree
from werkzeug.serving import make_server

from feedbridge.feed_cache import SERVED_BYTES
from tests.conftest import FIXTURES, FakeSite
from tests.feedspec import check_feed

VOK_ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)
# Classic XSS payloads, each placed in a listing both as markup and as text.
PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    '"><script>alert(1)</script>',
    "'';!--\"<XSS>=&{()}",
    "<img src=x onerror=alert(1)>",
    "<svg/onload=alert(1)>",
    "<body onload=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    '<a href="  JaVaScRiPt:alert(1)">click</a>',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="></object>',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "]]><script>alert(1)</script><![CDATA[",
    "<!--<script>alert(1)</script>-->",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "javascript:alert(1)",
    "\u202e<script>alert(1)</script>\u202c",
]
# Elements that run code or restyle the page, in a browser or a reader's HTML view.
EXECUTABLE = frozenset(
    {
        "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math",
        "style", "base", "form", "template", "noscript", "xss",
    }
)  # fmt: skip
SCRIPT_URL = re.compile(r"(java|vb)script\s*:|^\s*data\s*:", re.IGNORECASE)
# Every element a feed or OPML document of the bridge may hold (RSS 2.0, Atom 1.0, the
# media, content and dc extensions, OPML 2.0): anything else was injected.
FEED_VOCABULARY = frozenset(
    {
        "rss", "channel", "item", "title", "link", "description", "language", "copyright",
        "managingEditor", "webMaster", "pubDate", "lastBuildDate", "category", "generator", "group",
        "docs", "ttl", "image", "url", "width", "height", "author", "comments", "enclosure",
        "guid", "source", "encoded", "creator", "thumbnail", "content", "feed", "entry", "id",
        "updated", "published", "name", "email", "uri", "subtitle", "summary", "contributor",
        "rights", "icon", "logo", "opml", "head", "body", "outline", "dateCreated",
    }
)  # fmt: skip
# Elements whose text a reader renders as HTML: RSS 2.0's item description and
# content:encoded; in Atom, what says type="html".
RSS_HTML = {"description", "{http://purl.org/rss/1.0/modules/content/}encoded"}


def card(ts: int, title_html: str, excerpt_html: str) -> str:
    href = f"https://kcnawatch.org/newstream/{ts}-{ts % 1000 + 100000000}/hostile-{ts}/"
    return f"""
    <article class="clearfix">
      <div class="article-desc">
        <h4><a href="{href}">{title_html}</a></h4>
        <p class="article-excerpt">{excerpt_html}</p>
        <p class="articled-date"><span>March 21, 2026</span></p>
      </div>
    </article>"""


def hostile_listing(label: str = "Voice of Korea (EN)") -> bytes:
    """A "More From" block whose titles and excerpts carry every payload, two ways."""
    cards = []
    for n, payload in enumerate(PAYLOADS):
        # As markup: the scraper sees elements and must keep only their text.
        cards.append(card(1774000000 + 2 * n, f"Markup {n} {payload}", f"Excerpt {payload} end"))
        # As text: the page shows the payload itself, which must stay text in every feed.
        text = html.escape(payload)
        cards.append(card(1774000001 + 2 * n, f"Text {n} {text}", f"Excerpt {text} end"))
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head>
    <body><h3>More From {html.escape(label)}</h3>{"".join(cards)}
    <h3>More Articles</h3></body></html>""".encode()


# --- what "inert" means, checked on raw output ---------------------------------------


def assert_inert_html(fragment: str, where: str) -> None:
    """HTML a reader or browser may render: no code, no handler, no script URL."""
    assert "<script" not in fragment.lower(), f"{where}: {fragment!r}"
    if not fragment.strip():
        return
    for el in lxml.html.fragments_fromstring(f"<div>{fragment}</div>")[0].iter():
        assert isinstance(el.tag, str) and el.tag not in EXECUTABLE, f"{where}: {el.tag}"
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), f"{where}: {name}={value!r}"
            assert not SCRIPT_URL.search(value), f"{where}: {name}={value!r}"


def front_page_body(app: Flask) -> str:
    """The front page's <body>: scraped text goes there; the <head> is the template's own
    (its title, links and stylesheet), which no input of the site reaches."""
    page = lxml.html.document_fromstring(app.test_client().get("/").text)
    assert "<script" not in lxml.html.tostring(page.head, encoding="unicode").lower()
    return lxml.html.tostring(page.body, encoding="unicode")


def assert_inert_xml(body: bytes) -> etree._Element:
    """A feed or OPML document: its own elements only, no handler, no script URL."""
    raw = body.decode("utf-8")
    assert "<script" not in raw.lower()
    # The bridge writes neither: so every "<" left in the raw output is a real element.
    assert "<![CDATA[" not in raw and "<!--" not in raw
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    for node in root.iter():
        local = etree.QName(node).localname
        assert local in FEED_VOCABULARY, f"<{local}> is not a feed element"
        for name, value in node.attrib.items():
            attribute = etree.QName(name).localname
            assert not attribute.lower().startswith("on"), f"{local} {name}={value!r}"
            assert not SCRIPT_URL.search(value), f"{local} {name}={value!r}"
            if attribute in ("href", "url", "xmlUrl", "htmlUrl"):
                assert urlsplit(value).scheme in ("http", "https"), f"{local} {name}={value!r}"
        if is_html(node):
            assert_inert_html(node.text or "", local)
    return root


def assert_inert_json(body: bytes) -> dict:
    raw = body.decode("utf-8")
    assert "<" not in raw and ">" not in raw, "markup characters are escaped as \\u003c/\\u003e"
    feed = json.loads(body)
    for item in feed["items"]:
        for key in ("url", "external_url", "image"):
            if key in item:
                assert urlsplit(item[key]).scheme in ("http", "https"), (key, item[key])
        assert_inert_html(item.get("content_html", ""), f"{item['id']} content_html")
    return feed


def is_html(node: etree._Element) -> bool:
    parent = node.getparent()
    in_item = parent is not None and parent.tag == "item"
    return (node.tag in RSS_HTML and in_item) or node.get("type") == "html"


def get_feed(app: Flask, slug: str, fmt: str) -> bytes:
    response = app.test_client().get(f"/feeds/{slug}.{fmt}")
    assert response.status_code == 200, response.text
    check_feed(
        response.data, response.content_type, self_url=f"http://localhost/feeds/{slug}.{fmt}"
    )
    return response.data


def text_of(node: etree._Element | None) -> str:
    """What a reader shows for an element: HTML-bearing ones are rendered first."""
    assert node is not None
    if is_html(node):
        return lxml.html.fragment_fromstring(node.text or "", create_parent="div").text_content()
    return node.text or ""


# --- script in the site's text ---------------------------------------------------------


@pytest.mark.parametrize(
    "page",
    [hostile_listing(), (FIXTURES / "variants" / "hostile.html").read_bytes()],
    ids=["payload-corpus", "hostile.html"],
)
def test_no_payload_survives_into_any_feed(app: Flask, site: FakeSite, page: bytes) -> None:
    site.override(VOK_ANCHOR, page)
    feed = assert_inert_json(get_feed(app, "vok-en", "json"))
    rss = assert_inert_xml(get_feed(app, "vok-en", "rss"))
    atom = assert_inert_xml(get_feed(app, "vok-en", "atom"))
    items = feed["items"]
    assert len(items) >= 5
    # The text a reader shows is the text the site showed, in every format.
    atom_ns = "{http://www.w3.org/2005/Atom}"
    for item, rss_item, entry in zip(
        items, rss.iter("item"), atom.iter(f"{atom_ns}entry"), strict=True
    ):
        assert text_of(rss_item.find("title")) == item["title"]
        assert text_of(entry.find(f"{atom_ns}title")) == item["title"]
        if "summary" in item:
            assert text_of(rss_item.find("description")) == item["summary"]
            assert text_of(entry.find(f"{atom_ns}summary")) == item["summary"]
    assert_inert_html(front_page_body(app), "index page")


def test_payloads_shown_as_text_stay_text(app: Flask, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, hostile_listing())
    items = {item["title"]: item for item in json.loads(get_feed(app, "vok-en", "json"))["items"]}
    raw_atom = get_feed(app, "vok-en", "atom").decode()
    for n, payload in enumerate(PAYLOADS):
        shown = " ".join(payload.split())  # the scraper collapses whitespace
        item = items[f"Text {n} {shown}".strip()]
        assert item["summary"] == f"Excerpt {shown} end"
        assert html.escape(f"Text {n} {shown}", quote=False) in raw_atom


def test_user_categories_cannot_inject_markup(
    make_app: Callable[..., Flask], site: FakeSite, tmp_path: Path
) -> None:
    label = '<script>alert("label")</script>'
    categories = tmp_path / "categories.toml"
    categories.write_text(
        "[categories.hostile]\n"
        f"title = {json.dumps(PAYLOADS[2] + PAYLOADS[4])}\n"
        f"label = {json.dumps(label)}\n"
        f'anchors = ["{VOK_ANCHOR}"]\n',
        encoding="utf-8",
    )
    site.override(VOK_ANCHOR, hostile_listing(label))
    app = make_app(categories_file=categories)
    index = app.test_client().get("/")
    assert index.status_code == 200
    assert_inert_html(front_page_body(app), "index page")
    assert PAYLOADS[2] + PAYLOADS[4] in lxml.html.fromstring(index.data).text_content()
    opml = app.test_client().get("/feeds.opml")
    check_feed(opml.data, opml.content_type)
    assert_inert_xml(opml.data)
    assert_inert_json(get_feed(app, "hostile", "json"))
    assert_inert_xml(get_feed(app, "hostile", "rss"))
    assert_inert_xml(get_feed(app, "hostile", "atom"))


# --- requests that try to lead the bridge elsewhere -------------------------------------


@pytest.fixture
def live(app: Flask) -> Iterator[tuple[str, int]]:
    """The app behind a real HTTP server, so request targets arrive exactly as sent."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield "127.0.0.1", server.port
    server.shutdown()
    thread.join(timeout=10)


def raw_get(
    address: tuple[str, int], target: str, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """GET ``target`` verbatim (no client-side clean-up of dots or slashes).

    Returns the status, the Content-Type and the body.
    """
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": f"{address[0]}:{address[1]}", **(headers or {})}.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


ESCAPES = [
    "/feeds/../feeds/vok-en.atom",
    "/feeds/%2e%2e/vok-en.atom",
    "/feeds/%2E%2E%2Fvok-en.atom",
    "/feeds/..%2fvok-en.atom",
    "/feeds/..%252f..%252fvok-en.atom",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/feeds/vok-en.atom/..",
    "/feeds/vok-en.atom%2f..%2f..%2fnewstream",
    "/feeds/.%2e/.%2e/newstream/1730538240-666693401/x.atom",
    "//{elsewhere}/feeds/vok-en.atom",
    "///{elsewhere}/feeds/vok-en.atom",
    "/\\{elsewhere}/feeds/vok-en.atom",
    "/feeds/http:%2F%2F{elsewhere}%2Ffeeds%2Fvok-en.atom",
    "/feeds/%2F%2F{elsewhere}.atom",
    "/feeds/" + "a" * 2000 + ".atom",
    "/feeds/vok-en" + "-x" * 1000 + ".atom",
    "/feeds/%ED%95%9C%EA%B5%AD%EC%96%B4.atom",
    "/feeds/vok%E2%80%90en.atom",
    "/feeds/vok-en%00.atom",
    "/feeds/vok-en.atom%00.html",
    VOK_ANCHOR,
    "/wp-login.php",
]


@pytest.mark.parametrize(
    "target", ESCAPES, ids=[t if len(t) < 60 else f"{t[:40]}...{len(t)}-chars" for t in ESCAPES]
)
def test_paths_that_try_to_escape_are_404_without_a_fetch(
    live: tuple[str, int], site: FakeSite, elsewhere: FakeSite, target: str
) -> None:
    target = target.format(elsewhere=elsewhere.url.removeprefix("http://"))
    status, content_type, _ = raw_get(live, target)
    assert status == 404
    assert content_type == "text/plain; charset=utf-8"
    assert site.hits() == 0
    assert elsewhere.hits() == 0


def test_no_parameter_or_header_leads_the_bridge_off_its_site(
    live: tuple[str, int], site: FakeSite, elsewhere: FakeSite
) -> None:
    other = elsewhere.url
    other_host = other.removeprefix("http://")
    query = "&".join(
        f"{name}={other}/newstream/1774000000-123456789/x/"
        for name in ("url", "upstream", "upstream_url", "site", "source", "feed", "redirect")
    )
    headers = {
        "X-Forwarded-Host": other_host,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": f"//{other_host}",
        "Forwarded": f"host={other_host};proto=http",
        "X-Original-URL": f"{other}/",
        "X-Rewrite-URL": "/newstream/1774000000-123456789/x/",
        "Referer": f"{other}/",
        "Origin": other,
    }
    # An absolute-form request target naming the other host, as a proxy would send it.
    status, content_type, body = raw_get(live, f"{other}/feeds/vok-en.atom?{query}", headers)
    assert status == 200
    check_feed(body, content_type)
    assert_inert_xml(body)
    assert elsewhere.hits() == 0
    assert [request.path for request in site.requests] == [VOK_ANCHOR]


def test_host_header_changes_self_links_only(
    app: Flask, site: FakeSite, elsewhere: FakeSite
) -> None:
    other_host = elsewhere.url.removeprefix("http://")
    response = app.test_client().get("/feeds/vok-en.atom", headers={"Host": other_host})
    root = check_feed(
        response.data, response.content_type, self_url=f"http://{other_host}/feeds/vok-en.atom"
    )
    assert_inert_xml(response.data)
    links = [link.get("href") for link in root.iter("{http://www.w3.org/2005/Atom}link")]
    item_links = [href for href in links if "/newstream/" in href]
    assert item_links and all(href.startswith(site.url + "/newstream/") for href in item_links)
    assert elsewhere.hits() == 0


@pytest.mark.parametrize("host", ["", "a b", '"><script>alert(1)</script>', "x/y", "-:80"])
def test_a_host_header_that_is_no_host_is_400(app: Flask, site: FakeSite, host: str) -> None:
    for path in ("/feeds/vok-en.atom", "/feeds.opml", "/"):
        response = app.test_client().get(path, headers={"Host": host})
        assert response.status_code == 400
        assert response.text.startswith("Host: ")
    assert site.hits() == 0


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def test_random_host_headers_grow_nothing_kept_or_shared(
    make_app: Callable[..., Flask], request: pytest.FixtureRequest, site: FakeSite, backend: str
) -> None:
    """2,000 hosts: each gets its own self links, but what is rendered, kept in memory and
    shared in the store is bounded whatever the Host says."""
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    app = make_app(redis_url=redis_url)
    client = app.test_client()
    assert client.get("/feeds/vok-en.atom").status_code == 200
    keys = _shared_keys(redis_url)
    service = app.extensions["feedbridge"]
    rng = random.Random(2026)
    for n in range(2000):
        host = f"h{rng.getrandbits(64):x}.example:{1000 + n % 60000}"
        response = client.get("/feeds/vok-en.atom", headers={"Host": host})
        assert response.status_code == 200
        assert f"http://{host}/feeds/vok-en.atom".encode() in response.data
    assert _shared_keys(redis_url) == keys, "no key made from a request"
    cache = service.stats().cache
    assert cache.feeds == 1, "rendered once, whatever the host"
    assert 0 < cache.served_bytes <= SERVED_BYTES
    assert site.hits() == 1


def _shared_keys(redis_url: str | None) -> set[bytes]:
    if redis_url is None:
        return set()
    with redis.Redis.from_url(redis_url) as client:
        return set(client.keys("*"))
