"""The feed-level fields of a category's feed: a pure function of the category, the
site's address and the hub, which the service and the bench both call."""

from __future__ import annotations

from feedbridge.categories import load_registry
from feedbridge.feed_cache import ROOT_MARKER, feed_info

REGISTRY = load_registry()
BASE = "https://kcnawatch.org"


def test_a_sources_feed_says_whose_it_is_and_links_its_listing() -> None:
    vok = REGISTRY["vok-en"]
    info = feed_info(vok, BASE, None, ROOT_MARKER + "feeds/vok-en.atom")
    assert info.id == "tag:kcnawatch.org,2014:feedbridge/vok-en"
    assert info.title == vok.feed_title
    assert vok.label is not None and vok.label in info.description
    assert info.home_url == BASE + vok.paths[0]
    assert (info.self_url, info.language, info.hub) == (
        ROOT_MARKER + "feeds/vok-en.atom",
        vok.language,
        None,
    )


def test_the_all_sources_feed_links_the_home_page_and_its_hub() -> None:
    info = feed_info(REGISTRY["all"], BASE, "https://hub.example/", "https://x/feeds/all.rss")
    assert info.description == "The latest articles from every source on KCNA Watch."
    assert (info.home_url, info.hub) == (BASE + "/", "https://hub.example/")
