"""The scraper on small hand-made pages: each edge case in isolation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from feedbridge.errors import Blocked, LayoutChanged
from feedbridge.model import PYONGYANG, ArticleKey, merge_duplicates
from feedbridge.scrape import (
    article_link,
    parse_home,
    parse_listing,
)
from feedbridge.site import parse_article_date, parse_listed_date
from tests.conftest import SITE
from tests.fixtures import build

BASE = "http://127.0.0.1:9"
LABEL = "Voice of Korea (EN)"


def card(href: str, title: str, excerpt: str, listed: str = "March 22, 2026") -> str:
    """One listing item in the reconstructed markup (see tests/fixtures/README.md)."""
    return f"""
    <article class="clearfix">
      <div class="article-thumb"><a href="{href}"><img src="/logo.png" alt="{title}"></a></div>
      <div class="article-desc">
        <h4><a href="{href}">{title}</a></h4>
        <p>{excerpt}</p>
        <p class="articled-date"><span>{listed}</span></p>
        <p>{excerpt}</p>
      </div>
    </article>"""


def page(*cards: str, heading: str = f"More From {LABEL}", extra: str = "") -> bytes:
    more = card("/newstream/1774000000-999999999/other-source-story/", "Other", "Not ours")
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>
    <header><nav><a href="/newstream/1774000001-111111111/nav-story/">Nav story</a></nav></header>
    <div class="article-content"><p>Body of the anchor.</p>
      <a href="/newstream/1730538240-666693401/self/">self link</a></div>
    <h3>{heading}</h3>{"".join(cards)}
    <h3>More Articles</h3>{more}
    <aside><a href="/newstream/1774000002-222222222/sidebar-story/">Sidebar</a></aside>
    {extra}</body></html>""".encode()


def listing(*cards: str, **kwargs: str) -> list:
    return parse_listing(page(*cards, **kwargs), label=LABEL, base_url=BASE)


def test_reads_title_link_key_excerpt_date_and_thumbnail() -> None:
    [item] = listing(
        card(
            "https://kcnawatch.org/newstream/1774173600-123456789/cement-production-increases/",
            "Cement production increases",
            "The Sangwon Cement Complex is increasing the production.",
        )
    )
    assert item.key == ArticleKey(1774173600, "123456789")
    assert item.title == "Cement production increases"
    assert item.path == "/newstream/1774173600-123456789/cement-production-increases/"
    assert item.excerpt == "The Sangwon Cement Complex is increasing the production."
    assert item.listed == date(2026, 3, 22)
    assert item.thumbnail == f"{BASE}/logo.png"
    assert item.source == LABEL


@pytest.mark.parametrize(
    ("src", "url"),
    [
        ("\\", f"{BASE}/%5C"),  # found by Hypothesis: a backslash
        ("/logo one.png", f"{BASE}/logo%20one.png"),
        ("/a&quot;&lt;b&gt;.png", f"{BASE}/a%22%3Cb%3E.png"),  # as the markup escapes it
        ("/로고.png", f"{BASE}/%EB%A1%9C%EA%B3%A0.png"),
    ],
)
def test_a_thumbnail_is_a_url_a_reader_can_follow(src: str, url: str) -> None:
    markup = card("/newstream/1774173600-123456789/a/", "A", "a a").replace("/logo.png", src)
    [item] = listing(markup)
    assert item.thumbnail == url


def test_only_the_more_from_block_counts() -> None:
    items = listing(card("/newstream/1774173600-123456789/a/", "A", "a a"))
    assert [str(i.key) for i in items] == ["1774173600-123456789"]


@pytest.mark.parametrize(
    "href",
    [
        "https://kcnawatch.org/newstream/1774173600-1234567/x/",
        "http://kcnawatch.org/newstream/1774173600-1234567/x/",
        "https://www.kcnawatch.org/newstream/1774173600-1234567/x",
        "/newstream/1774173600-1234567/x/?utm_source=feed",
        "/newstream/1774173600-1234567/x/#comments",
        "/newstream/1774173600-1234567/another-slug/",
        "/newstream/1774173600-1234567",
        f"{BASE}/newstream/1774173600-1234567/x/",
    ],
)
def test_links_in_any_form_give_the_same_key(href: str) -> None:
    found = article_link(href, base_url=BASE)
    assert found is not None
    assert found[0] == ArticleKey(1774173600, "1234567")
    assert found[0].tag_uri == "tag:kcnawatch.org,2014:newstream/1774173600-1234567"


