"""The front page: every feed, cached headlines, autodiscovery; rendered by Chromium."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from flask import Flask
from werkzeug.serving import make_server

from feedbridge.categories import load_registry
from tests.conftest import FIXTURES, FakeSite

REGISTRY = load_registry()
VOK_ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)
FEED_TYPES = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
# Headless, offline, no profile left behind: only the page under test is loaded.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-device-scale-factor=1",
)  # fmt: skip


def page(app: Flask) -> lxml.html.HtmlElement:
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    return lxml.html.document_fromstring(response.data)


def check_lists_every_feed(doc: lxml.html.HtmlElement, root: str) -> None:
    """Every category with its title and three feed links, the OPML links, autodiscovery."""
    alternates = {
        (link.get("type"), link.get("href")) for link in doc.xpath("//head/link[@rel='alternate']")
    }
    assert ("text/x-opml", f"{root}feeds.opml") in alternates
    hrefs = set(doc.xpath("//body//a/@href"))
    assert {f"{root}feeds.opml", f"{root}feeds.opml?format=rss"} <= hrefs
    for slug, category in REGISTRY.items():
        [card] = doc.xpath(f"//section[@aria-labelledby='feed-{slug}']")
        assert card.xpath("string(.//h2)").startswith(category.title)
        links = {a.get("href"): a.get("type") for a in card.xpath(".//ul[@class='feeds']//a")}
        for fmt, media_type in FEED_TYPES.items():
            url = f"{root}feeds/{slug}.{fmt}"
            assert links[url] == media_type
            assert (media_type, url) in alternates
    assert len(alternates) == 3 * len(REGISTRY) + 1


def test_front_page_lists_every_feed_without_touching_the_site(app: Flask, site: FakeSite) -> None:
    doc = page(app)
    check_lists_every_feed(doc, "http://localhost/")
    assert doc.get("lang") == "en"
    assert doc.xpath("//meta[@name='viewport']")
    assert not doc.xpath("//script")
    placeholders = doc.xpath("//p[@class='empty']")
    assert len(placeholders) == len(REGISTRY), "nothing is cached yet"
    assert site.hits() == 0


def test_front_page_shows_the_newest_cached_headlines(app: Flask, site: FakeSite) -> None:
    app.test_client().get("/feeds/vok-en.atom")
    hits = site.hits()
    doc = page(app)
    [card] = doc.xpath("//section[@aria-labelledby='feed-vok-en']")
    headlines = [
        (a.text_content(), a.get("href"), time.get("datetime"), time.text_content())
        for a, time in zip(card.xpath(".//ol//a"), card.xpath(".//ol//time"), strict=True)
    ]
    assert headlines == [
        (
            "Cement production increases",
            f"{site.url}/newstream/1774175393-841384190/cement-production-increases/",
            "2026-03-22T10:29:53+00:00",
            "22 March 2026",
        ),
        (
            "Production increases at different units of national economy",
            f"{site.url}/newstream/1774168186-216401676/"
            "production-increases-at-different-units-of-national-economy/",
            "2026-03-22T08:29:46+00:00",
            "22 March 2026",
        ),
        (
            "Successes made in tree planting",
            f"{site.url}/newstream/1774160113-397221769/successes-made-in-tree-planting/",
            "2026-03-22T06:15:13+00:00",
            "22 March 2026",
        ),
    ]
    assert len(doc.xpath("//p[@class='empty']")) == len(REGISTRY) - 1
    assert site.hits() == hits, "the page never fetches"


def test_scraped_text_on_the_front_page_is_escaped(app: Flask, site: FakeSite) -> None:
    site.override(VOK_ANCHOR, (FIXTURES / "variants" / "hostile.html").read_bytes())
    assert app.test_client().get("/feeds/vok-en.atom").status_code == 200
    raw = app.test_client().get("/").text
    assert "&lt;b&gt;Bold&lt;/b&gt; title with ]]&gt; inside" in raw
    doc = lxml.html.document_fromstring(raw)
    [card] = doc.xpath("//section[@aria-labelledby='feed-vok-en']")
    assert len(card.xpath(".//ol/li")) == 3
    assert not doc.xpath("//script | //iframe | //svg | //b | //*[@style]")
    assert not [name for el in doc.iter() for name in el.attrib if name.startswith("on")]
    assert not doc.xpath("//a[starts-with(normalize-space(@href), 'javascript:')]")


# --- in a real browser -------------------------------------------------------------------


def find_chromium() -> str:
    """Chromium's path; without it the browser test is skipped, or fails on CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_without_chromium_the_browser_test_fails_on_ci_only(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium is not installed"):
        find_chromium()


