"""Politeness to the site: spacing between requests, time limits, the site's Retry-After."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug import Request, Response

from feedbridge.config import Timeout
from feedbridge.errors import BackingOff, HTTPStatusError, UpstreamTimeout
from feedbridge.politeness import MAX_PAUSE
from feedbridge.upstream import USER_AGENT, Upstream
from tests.conftest import SITE, Clock, FakeSite
from tests.servers import Dripper


class SteppingClock(Clock):
    """Moves forward by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_requests_are_spaced_across_categories(site: FakeSite) -> None:
    clock, slept = Clock(), []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    upstream = Upstream(site.url, min_interval=1.0, clock=clock, sleep=sleep)
    upstream.fetch("/")  # the all-sources listing
    clock.advance(0.25)
    upstream.fetch("/newstream/1730538240-666693401/x/")  # another category
    clock.advance(5)
    upstream.fetch("/")
    assert slept == [0.75]
    assert site.hits() == 3


def test_honest_user_agent(site: FakeSite) -> None:
    Upstream(site.url, min_interval=0).fetch("/")
    assert site.requests[0].headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("feedbridge/")


def test_the_whole_response_has_a_deadline_not_only_each_read(site: FakeSite) -> None:
    def trickle(_request: Request) -> Response:
        return Response((b"<p>" + b"x" * 8192 for _ in range(1000)), content_type="text/html")

    site.override("/", trickle)
    upstream = Upstream(site.url, min_interval=0, timeout=Timeout(5, 15), clock=SteppingClock(1.0))
    with pytest.raises(UpstreamTimeout, match="took over 15s"):
        upstream.fetch("/")


PAGE = (SITE / "home.html").read_bytes()
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=UTF-8\r\n"
    b"Content-Length: %d\r\nX-Padding: slowly-slowly-slowly\r\n\r\n" % len(PAGE)
)
TOTAL = 3.0
MARGIN = 2.0  # a shared, busy machine: the watchdog's thread may be scheduled late


@pytest.mark.parametrize(
    "fast",
    [pytest.param(10, id="headers-drip"), pytest.param(len(HEAD) + 100, id="body-drips")],
)
@pytest.mark.slow  # the deadline is real time: 3 s each
def test_a_site_dripping_a_byte_a_second_is_cut_at_the_total_deadline(fast: int) -> None:
    # Each byte comes well within the read timeout, so only a total deadline ends this.
    with Dripper(HEAD + PAGE, fast=fast, interval=1.0, limit=4 * TOTAL) as site:
        upstream = Upstream(site.url, min_interval=0, timeout=Timeout(1, TOTAL))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=f"took over {TOTAL:g}s"):
            upstream.fetch("/")
        assert time.monotonic() - started < TOTAL + MARGIN


def test_site_retry_after_pauses_every_category(site: FakeSite) -> None:
    clock = Clock()
    site.override("/", Response("busy", status=429, headers={"Retry-After": "120"}))
    upstream = Upstream(site.url, min_interval=0, clock=clock)
    with pytest.raises(HTTPStatusError) as first:
        upstream.fetch("/")
    assert (first.value.status, first.value.retry_after) == (503, 120)
    clock.advance(100)
    with pytest.raises(BackingOff) as waiting:
        upstream.fetch("/newstream/1730538240-666693401/x/")
    assert waiting.value.retry_after == 20
    assert site.hits() == 1
    clock.advance(20)
    upstream.fetch("/newstream/1730538240-666693401/x/")
    assert site.hits() == 2


@pytest.mark.parametrize("retry_after", ["Wed, 21 Oct 2015 07:28:00 GMT", "soon", "", "\u00b2"])
def test_retry_after_dates_and_junk(site: FakeSite, retry_after: str) -> None:
    site.override("/", Response("busy", status=503, headers={"Retry-After": retry_after}))
    with pytest.raises(HTTPStatusError) as error:
        Upstream(site.url, min_interval=0).fetch("/")
    assert error.value.retry_after in (None, 0.0)


@pytest.mark.parametrize("retry_after", ["999999999", "9" * 400, "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_a_site_asking_for_years_is_asked_again_within_the_backoff_cap(
    site: FakeSite, retry_after: str
) -> None:
    site.override("/", Response("busy", status=429, headers={"Retry-After": retry_after}))
    upstream = Upstream(site.url, min_interval=0)
    with pytest.raises(HTTPStatusError) as error:
        upstream.fetch("/")
    assert error.value.retry_after == MAX_PAUSE == 1800
    assert 1790 < upstream.pause.paused_for() <= MAX_PAUSE
    with pytest.raises(BackingOff) as waiting:
        upstream.fetch("/")
    assert waiting.value.retry_after is not None and waiting.value.retry_after <= 1800


@pytest.mark.parametrize("path", ["https://evil.example/", "//evil.example/", "evil", ""])
def test_only_site_paths_are_fetched(site: FakeSite, path: str) -> None:
    with pytest.raises(ValueError, match="not a site path"):
        Upstream(site.url, min_interval=0).fetch(path)
    assert site.hits() == 0


def test_the_sites_pause_is_no_failure_of_a_category(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    """A 429 for one page pauses every category; the others do not count it as a failure
    of their own (no back-off of theirs, no last_error), and /status shows the pause."""
    app = make_app()
    vok = app.extensions["feedbridge"].registry["vok-en"]
    site.override(vok.paths[0], Response("busy", status=429, headers={"Retry-After": "120"}))
    client = app.test_client()
    assert client.get("/feeds/vok-en.atom").status_code == 503
    paused = client.get("/feeds/pyongyang-times.atom")
    assert (paused.status_code, paused.headers["Retry-After"]) == (503, "120")
    status = client.get("/status").json
    assert status["site"]["paused_until"] is not None
    assert status["categories"]["vok-en"]["last_error"]["status"] == 429
    assert status["categories"]["pyongyang-times"]["last_error"] is None
    clock.advance(121)
    assert client.get("/feeds/pyongyang-times.atom").status_code == 200
    assert client.get("/status").json["site"]["paused_until"] is None
