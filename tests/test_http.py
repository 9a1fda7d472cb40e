"""Caching and HTTP semantics, against a real local server playing the site.

The cache's clock is the test's ``Clock``: expiry and back-off are driven by hand, and the
site's slow answers are held on an ``Event`` the test releases, so nothing here depends
on real timing.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from werkzeug import Request, Response

from feedbridge import first_fetch, refresh
from feedbridge.config import Timeout
from tests.conftest import FIXTURES, Clock, FakeSite, settle
from tests.feedspec import check_feed

VARIANTS = FIXTURES / "variants"
FEED = "/feeds/vok-en.atom"
ANCHOR = (
    "/newstream/1730538240-666693401/"
    "press-release-on-strategic-dialogue-between-dprk-and-russian-fms/"
)


def get(app: Flask, url: str = FEED, **headers: str):
    return app.test_client().get(url, headers=headers)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds a site handler until the test opens it (always opened at teardown)."""
    event = threading.Event()
    yield event
    event.set()


def held(gate: threading.Event, then: Callable[[Request], Response]) -> Callable:
    def handler(request: Request) -> Response:
        gate.wait(10)
        return then(request)

    return handler


def anchor_page(_request: Request) -> Response:
    body = (FIXTURES / "site/articles/1730538240-666693401.html").read_bytes()
    return Response(body, content_type="text/html; charset=UTF-8")


# -- one fetch per category per TTL ------------------------------------------------------


def test_fifty_concurrent_cold_requests_make_one_upstream_request(
    app: Flask, site: FakeSite, gate: threading.Event
) -> None:
    site.override(ANCHOR, held(gate, anchor_page))
    start = threading.Barrier(50)

    def poll() -> tuple[int, str]:
        start.wait(10)
        response = get(app)
        return response.status_code, response.headers.get("X-Cache", "-")

    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(poll) for _ in range(50)]
        for _ in range(1000):  # at most 10 s for the leader's request to reach the site
            if site.hits(ANCHOR):
                break
            threading.Event().wait(0.01)
        gate.set()
        results = [future.result(10) for future in futures]
    assert site.hits() == 1
    # Past the bound on waiting requests, a request is told to come back shortly.
    assert (200, "miss") in results
    assert set(results) <= {(200, "miss"), (200, "hit"), (503, "-")}


