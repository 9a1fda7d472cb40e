"""The only HTTP client of the bridge against hostile or broken answers from the site.

A real local server plays the site (no mocked ``requests``). What the client reads is
counted through a public ``requests`` response hook, so a test can show that a body was
cut at the cap rather than read whole and checked afterwards.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterator

import pytest
import requests
from werkzeug import Response

from feedbridge.errors import Blocked, TooLarge, UpstreamError
from feedbridge.feeds import FeedInfo, Format, render
from feedbridge.scrape import parse_home
from feedbridge.upstream import MAX_REDIRECTS, Upstream
from tests.conftest import SITE, FakeSite, loaded_by
from tests.feedspec import check_feed

CAP = 1024 * 1024
CHUNK = 64 * 1024
HUGE = 64 * 1024 * 1024  # far more than any socket buffer holds, so a full read shows
KOREAN_TITLE = "김정은동지께서 강동온실농장을 현지지도하시였다"


class Tally:
    """Counts the decoded body bytes the client is handed, response by response."""

    def __init__(self) -> None:
        self.total = 0
        self.largest = 0

    def hook(self, response: requests.Response, **_kwargs: object) -> requests.Response:
        stream = response.raw.stream

        def counted(*args: object, **kwargs: object) -> Iterator[bytes]:
            for chunk in stream(*args, **kwargs):
                self.total += len(chunk)
                self.largest = max(self.largest, len(chunk))
                yield chunk

        response.raw.stream = counted
        return response


class Source:
    """A body of ``size`` bytes served in chunks, counting what the server produced."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.produced = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"<html><body>"
        while self.produced < self.size:
            self.produced += CHUNK
            yield b"x" * CHUNK


@pytest.fixture
def tally() -> Tally:
    return Tally()


@pytest.fixture
def upstream(site: FakeSite, tally: Tally) -> Upstream:
    session = requests.Session()
    session.hooks["response"].append(tally.hook)
    return Upstream(site.url, max_bytes=CAP, min_interval=0.0, session=session)


def redirect(location: str, status: int = 302) -> Response:
    return Response("", status=status, headers={"Location": location})


# --- size cap -----------------------------------------------------------------------


def test_declared_oversized_body_is_refused_unread(
    upstream: Upstream, site: FakeSite, tally: Tally
) -> None:
    source = Source(HUGE)
    site.override(
        "/big",
        Response(source, content_type="text/html", headers={"Content-Length": str(HUGE + 12)}),
    )
    with pytest.raises(TooLarge, match="over the 1048576 cap"):
        upstream.fetch("/big")
    assert tally.total == 0
    assert source.produced < HUGE // 2


def test_a_content_length_int_refuses_is_no_crash(upstream: Upstream, site: FakeSite) -> None:
    # "²" is a digit to str.isdigit(), not to int(): the body is read, within the cap.
    response = Response(b"<html></html>", content_type="text/html")
    response.headers["Content-Length"] = "\u00b2"
    response.headers["Connection"] = "close"
    site.override("/odd", response)
    assert upstream.fetch("/odd").body == b"<html></html>"
    response.headers["Content-Length"] = "9" * 40  # more than the cap, whatever int() says
    with pytest.raises(TooLarge):
        upstream.fetch("/odd")


def test_undeclared_oversized_body_is_cut_at_the_cap(
    upstream: Upstream, site: FakeSite, tally: Tally
) -> None:
    source = Source(HUGE)  # no Content-Length: sent chunked
    site.override("/big", Response(source, content_type="text/html"))
    with pytest.raises(TooLarge, match="over the 1048576-byte cap"):
        upstream.fetch("/big")
    assert CAP < tally.total <= CAP + CHUNK
    assert source.produced < HUGE // 2


def test_gzip_bomb_is_cut_at_the_cap_as_it_inflates(
    upstream: Upstream, site: FakeSite, tally: Tally
) -> None:
    # 64 gzip members of 1 MiB of spaces each: about 64 KiB on the wire, 64 MiB inflated.
    member = gzip.compress(b" " * (1024 * 1024), 9)
    bomb = gzip.compress(b"<html><body>", 9) + member * 64
    assert len(bomb) < CAP // 8
    site.override(
        "/bomb",
        Response(bomb, content_type="text/html", headers={"Content-Encoding": "gzip"}),
    )
    with pytest.raises(TooLarge):
        upstream.fetch("/bomb")
    assert CAP < tally.total <= CAP + CHUNK
    assert tally.largest <= CHUNK, "inflated more than one chunk at a time"


def test_gzip_body_under_the_cap_is_inflated(upstream: Upstream, site: FakeSite) -> None:
    html = (SITE / "home.html").read_bytes()
    site.override(
        "/",
        Response(
            gzip.compress(html), content_type="text/html", headers={"Content-Encoding": "gzip"}
        ),
    )
    assert upstream.fetch("/").body == html