@pytest.fixture
def chromium() -> str:
    return find_chromium()


# What a person sees, measured in the page by the browser itself: the front page in a
# frame as wide as the screen, from the same origin, and every feed link checked where
# it is drawn (inside the screen, not covered: what a tap at its middle would hit).
PROBE = """<!doctype html><html><head><meta charset="utf-8"></head>
<body style="margin:0"><iframe id="page" src="/" style="border:0;width:WIDTHpx;height:800px">
</iframe><script>
document.getElementById("page").addEventListener("load", () => {
  const doc = document.getElementById("page").contentDocument;
  const view = doc.defaultView;
  const links = [...doc.querySelectorAll("a[href*='/feeds']")];
  const hidden = links.filter(link => {
    link.scrollIntoView({block: "center"});
    const box = link.getBoundingClientRect();
    if (box.width < 1 || box.height < 1 || box.left < 0 || box.right > view.innerWidth) {
      return true;
    }
    const hit = doc.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return !(hit === link || link.contains(hit));
  }).map(link => link.getAttribute("href"));
  document.body.dataset.seen = JSON.stringify({
    pageWidth: doc.documentElement.scrollWidth, screenWidth: view.innerWidth,
    links: links.length, hidden});
});
</script></body></html>"""


def with_probe(app: Flask) -> Callable[..., Iterable[bytes]]:
    """The app, and ``/__probe?width=N``: the page above, for the browser to load."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/__probe":
            return app(environ, start_response)
        width = environ.get("QUERY_STRING", "").removeprefix("width=")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [PROBE.replace("WIDTH", str(int(width))).encode()]

    return serve


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a real local server, for a real browser."""
    server = make_server("127.0.0.1", 0, with_probe(app), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join(timeout=5)


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.e2e
def test_front_page_in_chromium_on_a_phone_and_a_desktop(
    app: Flask, site: FakeSite, served: str, chromium: str, tmp_path: Path
) -> None:
    client = app.test_client()
    for slug in REGISTRY:
        assert client.get(f"/feeds/{slug}.atom").status_code == 200
    hits = site.hits()

    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", served).stdout
    doc = lxml.html.document_fromstring(dom)
    check_lists_every_feed(doc, served)
    [card] = doc.xpath("//section[@aria-labelledby='feed-vok-en']")
    assert card.xpath("string(.//ol/li[1]/a)") == "Cement production increases"

    for name, width, height in (("phone", 390, 844), ("desktop", 1280, 1500)):
        shot = tmp_path / f"front-page-{name}.png"
        run_chromium(
            chromium,
            tmp_path / "profile",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            served,
        )
        assert png_size(shot) == (width, height)
        assert shot.stat().st_size > 20_000, "a blank page compresses to almost nothing"

        probe = run_chromium(
            chromium, tmp_path / "profile", "--virtual-time-budget=10000",
            f"--window-size={width},{height}", "--dump-dom", f"{served}__probe?width={width}",
        ).stdout  # fmt: skip
        [seen] = lxml.html.document_fromstring(probe).xpath("//body/@data-seen")
        sight = json.loads(seen)
        assert sight["pageWidth"] <= sight["screenWidth"] == width, f"{name}: scrolls sideways"
        assert sight["links"] == 3 * len(REGISTRY) + 2, sight  # and the two OPML links
        assert sight["hidden"] == [], f"{name}: links not visible or not tappable"
    assert site.hits() == hits, "the browser's visits never reach the site"