@pytest.mark.parametrize(
    "href",
    [
        "https://evil.example/newstream/1774173600-1234567/x/",
        "javascript:alert(1)",
        "/newstream/abc-123/x/",
        "/newstream/1774173600-1234567/x/y/",
        "/about/",
        "mailto:x@kcnawatch.org",
    ],
)
def test_other_links_are_not_articles(href: str) -> None:
    assert article_link(href, base_url=BASE) is None


def test_percent_encoded_korean_slug_is_kept_encoded() -> None:
    slug = "%EA%B9%80%EC%A0%95%EC%9D%80"
    _, path = article_link(f"/newstream/1774173600-123456789/{slug}/", base_url=BASE) or ()
    assert path == f"/newstream/1774173600-123456789/{slug}/"
    _, raw_path = article_link("/newstream/1774173600-123456789/김정은/", base_url=BASE) or ()
    assert raw_path == path


def test_entities_typographic_quotes_and_control_characters() -> None:
    [item] = listing(
        card(
            "/newstream/1774173600-123456789/x/",
            "Russia decries West&#8217;s &quot;despicable&quot; behaviour &amp; more\x0b",
            "Text\x00 with\x1f controls",
        )
    )
    assert item.title == 'Russia decries West’s "despicable" behaviour & more'
    assert item.excerpt == "Text with controls"


def test_vertical_tab_and_form_feed_separate_words() -> None:
    [item] = listing(
        card("/newstream/1774173600-123456789/x/", "Tree planting\x0bcompleted", "a\x0cb")
    )
    assert (item.title, item.excerpt) == ("Tree planting completed", "a b")


def test_label_matches_case_insensitively() -> None:
    items = listing(
        card("/newstream/1774173600-123456789/a/", "A", "a a"),
        heading="MORE FROM voice of korea (En)",
    )
    assert len(items) == 1


def test_wrong_label_is_a_layout_change() -> None:
    with pytest.raises(LayoutChanged, match="More From Voice of Korea"):
        listing(
            card("/newstream/1774173600-123456789/a/", "A", "a a"), heading="More From Naenara (En)"
        )


def test_empty_block_is_a_layout_change_not_an_empty_feed() -> None:
    with pytest.raises(LayoutChanged, match="lists no article"):
        listing()


def test_sign_up_wall_is_blocked() -> None:
    wall = b'<html><body><form class="nk-paywall-free-member-form"></form></body></html>'
    with pytest.raises(Blocked):
        parse_listing(wall, label=LABEL, base_url=BASE)


def test_title_falls_back_to_image_alt_then_slug() -> None:
    lighter = f"""<html><body><p>More From {LABEL}</p>
      <div><a href="/newstream/1774173600-123456789/successes-made-in-tree-planting/">
        <img src="/t.png" alt="Successes made in tree planting"></a>
        <p>Officials and working people in the city</p><p>March 22, 2026</p></div>
      <div><a href="/newstream/1774087200-223456789/textile-mills-at-work/">
        <img src="/t.png" alt=""></a>
        <p>Workers of the textile mills</p><p>March 21, 2026</p></div>
      <p>More Articles</p></body></html>""".encode()
    first, second = parse_listing(lighter, label=LABEL, base_url=BASE)
    assert first.title == "Successes made in tree planting"
    assert first.excerpt == "Officials and working people in the city"
    assert second.title == "Textile mills at work"
    assert second.listed == date(2026, 3, 21)


def test_story_ingested_twice_is_one_item_the_earliest() -> None:
    items = listing(
        card(
            "/newstream/1774260000-900000002/request/",
            "Request with Deep Trust",
            "x y",
            "March 18, 2026",
        ),
        card(
            "/newstream/1774173600-900000001/request/",
            "Request with Deep Trust",
            "x y",
            "March 18, 2026",
        ),
        card(
            "/newstream/1774173600-900000001/request-2/",
            "Request with Deep Trust",
            "x y",
            "March 18, 2026",
        ),
    )
    assert [str(i.key) for i in items] == ["1774173600-900000001"]


def test_same_title_on_other_days_is_not_a_duplicate() -> None:
    items = merge_duplicates(
        listing(
            card("/newstream/1774260000-900000002/p/", "Press review", "x y", "March 19, 2026"),
            card("/newstream/1774173600-900000001/p/", "Press review", "x y", "March 18, 2026"),
        )
    )
    assert len(items) == 2


def test_anchor_article_itself_is_skipped() -> None:
    body = page(
        card("/newstream/1730538240-666693401/self/", "Self", "x y"),
        card("/newstream/1774173600-123456789/a/", "A", "a a"),
    )
    items = parse_listing(
        body, label=LABEL, base_url=BASE, page_path="/newstream/1730538240-666693401/self/"
    )
    assert [str(i.key) for i in items] == ["1774173600-123456789"]