# --- redirects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "{elsewhere}/newstream/1730538240-666693401/x/",
        "//{elsewhere_netloc}/newstream/1730538240-666693401/x/",
        "https://{site_netloc}/newstream/1730538240-666693401/x/",
        "http://kcnawatch.org/newstream/1730538240-666693401/x/",
    ],
    ids=["other-host", "protocol-relative", "other-scheme", "the-real-site"],
)
def test_redirect_off_the_configured_site_is_refused(
    upstream: Upstream, site: FakeSite, elsewhere: FakeSite, target: str
) -> None:
    location = target.format(
        elsewhere=elsewhere.url,
        elsewhere_netloc=elsewhere.url.removeprefix("http://"),
        site_netloc=site.url.removeprefix("http://"),
    )
    site.override("/moved", redirect(location))
    with pytest.raises(Blocked, match="off the site"):
        upstream.fetch("/moved")
    assert site.hits("/moved") == 1
    assert elsewhere.hits() == 0


def test_redirect_to_the_sign_up_wall_is_blocked(upstream: Upstream, site: FakeSite) -> None:
    site.override("/moved", redirect("/free-member-form/?redirect_to=%2Fmoved"))
    with pytest.raises(Blocked, match="sign-up wall"):
        upstream.fetch("/moved")
    assert site.hits("/free-member-form/") == 0


def test_redirect_on_the_site_is_followed(upstream: Upstream, site: FakeSite) -> None:
    site.override("/old", redirect("/", status=301))
    page = upstream.fetch("/old")
    assert page.url == site.url + "/"
    assert page.body == (SITE / "home.html").read_bytes()


@pytest.mark.parametrize("cycle", [["/loop"], ["/a", "/b"]], ids=["self", "two-step"])
def test_redirect_loop_is_bounded(upstream: Upstream, site: FakeSite, cycle: list[str]) -> None:
    for here, there in itertools.pairwise([*cycle, cycle[0]]):
        site.override(here, redirect(there))
    with pytest.raises(UpstreamError, match=f"more than {MAX_REDIRECTS} redirects"):
        upstream.fetch(cycle[0])
    assert site.hits() == MAX_REDIRECTS + 1


# --- charsets -----------------------------------------------------------------------


def serve_home(site: FakeSite, body: bytes, content_type: str) -> None:
    site.override("/", Response(body, headers={"Content-Type": content_type}))


def home_titles(upstream: Upstream) -> list[str]:
    page = upstream.fetch("/")
    items = parse_home(page.body, base_url=upstream.base_url, encoding=page.encoding)
    info = FeedInfo("tag:kcnawatch.org,2014:t", "t", "d", "http://b/f.atom", "http://b/")
    check_feed(render(Format.ATOM, info, items, base_url=upstream.base_url), "application/atom+xml")
    return [item.title for item in items]


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/html; charset=", "text/html; charset=x-no-such-charset"],
    ids=["missing", "empty", "unknown"],
)
def test_missing_or_unknown_charset_falls_back_to_the_page(
    upstream: Upstream, site: FakeSite, content_type: str
) -> None:
    serve_home(site, (SITE / "home.html").read_bytes(), content_type)
    assert KOREAN_TITLE in home_titles(upstream)


def test_utf16_with_a_byte_order_mark_and_no_charset(upstream: Upstream, site: FakeSite) -> None:
    text = (SITE / "home.html").read_text("utf-8").replace('charset="UTF-8"', "")
    serve_home(site, text.encode("utf-16"), "text/html")
    assert KOREAN_TITLE in home_titles(upstream)


def test_charset_that_cannot_decode_the_body_falls_back(upstream: Upstream, site: FakeSite) -> None:
    # The header claims UTF-8; the body is EUC-KR (as its own meta tag says).
    text = (SITE / "home.html").read_text("utf-8").replace('charset="UTF-8"', 'charset="EUC-KR"')
    serve_home(site, text.encode("euc-kr"), "text/html; charset=UTF-8")
    assert KOREAN_TITLE in home_titles(upstream)


def test_wrong_single_byte_charset_keeps_items_and_xml_well_formed(
    upstream: Upstream, site: FakeSite
) -> None:
    """The header wins over the page, as in browsers: text may be garbled, nothing else."""
    body = (SITE / "home.html").read_bytes()
    serve_home(site, body, "text/html; charset=UTF-8")
    right = home_titles(upstream)
    serve_home(site, body, "text/html; charset=ISO-8859-1")
    wrong = home_titles(upstream)
    assert len(wrong) == len(right)
    assert KOREAN_TITLE not in wrong
    assert [t for t in wrong if t.isascii()] == [t for t in right if t.isascii()]


def test_credentials_in_the_site_url_are_sent_never_shown(site: FakeSite) -> None:
    host = site.url.removeprefix("http://")
    upstream = Upstream(f"http://reader:s%40cret@{host}/", min_interval=0)
    assert upstream.base_url == site.url
    upstream.fetch("/")
    assert site.requests[-1].authorization is not None
    assert (site.requests[-1].authorization.username, site.requests[-1].authorization.password) == (
        "reader",
        "s@cret",
    )
    with pytest.raises(UpstreamError) as error:
        upstream.fetch("/no/such/page")
    assert "cret" not in str(error.value) and host in str(error.value)


def test_the_http_client_loads_no_store_and_no_scraper() -> None:
    """Importing the site's client costs the client: the stores, the scraper and the
    parsers it would drag in stay out (the site's pause in the store lives there)."""
    watched = ("feedbridge.store", "feedbridge.scrape", "lxml", "bs4", "redis", "sqlite3")
    assert loaded_by("feedbridge.upstream", watched) == []
