"""JSON Feed 1.1 and OPML 2.0: what their specs require, and the same story as the XML feeds."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import datetime

import pytest
from flask import Flask
from lxml import etree

from feedbridge.categories import load_registry
from tests.conftest import FakeSite, settle
from tests.feedspec import ATOM_NS, check_feed

REGISTRY = load_registry()
MEDIA_NS = "http://search.yahoo.com/mrss/"


def fetch(app: Flask, path: str, media_type: str) -> bytes:
    response = app.test_client().get(path)
    assert response.status_code == 200, response.text
    assert response.content_type == f"{media_type}; charset=utf-8"
    return response.data


@pytest.mark.parametrize("slug", REGISTRY)
def test_json_feed_is_json_feed_1_1_with_the_atom_feeds_items(
    make_app: Callable[..., Flask], site: FakeSite, slug: str
) -> None:
    app = make_app(fulltext=True)
    fetch(app, f"/feeds/{slug}.json", "application/feed+json")
    settle(app)  # full text follows the listing
    body = fetch(app, f"/feeds/{slug}.json", "application/feed+json")
    self_url = f"http://localhost/feeds/{slug}.json"
    feed = check_feed(body, "application/feed+json", self_url=self_url)
    # What the 1.1 spec requires of a feed and of each item, spelled out.
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] == f"KCNA Watch — {REGISTRY[slug].title}"
    assert feed["feed_url"] == self_url
    assert feed["home_page_url"] == site.url + REGISTRY[slug].paths[0]
    assert isinstance(feed["items"], list) and feed["items"]
    ids = [item["id"] for item in feed["items"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and i for i in ids)
    for item in feed["items"]:
        assert "content_html" in item or "content_text" in item
        assert datetime.fromisoformat(item["date_published"]).utcoffset() is not None
        assert item["url"].startswith(f"{site.url}/newstream/")

    atom = etree.fromstring(fetch(app, f"/feeds/{slug}.atom", "application/atom+xml"))
    entries = atom.findall(f"{{{ATOM_NS}}}entry")
    assert ids == [e.findtext(f"{{{ATOM_NS}}}id") for e in entries]
    assert [datetime.fromisoformat(item["date_published"]) for item in feed["items"]] == [
        datetime.fromisoformat(e.findtext(f"{{{ATOM_NS}}}published")) for e in entries
    ]
    for item, entry in zip(feed["items"], entries, strict=True):
        assert item["title"] == entry.findtext(f"{{{ATOM_NS}}}title")
        # The JSON summary is text; Atom's is the same text, escaped as HTML.
        assert html.escape(item["summary"], quote=False) == entry.findtext(f"{{{ATOM_NS}}}summary")
        assert item["content_html"] == entry.findtext(f"{{{ATOM_NS}}}content")
        assert item.get("tags", []) == [
            c.get("term") for c in entry.findall(f"{{{ATOM_NS}}}category")
        ]
        thumbnails = [t.get("url") for t in entry.iter(f"{{{MEDIA_NS}}}thumbnail")]
        assert [item["image"]] == thumbnails if "image" in item else thumbnails == []


def test_json_item_without_a_thumbnail_has_no_image(app: Flask) -> None:
    feed = json.loads(fetch(app, "/feeds/pyongyang-times.json", "application/feed+json"))
    [item] = [i for i in feed["items"] if i["id"].endswith("/1773554347-94279331")]
    assert "image" not in item
    assert sum("image" in i for i in feed["items"]) == len(feed["items"]) - 1


def test_json_feed_has_validators_and_answers_304(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/feeds/vok-en.json", headers={"Accept-Encoding": "gzip"})
    assert first.headers["Content-Encoding"] == "gzip"
    again = client.get("/feeds/vok-en.json", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    ("query", "fmt"), [("", "atom"), ("?format=rss", "rss"), ("?format=json", "json")]
)
def test_opml_lists_every_categorys_feed_atom_by_default(
    app: Flask, site: FakeSite, query: str, fmt: str
) -> None:
    root = check_feed(fetch(app, f"/feeds.opml{query}", "text/x-opml"), "text/x-opml")
    assert root.findtext("head/title") == "KCNA Watch feeds from feedbridge"
    outlines = root.findall("body/outline")
    assert [(o.get("type"), o.get("text"), o.get("title"), o.get("xmlUrl")) for o in outlines] == [
        ("rss", c.feed_title, c.feed_title, f"http://localhost/feeds/{slug}.{fmt}")
        for slug, c in REGISTRY.items()
    ]
    assert site.hits() == 0
