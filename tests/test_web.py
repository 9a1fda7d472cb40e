"""The bridge end to end over HTTP: the fake site → the app → feeds parsed back."""

from __future__ import annotations

from datetime import UTC, datetime

import feedparser
import pytest
from flask import Flask
from werkzeug import Response

from feedbridge.categories import load_registry
from tests.conftest import FIXTURES, FakeSite
from tests.feedspec import check_feed

SLUGS = list(load_registry())
FORMATS = {"rss": "application/rss+xml", "atom": "application/atom+xml"}
VOK_TITLES = [
    "Cement production increases",
    "Production increases at different units of national economy",
    "Successes made in tree planting",
    "Reception given by DPRK embassy in Russia",
    'Glasswork "Caifubaoding"',
    "Production increases at textile mills",
    "Project of expanding garden park accelerated",
    "Active efforts made to cope with disastrous abnormal climate",
    "South Hamgyong Provincial Sci-Tech Festival held",
    "Events held and statements issued in Russia",
    "KCNA issues commentary",
]
VARIANTS = FIXTURES / "variants"
VOK_ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)


def get_feed(app: Flask, slug: str, fmt: str) -> tuple[bytes, feedparser.FeedParserDict]:
    response = app.test_client().get(f"/feeds/{slug}.{fmt}")
    assert response.status_code == 200, response.text
    assert response.content_type == f"{FORMATS[fmt]}; charset=utf-8"
    check_feed(
        response.data, response.content_type, self_url=f"http://localhost/feeds/{slug}.{fmt}"
    )
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo, parsed.bozo_exception
    return response.data, parsed


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("slug", SLUGS)
def test_every_category_in_every_format(app: Flask, slug: str, fmt: str) -> None:
    _, parsed = get_feed(app, slug, fmt)
    category = load_registry()[slug]
    assert parsed.feed.title == f"KCNA Watch — {category.title}"
    assert len(parsed.entries) >= 6
    ids = [entry.id for entry in parsed.entries]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("tag:kcnawatch.org,2014:newstream/") for i in ids)
    dates = [entry.published_parsed for entry in parsed.entries]
    assert dates == sorted(dates, reverse=True), "newest first"
    for entry in parsed.entries:
        assert entry.link.startswith("http://localhost:")  # the configured base
        assert "/newstream/" in entry.link
        assert entry.title and entry.summary
        if category.label:
            assert [tag.term for tag in entry.tags] == [category.label]


@pytest.mark.parametrize("fmt", FORMATS)
def test_voice_of_korea_has_the_seed_items(app: Flask, site: FakeSite, fmt: str) -> None:
    _, parsed = get_feed(app, "vok-en", fmt)
    assert [entry.title for entry in parsed.entries] == VOK_TITLES
    first = parsed.entries[0]
    assert first.id == "tag:kcnawatch.org,2014:newstream/1774175393-841384190"
    assert first.link == f"{site.url}/newstream/1774175393-841384190/cement-production-increases/"
    assert first.summary.startswith("The Sangwon Cement Complex is increasing the production.")
    published = datetime(*first.published_parsed[:6], tzinfo=UTC)
    assert published == datetime.fromtimestamp(1774175393, UTC)
    assert site.hits(VOK_ANCHOR) == 1


def test_thumbnail_is_a_media_element(app: Flask) -> None:
    body, parsed = get_feed(app, "vok-en", "atom")
    assert b"media:thumbnail" in body
    assert parsed.entries[0].media_thumbnail[0]["url"].endswith("vok-logo-300x169.png")


def test_story_ingested_twice_is_one_item(app: Flask) -> None:
    _, parsed = get_feed(app, "kcna-kp-en", "atom")
    titles = [entry.title for entry in parsed.entries]
    strives = "DPRK Strives for Sustainable Development and Use of Water Resources"
    assert titles.count(strives) == 1
    [entry] = [e for e in parsed.entries if e.title == strives]
    assert entry.id.endswith("/1774107706-345086574")  # the earlier ingestion


def test_korean_titles_and_slugs_survive(app: Flask, site: FakeSite) -> None:
    _, parsed = get_feed(app, "all", "rss")
    [entry] = [e for e in parsed.entries if e.title.startswith("김정은동지께서")]
    assert "/newstream/1774169966-655631566/%ea%b9%80" in entry.link.lower()


@pytest.mark.parametrize(
    "path", ["/feeds/nope.atom", "/feeds/vok-en.xml", "/feeds/vok-en", "/feeds/.atom", "/nope"]
)
def test_unknown_feed_is_404_naming_the_categories(app: Flask, site: FakeSite, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 404
    assert response.content_type.startswith("text/plain")
    if path.startswith("/feeds/"):
        assert all(slug in response.text for slug in SLUGS)
    assert site.hits() == 0


def test_gone_anchor_falls_through_to_the_next(app: Flask, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, lambda _request: _gone())
    _, parsed = get_feed(app, "vok-en", "atom")
    assert [entry.title for entry in parsed.entries] == VOK_TITLES
    assert site.hits(VOK_ANCHOR) == 1
    assert (
        site.hits(
            "/newstream/1708592656-143490621/creation-of-raw-material-bases-promoted-to-implement-new-regional-development-policy/"
        )
        == 1
    )


def test_page_with_no_items_is_a_502_not_an_empty_feed(app: Flask, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, (VARIANTS / "empty-listing.html").read_bytes())
    response = app.test_client().get("/feeds/vok-en.atom")
    assert response.status_code == 502
    assert response.headers["Cache-Control"] == "no-store"
    assert response.text == "upstream failure: the site's page lists no story the bridge can read\n"


@pytest.mark.parametrize("variant", ["vok-en-template-b.html", "vok-en-template-c.html"])
def test_ids_identical_across_templates(app: Flask, site: FakeSite, make_app, variant: str) -> None:
    _, template_a = get_feed(app, "vok-en", "atom")
    site.override(VOK_ANCHOR, (VARIANTS / variant).read_bytes())
    _, other = get_feed(make_app(), "vok-en", "atom")
    assert [e.id for e in other.entries] == [e.id for e in template_a.entries]
    assert [e.title for e in other.entries] == [e.title for e in template_a.entries]
    assert [e.published for e in other.entries] == [e.published for e in template_a.entries]


def test_healthz_does_not_touch_the_site(app: Flask, site: FakeSite) -> None:
    assert app.test_client().get("/healthz").text == "ok\n"
    assert site.hits() == 0


@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/status", "/metrics", "/feeds.opml", "/feeds/vok-en.atom",
     "/feeds/vok-en.json", "/feeds/nope.atom", "/feeds/vok-en.rss?limit=0"],
)  # fmt: skip
def test_every_answer_forbids_content_sniffing(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff", response.status


def _gone() -> Response:
    return Response("<html><body>Page not found</body></html>", status=404, mimetype="text/html")


def test_opml_with_a_bad_format_is_400(app: Flask) -> None:
    response = app.test_client().get("/feeds.opml?format=xml")
    assert response.status_code == 400 and response.text.startswith("format:")
