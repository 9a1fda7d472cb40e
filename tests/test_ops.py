"""What an operator sees: /status, /metrics and the log lines of fetches and failures."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Request, Response

from feedbridge import __version__
from feedbridge.categories import load_registry
from feedbridge.errors import ConfigError
from feedbridge.text import logfmt
from tests.conftest import FIXTURES, SITE, Clock, FakeSite, settle

REGISTRY_OF_CATEGORIES = load_registry()
VOK_ANCHOR = REGISTRY_OF_CATEGORIES["vok-en"].paths[0]
PT_ANCHOR = REGISTRY_OF_CATEGORIES["pyongyang-times"].paths[0]


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fields(message: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(message))


def test_status_before_anything_was_fetched(app: Flask, site: FakeSite, clock: Clock) -> None:
    response = app.test_client().get("/status")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    status = response.json
    assert status["version"] == __version__
    assert status["store"] == {"backend": "sqlite", "state": "ok"}
    assert set(status["categories"]) == set(REGISTRY_OF_CATEGORIES)
    assert status["categories"]["vok-en"] == {
        "last_refresh": None,
        "stories": 0,
        "newest_item": None,
        "stale": False,
        "next_refresh_at": iso(clock.now),
        "next_refresh_in_s": 0,
        "next_refresh_why": "never refreshed",
        "last_error": None,
        "backing_off_until": None,
        "last_gap": None,
    }
    assert site.hits() == 0


def test_status_of_a_fetched_category_then_stale(app: Flask, site: FakeSite, clock: Clock) -> None:
    client = app.test_client()
    fetched_at = clock.now
    assert client.get("/feeds/vok-en.atom").status_code == 200
    vok = client.get("/status").json["categories"]["vok-en"]
    assert vok == {
        "last_refresh": iso(fetched_at),
        "stories": 11,
        "newest_item": datetime.fromtimestamp(1774175393, UTC).isoformat(),
        "stale": False,
        "next_refresh_at": iso(fetched_at + 600),
        "next_refresh_in_s": 600,
        "next_refresh_why": "ttl: history too short",
        "last_error": None,
        "backing_off_until": None,
        "last_gap": None,
    }
    clock.advance(601)
    vok = client.get("/status").json["categories"]["vok-en"]
    assert (vok["stale"], vok["last_refresh"]) == (True, iso(fetched_at))
    assert vok["next_refresh_in_s"] == 0 and vok["next_refresh_at"] == iso(clock.now)
    assert site.hits() == 1  # /status never fetches


def test_status_of_a_failing_category(app: Flask, site: FakeSite, clock: Clock) -> None:
    site.override(PT_ANCHOR, Response("oops", status=500, content_type="text/html"))
    client = app.test_client()
    assert client.get("/feeds/pyongyang-times.rss").status_code == 502
    status = client.get("/status").json["categories"]["pyongyang-times"]
    # What went wrong, without the site's addresses or an exception's text.
    assert status["last_error"] == {
        "kind": "http",
        "status": 500,
        "at": iso(clock.now),
        "failures_in_a_row": 1,
    }
    assert status["backing_off_until"] == iso(clock.now + 30)
    assert status["next_refresh_at"] == iso(clock.now + 30)
    assert status["next_refresh_why"] == "back-off: 1 failure in a row"
    assert status["last_refresh"] is None
    # The site recovers: the category is served again, and /status still tells what
    # went wrong last, and when.
    failed_at = clock.now
    site.override(PT_ANCHOR, (SITE / "articles/1719223822-402448226.html").read_bytes())
    clock.advance(30)
    assert client.get("/feeds/pyongyang-times.rss").status_code == 200
    status = client.get("/status").json["categories"]["pyongyang-times"]
    assert status["last_refresh"] == iso(clock.now)
    assert status["last_error"]["at"] == iso(failed_at)
    assert status["last_error"]["failures_in_a_row"] == 0
    assert status["backing_off_until"] is None


def test_metrics_count_fetches_lookups_and_items(app: Flask, clock: Clock) -> None:
    client = app.test_client()
    before = {
        "ok": sample("feedbridge_upstream_requests_total", category="vok-en", outcome="ok"),
        "hit": sample("feedbridge_cache_lookups_total", category="vok-en", result="hit"),
        "miss": sample("feedbridge_cache_lookups_total", category="vok-en", result="miss"),
        "stale": sample("feedbridge_cache_lookups_total", category="vok-en", result="stale"),
        "timed": sample("feedbridge_upstream_fetch_seconds_count", category="vok-en"),
    }
    for _ in range(3):
        client.get("/feeds/vok-en.json")
    clock.advance(601)
    client.get("/feeds/vok-en.json")
    settle(app)
    response = client.get("/metrics")
    assert response.content_type.startswith("text/plain; version=")
    assert response.headers["Cache-Control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "feedbridge_upstream_requests",
        "feedbridge_upstream_fetch_seconds",
        "feedbridge_cache_lookups",
        "feedbridge_items",
        "feedbridge_parse_failures",
    } <= names
    after = {
        "ok": sample("feedbridge_upstream_requests_total", category="vok-en", outcome="ok"),
        "hit": sample("feedbridge_cache_lookups_total", category="vok-en", result="hit"),
        "miss": sample("feedbridge_cache_lookups_total", category="vok-en", result="miss"),
        "stale": sample("feedbridge_cache_lookups_total", category="vok-en", result="stale"),
        "timed": sample("feedbridge_upstream_fetch_seconds_count", category="vok-en"),
    }
    assert {key: after[key] - before[key] for key in before} == {
        "ok": 2,  # the first fetch and the background refresh
        "hit": 2,
        "miss": 1,
        "stale": 1,
        "timed": 2,
    }
    assert sample("feedbridge_items", category="vok-en") == 11


def test_metrics_count_failures_and_not_modified(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    page = (SITE / "articles" / "1730538240-666693401.html").read_bytes()

    def validated(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(page, content_type="text/html; charset=UTF-8", headers={"ETag": '"v1"'})

    site.override(VOK_ANCHOR, validated)
    site.override(PT_ANCHOR, (FIXTURES / "variants" / "empty-listing.html").read_bytes())
    app = make_app()
    client = app.test_client()

    def counts() -> tuple[float, ...]:
        return (
            sample("feedbridge_upstream_requests_total", category="vok-en", outcome="not_modified"),
            sample("feedbridge_parse_failures_total", category="pyongyang-times"),
            sample("feedbridge_upstream_requests_total", category="all", outcome="http"),
        )

    before = counts()
    client.get("/feeds/vok-en.atom")
    clock.advance(601)
    client.get("/feeds/vok-en.atom")  # stale: refreshed with If-None-Match, 304
    settle(app)
    assert client.get("/feeds/pyongyang-times.atom").status_code == 502
    site.override("/", Response("broken", status=500, content_type="text/html"))
    assert client.get("/feeds/all.atom").status_code == 502
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [1, 1, 1]


def test_a_fetch_and_a_failure_are_one_line_each(
    app: Flask, site: FakeSite, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    client.get("/feeds/vok-en.atom")
    site.override(PT_ANCHOR, Response("oops", status=500, content_type="text/html"))
    client.get("/feeds/pyongyang-times.atom")
    lines = [fields(r.message) for r in caplog.records if r.name.startswith("feedbridge")]
    fetch, failed_fetch, failure = lines
    assert fetch.pop("duration_ms").isdigit()
    assert fetch == {
        "event": "fetch",
        "category": "vok-en",
        "path": VOK_ANCHOR,
        "status": "200",
        "bytes": str(len((SITE / "articles" / "1730538240-666693401.html").read_bytes())),
    }
    assert failed_fetch.pop("duration_ms").isdigit()
    assert failed_fetch == {
        "event": "fetch",
        "category": "pyongyang-times",
        "path": PT_ANCHOR,
        "status": "500",
        "outcome": "http",
        "error": f"the site answered 500 for {site.url}{PT_ANCHOR}",
    }
    assert failure.pop("duration_ms").isdigit()
    assert failure == {
        "event": "failure",
        "category": "pyongyang-times",
        "kind": "http",
        "status": "502",
        "failures": "1",
        "retry_in_s": "30",
        "serving": "error",
        "error": f"the site answered 500 for {site.url}{PT_ANCHOR}",
    }


@pytest.mark.parametrize(
    ("value", "written"),
    [("plain", "plain"), ("two words", '"two words"'), ('a "q"', '"a \\"q\\""'), ("", '""')],
)
def test_logfmt_quotes_what_needs_it(value: str, written: str) -> None:
    assert logfmt(key=value, n=3) == f"key={written} n=3"


def test_a_missing_metrics_directory_stops_start_up(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^PROMETHEUS_MULTIPROC_DIR: no such directory"):
        make_app()


def test_article_fetches_count_under_their_category(make_app: Callable[..., Flask]) -> None:
    before = sample("feedbridge_upstream_requests_total", category="naenara-en", outcome="ok")
    app = make_app(fulltext=True)
    assert app.test_client().get("/feeds/naenara-en.atom").status_code == 200
    settle(app)
    after = sample("feedbridge_upstream_requests_total", category="naenara-en", outcome="ok")
    assert after - before == 1 + 7  # the listing and its seven articles