def test_charset_from_http_header_wins_and_meta_is_used_otherwise() -> None:
    html = page(card("/newstream/1774173600-123456789/a/", "Kim’s visit", "é"))
    latin = html.decode().replace("’", "'").replace('charset="utf-8"', "").encode("cp1252")
    [item] = parse_listing(latin, label=LABEL, base_url=BASE, encoding="windows-1252")
    assert item.excerpt == "é"


def test_home_page_lists_latest_articles_with_source_logos() -> None:
    body = f"""<html><body><h2>Latest Articles from North Korea</h2>
      {card("/newstream/1774173600-123456789/a/", "A story", "Excerpt a")}
      <h2>More Articles</h2>{card("/newstream/1774000000-999999999/b/", "B", "b")}
      </body></html>""".replace(
        '<div class="article-desc">',
        f'<div class="article-desc"><img class="source-logo" src="/l.png" alt="{LABEL}">',
        1,
    ).encode()
    [item] = parse_home(body, base_url=BASE)
    assert item.source == LABEL
    assert item.thumbnail == f"{BASE}/logo.png"


def test_garbage_is_a_layout_change() -> None:
    with pytest.raises(LayoutChanged):
        parse_listing(b"\x00\xff\xfe not html at all", label=LABEL, base_url=BASE)


def test_dates() -> None:
    assert parse_article_date("Date: 02/11/2024 | Source: Voice of Korea (EN)") == date(2024, 11, 2)
    assert parse_article_date("Date: 31/02/2024") is None
    assert parse_listed_date(" January 02, 2026") == date(2026, 1, 2)
    assert parse_listed_date("March 22, 2026Mar 22, 2026") == date(2026, 3, 22)


def test_published_is_the_url_timestamp_else_the_listed_day_in_pyongyang() -> None:
    [item] = listing(card("/newstream/1774173600-123456789/a/", "A", "a a"))
    assert item.published == datetime.fromtimestamp(1774173600, UTC)
    [odd] = listing(card("/newstream/0000000001-123456789/a/", "A", "a a"))
    assert odd.published == datetime(2026, 3, 22, tzinfo=PYONGYANG)


# --- saved pages, made hostile ----------------------------------------------------------

SEED = (SITE / "articles" / "1730538240-666693401.html").read_text()
SEED_BLOCK = SEED.index(f"More From {LABEL}")
SITE_BASE = "https://kcnawatch.org"


def seed_listing(markup: str) -> list:
    return parse_listing(markup.encode(), label=LABEL, base_url=SITE_BASE)


@pytest.mark.parametrize("depth", [254, 300, 5000])
def test_a_page_nested_past_the_parsers_depth_limit_keeps_its_listing(depth: int) -> None:
    # libxml2 stops at 256 open elements and drops the rest of the page.
    content = SEED.index('<div class="article-content"')
    deep = SEED[:content] + "<div><span>" * (depth // 2) + SEED[content:]
    assert [item.key for item in seed_listing(deep)] == [item.key for item in seed_listing(SEED)]


def test_a_block_of_one_short_card_is_a_block_of_one_item() -> None:
    # The block's whole text is then as short as a heading's: it is still a listing.
    first = SEED.index('<article class="clearfix">', SEED_BLOCK)
    card_end = SEED.index("</article>", first) + len("</article>")
    [original] = seed_listing(SEED[:card_end] + SEED[SEED.index("</section>", card_end) :])
    card = (
        SEED[first:card_end]
        .replace(original.title, "Photo session")
        .replace(original.excerpt, "Photo session held.")
    )
    page = SEED[:first] + card + SEED[SEED.index("</section>", card_end) :]
    [item] = seed_listing(page)
    assert (item.key, item.title, item.excerpt) == (
        original.key,
        "Photo session",
        "Photo session held.",
    )
    assert item.listed == original.listed


def test_the_saved_pages_are_what_build_py_writes() -> None:
    """tests/fixtures/build.py is the one source of the saved pages: change it and run it
    (``python3 -m tests.fixtures.build``), never a page by hand."""
    written = build.pages()
    saved = {*build.SITE.rglob("*.html"), *build.VARIANTS.rglob("*.html")}
    assert saved == set(written), "pages on disk that build.py does not write, or missing"
    stale = [str(p) for p, text in written.items() if p.read_text("utf-8") != text]
    assert stale == [], "out of step with build.py"