def test_requests_waiting_for_a_new_category_are_bounded(
    make_app: Callable[..., Flask],
    site: FakeSite,
    gate: threading.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each waiting request holds a greenlet (a thread here): past the bound, none more
    wait. The bound is lowered to 16 here, for as many threads of the test."""
    monkeypatch.setattr(first_fetch, "COLD_WAITERS", 16)
    app = make_app()
    site.override(ANCHOR, held(gate, anchor_page))
    with ThreadPoolExecutor(16) as pool:
        waiting = [pool.submit(get, app) for _ in range(16)]
        for _ in range(1000):  # at most 10 s for the leader's request to reach the site
            if site.hits(ANCHOR):
                break
            threading.Event().wait(0.01)
        service = app.extensions["feedbridge"]
        for _ in range(1000):  # the bound itself: every place taken
            if service.stats().first_fetch_waiting == 16:
                break
            threading.Event().wait(0.01)
        extra = get(app)
        assert extra.status_code == 503
        assert extra.headers["Retry-After"] == "5"
        assert all(not f.done() for f in waiting)
        gate.set()
        assert {f.result(10).status_code for f in waiting} == {200}
    assert site.hits() == 1


def test_fresh_entry_is_a_hit_with_max_age_left(app: Flask, site: FakeSite, clock: Clock) -> None:
    first = get(app)
    assert first.headers["X-Cache"] == "miss"
    assert first.headers["Cache-Control"] == "public, max-age=600"
    clock.advance(200)
    second = get(app)
    assert second.headers["X-Cache"] == "hit"
    assert second.headers["Cache-Control"] == "public, max-age=400"
    assert "Age" not in second.headers
    assert second.data == first.data
    assert site.hits() == 1


def test_expired_entry_is_served_stale_and_refreshed_once(
    app: Flask, site: FakeSite, clock: Clock, gate: threading.Event
) -> None:
    get(app)
    site.override(ANCHOR, held(gate, anchor_page))
    clock.advance(601)
    stale = [get(app) for _ in range(10)]
    assert {r.headers["X-Cache"] for r in stale} == {"stale"}
    assert {r.headers["Age"] for r in stale} == {"601"}
    assert {r.status_code for r in stale} == {200}
    gate.set()
    settle(app)
    assert site.hits(ANCHOR) == 2
    assert get(app).headers["X-Cache"] == "hit"


def test_query_parameters_never_reach_the_site(app: Flask, site: FakeSite) -> None:
    everything = check_feed(get(app).data, "application/atom+xml")
    for query, canonical in (
        ("?limit=3", "?limit=3"),
        ("?q=Cement", "?q=cement"),
        ("?_=123", ""),
        ("?utm=1&q=production&limit=2", "?limit=2&q=production"),
        ("?x=1", ""),
    ):
        response = get(app, FEED + query)
        assert response.status_code == 200, query
        self_url = f"http://localhost{FEED}{canonical}"
        check_feed(response.data, response.content_type, self_url=self_url)
    assert site.hits() == 1
    atom = "{http://www.w3.org/2005/Atom}"
    assert len(everything.findall(f"{atom}entry")) == 11


def test_limit_and_q_select_items(app: Flask) -> None:
    atom = "{http://www.w3.org/2005/Atom}"

    def titles(query: str) -> list[str]:
        root = check_feed(get(app, FEED + query).data, "application/atom+xml")
        return [e.findtext(f"{atom}title") for e in root.iter(f"{atom}entry")]

    assert titles("?limit=2") == [
        "Cement production increases",
        "Production increases at different units of national economy",
    ]
    assert titles("?q=PRODUCTION+increases") == [
        "Cement production increases",
        "Production increases at different units of national economy",
        "Production increases at textile mills",
    ]
    assert titles("?q=sangwon") == ["Cement production increases"]  # found in the summary
    assert titles("?q=nothing-like-this") == []
    assert titles("?q=production&limit=1") == ["Cement production increases"]


@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=0", "limit"), ("limit=x", "limit"), ("limit=-1", "limit"), ("limit=501", "limit"),
     ("limit=%C2%B2", "limit"), ("limit=%D9%A3", "limit"), ("limit=" + "9" * 5000, "limit"),
     ("q=", "q"), ("q=%20%20", "q"), ("q=" + "a" * 201, "q")],
)  # fmt: skip
def test_bad_parameters_are_400_naming_them(
    app: Flask, site: FakeSite, query: str, named: str
) -> None:
    response = get(app, f"{FEED}?{query}")
    assert response.status_code == 400
    assert response.text.startswith(f"{named}: ")
    assert response.headers["Cache-Control"] == "no-store"
    assert site.hits() == 0


def test_a_retry_after_of_a_digit_int_refuses_is_no_500(app: Flask, site: FakeSite) -> None:
    site.override("/", Response("busy", status=503, headers={"Retry-After": "\u00b2"}))
    response = get(app, "/feeds/all.atom")
    assert response.status_code == 503 and response.text.startswith("upstream failure:")


def test_distinct_query_strings_do_not_grow_the_cache(app: Flask) -> None:
    for n in range(300):
        assert get(app, f"{FEED}?_={n}").status_code == 200
    cache = app.extensions["feedbridge"].stats().cache
    assert cache.selections == 0  # unknown parameters select nothing
    assert cache.served == 1  # only the default rendering is kept
    assert cache.entries == get(app, FEED).data.count(b"<entry>")  # each story's, once


# -- validators, compression, HEAD ----------------------------------------------------


def test_etag_and_last_modified_give_304(app: Flask, clock: Clock) -> None:
    first = get(app)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert modified == "Sun, 22 Mar 2026 10:29:53 GMT"  # the newest item's URL timestamp
    by_etag = get(app, If_None_Match=etag)
    assert (by_etag.status_code, by_etag.data) == (304, b"")
    assert by_etag.headers["ETag"] == etag
    by_date = get(app, If_Modified_Since=modified)
    assert (by_date.status_code, by_date.data) == (304, b"")
    assert get(app, If_None_Match='"other"').status_code == 200
    assert get(app, If_Modified_Since="Sun, 22 Mar 2026 10:29:52 GMT").status_code == 200
    # If-None-Match decides when both are sent (RFC 9110).
    assert get(app, If_None_Match='"other"', If_Modified_Since=modified).status_code == 200


def test_etag_depends_on_content_not_on_time(make_app: Callable[..., Flask], clock: Clock) -> None:
    first = get(make_app()).headers["ETag"]
    clock.advance(10_000)
    assert get(make_app()).headers["ETag"] == first


def test_gzip_round_trip_and_vary(app: Flask) -> None:
    plain = get(app)
    zipped = get(app, Accept_Encoding="gzip, deflate")
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == plain.data
    assert plain.headers["Vary"] == zipped.headers["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in plain.headers
    assert "Content-Encoding" not in get(app, Accept_Encoding="gzip;q=0").headers


def test_head_has_the_headers_and_no_body(app: Flask) -> None:
    full = get(app)
    head = app.test_client().head(FEED)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["ETag"] == full.headers["ETag"]
    assert head.headers["Content-Type"] == full.headers["Content-Type"]


# -- failures ---------------------------------------------------------------------------


def status(code: int, **headers: str) -> Response:
    """An error page; ``Retry_After="1"`` becomes the header ``Retry-After: 1``."""
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return Response("<html><body>error</body></html>", status=code, headers=named,
                    content_type="text/html")  # fmt: skip


FAULTS: dict[str, tuple[Callable[[Request], Response] | bytes, int]] = {
    "http 500": (lambda _r: status(500), 502),
    "http 403": (lambda _r: status(403), 502),
    "not html": (lambda _r: Response(b'{"a": 1}', content_type="application/json"), 502),
    "sign-up wall": ((VARIANTS / "signup-wall.html").read_bytes(), 502),
    "bot challenge": ((VARIANTS / "challenge.html").read_bytes(), 502),
    "empty listing": ((VARIANTS / "empty-listing.html").read_bytes(), 502),
    "no listing at all": ((VARIANTS / "template-d.html").read_bytes(), 502),
    "oversized": (b"<html>" + b"x" * 300_000, 502),
    "redirect off the site": (lambda _r: status(302, Location="https://evil.example/"), 502),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_with_nothing_stale(
    make_app: Callable[..., Flask], site: FakeSite, fault: str
) -> None:
    handler, expected = FAULTS[fault]
    site.override(ANCHOR, handler)
    response = get(make_app(max_bytes=200_000))
    assert response.status_code == expected, response.text
    assert_clean_error(response)


def test_too_many_requests_is_503_with_retry_after(app: Flask, site: FakeSite) -> None:
    site.override(ANCHOR, lambda _r: status(429, Retry_After="120"))
    response = get(app)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "120"
    assert_clean_error(response)


def test_hanging_site_is_504(
    make_app: Callable[..., Flask], site: FakeSite, gate: threading.Event
) -> None:
    site.override(ANCHOR, held(gate, anchor_page))
    response = get(make_app(timeout=Timeout(connect=0.5, total=0.5)))
    assert response.status_code == 504
    assert_clean_error(response)


def test_unreachable_site_is_502(make_app: Callable[..., Flask]) -> None:
    response = get(make_app(upstream_url="http://127.0.0.1:9"))
    assert response.status_code == 502
    assert response.text == "upstream failure: the site cannot be reached\n"
    assert_clean_error(response)


def test_unexpected_error_is_a_generic_500_logged_with_traceback(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(refresh, "parse_page", broken)  # a bug of the scraper
    caplog.set_level("ERROR", logger="feedbridge")
    response = get(app)
    assert response.status_code == 500
    assert response.text == "internal error; it has been logged\n"
    assert_clean_error(response)
    assert any(record.exc_info for record in caplog.records)


def assert_clean_error(response: Response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.content_type == "text/plain; charset=utf-8"
    assert response.text.count("\n") == 1
    assert "Traceback" not in response.text and "<feed" not in response.text
    # No internals: the site's URLs, addresses and paths, or exception names and texts.
    for internal in ("://", "127.0.0.1", "/newstream/", "Error", "Exception", "Timeout", "("):
        assert internal not in response.text, response.text


# -- outages, back-off, Retry-After ------------------------------------------------------


def test_outage_serves_stale_with_age_and_backs_off(
    app: Flask, site: FakeSite, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    good = get(app)
    site.override(ANCHOR, lambda _r: status(500))
    clock.advance(700)
    caplog.set_level("WARNING", logger="feedbridge")
    during = get(app)
    settle(app)
    assert (during.status_code, during.headers["X-Cache"], during.headers["Age"]) == (
        200, "stale", "700",
    )  # fmt: skip
    assert during.data == good.data
    assert any("vok-en" in r.getMessage() and "500" in r.getMessage() for r in caplog.records)
    assert site.hits(ANCHOR) == 2
    # Back-off: 30 s (jitter pinned to its top), then 60 s; polls in between fetch nothing.
    for step, fetches in ((29, 2), (1, 3), (59, 3), (1, 4)):
        clock.advance(step)
        assert get(app).headers["X-Cache"] == "stale"
        settle(app)
        assert site.hits(ANCHOR) == fetches, (step, fetches)
    # The site is back: the next attempt refreshes and the entry is fresh again.
    site.override(ANCHOR, anchor_page)
    clock.advance(120)
    get(app)
    settle(app)
    assert get(app).headers["X-Cache"] == "hit"


def test_what_is_kept_is_served_however_long_the_outage(
    app: Flask, site: FakeSite, clock: Clock
) -> None:
    good = get(app)
    site.override(ANCHOR, lambda _r: status(500))
    for _ in range(3):
        clock.advance(10 * 86_400)
        during = get(app)
        settle(app)
        assert (during.status_code, during.headers["X-Cache"]) == (200, "stale")
        assert during.data == good.data


def test_retry_after_is_honoured_and_errors_are_not_cached(
    app: Flask, site: FakeSite, clock: Clock
) -> None:
    site.override(ANCHOR, lambda _r: status(503, Retry_After="120"))
    assert get(app).status_code == 503
    clock.advance(60)
    backing_off = get(app)
    assert backing_off.status_code == 503
    assert backing_off.headers["Retry-After"] == "60"
    assert site.hits(ANCHOR) == 1
    site.override(ANCHOR, anchor_page)
    clock.advance(61)
    assert get(app).status_code == 200
    assert site.hits(ANCHOR) == 2


def test_site_validators_make_refreshes_conditional(
    app: Flask, site: FakeSite, clock: Clock
) -> None:
    seen: list[str | None] = []

    def with_validators(request: Request) -> Response:
        seen.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        response = anchor_page(request)
        response.headers["ETag"] = '"v1"'
        return response

    site.override(ANCHOR, with_validators)
    first = get(app)
    clock.advance(601)
    get(app)
    settle(app)
    again = get(app)
    assert seen == [None, '"v1"']
    assert again.headers["X-Cache"] == "hit"
    assert again.headers["ETag"] == first.headers["ETag"]


def test_a_failure_is_recorded_before_another_process_may_fetch(
    make_app: Callable[..., Flask], site: FakeSite, tmp_path: Path
) -> None:
    """Two processes on one store: the second sees the first's failure and backs off,
    instead of asking the failing site again a moment later."""
    site.override(ANCHOR, lambda _r: status(500))
    shared = tmp_path / "shared.db"
    first, second = make_app(db=shared), make_app(db=shared)
    assert get(first).status_code == 502
    backing_off = get(second)
    assert backing_off.status_code == 503
    assert backing_off.headers["Retry-After"] == "30"
    assert site.hits(ANCHOR) == 1
