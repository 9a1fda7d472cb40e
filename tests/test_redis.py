"""The bridge on a shared Redis: what several processes and machines do together, and
what readers get when Redis stops, restarts empty or was never there.

The store's contract itself is tested on Redis and SQLite alike (tests/test_store.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug import Request, Response

from feedbridge.categories import load_registry
from feedbridge.errors import BackingOff, HTTPStatusError
from feedbridge.redis_store import RedisStore, namespace
from feedbridge.refresh import FETCH_LEASE
from feedbridge.store import STATE_CHECK
from tests.conftest import SITE, Clock, FakeSite, settle
from tests.feedspec import ATOM_NS, check_feed
from tests.servers import RedisServer, WebServer, free_port, wait_until

REGISTRY = load_registry()
pytestmark = pytest.mark.slow  # every test here starts or uses a redis-server


def test_the_sites_retry_after_is_shared(
    make_app: Callable[..., Flask], redis_url: str, site: FakeSite
) -> None:
    path = "/newstream/1730538240-666693401/x/"
    site.override(path, Response("slow down", status=429, headers={"Retry-After": "300"}))
    one, two = (make_app(redis_url=redis_url).extensions["feedbridge"] for _ in range(2))
    with pytest.raises(HTTPStatusError):
        one.upstream.fetch(path)
    with pytest.raises(BackingOff) as backing_off:
        two.upstream.fetch(path)
    assert 299 < backing_off.value.retry_after <= 300  # type: ignore[operator]
    assert site.hits(path) == 1


def test_two_apps_on_one_redis_fetch_once_and_serve_the_same(
    make_app: Callable[..., Flask], redis_url: str, site: FakeSite
) -> None:
    one, two = make_app(redis_url=redis_url), make_app(redis_url=redis_url)
    first = one.test_client().get("/feeds/vok-en.atom")
    assert first.status_code == 200 and first.headers["X-Cache"] == "miss"
    second = two.test_client().get("/feeds/vok-en.atom")
    assert second.headers["X-Cache"] == "hit"
    assert (second.data, second.headers["ETag"]) == (first.data, first.headers["ETag"])
    assert site.hits() == 1
    assert two.test_client().get("/status").json["store"] == {"backend": "redis", "state": "ok"}


def test_redis_unreachable_from_the_start_serves_from_the_process(
    make_app: Callable[..., Flask], site: FakeSite, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    responses = [app.test_client().get("/feeds/vok-en.rss") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.headers["X-Cache"] for r in responses] == ["miss", "stale", "stale"]
    check_feed(responses[0].data, responses[0].content_type)
    assert responses[2].data == responses[0].data
    status = app.test_client().get("/status").json
    assert status["store"]["state"] == "degraded"
    assert status["store"]["problem"] == "unreachable"
    assert "127.0.0.1" not in str(status), "no internal address on a public page"
    events = [r.message.split()[0] for r in caplog.records if r.name.startswith("feedbridge")]
    assert events.count("event=redis_unavailable") == 1  # once, not once per operation
    assert site.hits() == 1


def test_redis_stopped_mid_run_readers_are_still_served(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    with RedisServer() as server:
        app = make_app(redis_url=server.url)
        client = app.test_client()
        kept = client.get("/feeds/vok-en.atom")
        assert kept.status_code == 200
        server.stop()
        clock.advance(STATE_CHECK)  # what the process read of Redis holds until then
        served = client.get("/feeds/vok-en.atom")  # this process's last good copy
        new = client.get("/feeds/pyongyang-times.json")  # from the site, for this request
    assert (served.status_code, served.headers["X-Cache"], served.data) == (
        200, "stale", kept.data,
    )  # fmt: skip
    assert (new.status_code, new.headers["X-Cache"]) == (200, "miss")
    check_feed(new.data, new.content_type)


def test_a_redis_restarted_empty_serves_the_process_copy_and_fills_again(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock
) -> None:
    """Restarted without its data (or flushed, or its keys evicted): readers keep their
    feed, stale, and a refresh puts the category back."""
    port = free_port()
    with RedisServer(port) as server:
        app = make_app(redis_url=server.url)
        client = app.test_client()
        kept = client.get("/feeds/vok-en.atom")
        server.stop()
    clock.advance(STATE_CHECK)  # what the process read of Redis holds until then
    with RedisServer(port) as server:
        for _ in range(6):
            during = client.get("/feeds/vok-en.atom")
            assert (during.status_code, during.headers["X-Cache"]) == (200, "stale")
            assert during.data == kept.data
        settle(app)
        assert site.hits(REGISTRY["vok-en"].paths[0]) == 2
        again = client.get("/feeds/vok-en.atom")
        assert (again.status_code, again.headers["X-Cache"]) == (200, "hit")
        assert RedisStore(server.url, upstream_url=site.url).state("vok-en").stories == 11


# Real processes


@pytest.fixture
def gunicorn_env(site: FakeSite) -> dict[str, str]:
    return {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
        "FEEDBRIDGE_LOG_LEVEL": "WARNING",
    }


@pytest.mark.slow
def test_two_servers_of_two_workers_fetch_each_category_once(
    site: FakeSite, gunicorn_env: dict[str, str]
) -> None:
    slugs = ["all", "kcna-kp-en", "vok-en", "pyongyang-times", "naenara-en", "minju-choson-en"]

    def urls_of(server: WebServer) -> list[str]:
        return [f"{server.url}/feeds/{s}.{fmt}" for s in slugs for fmt in ("rss", "atom", "json")]

    with RedisServer() as redis_server:
        env = {
            **gunicorn_env,
            "FEEDBRIDGE_REDIS_URL": redis_server.url,
            "FEEDBRIDGE_PUBLIC_URL": "https://feeds.example.org",  # the same self links
        }
        with WebServer(env) as one, WebServer(env) as two:
            urls = (urls_of(one) + urls_of(two)) * 4
            with ThreadPoolExecutor(32) as pool:
                responses = list(pool.map(lambda url: requests.get(url, timeout=30), urls))
            assert len(responses) == 144
            assert {r.status_code for r in responses} == {200}
            # The one refresher among the four workers reads the categories nobody asked
            # for too; between readers and refresher, each category is fetched once.
            wait_until(lambda: site.hits() >= len(REGISTRY), "the refresher's round", 20)
            for category in REGISTRY.values():
                assert site.hits(category.paths[0]) == 1, category.slug
            assert site.hits() == len(REGISTRY)
            for response in responses[:18]:
                check_feed(response.content, response.headers["Content-Type"])
            assert len({r.headers["ETag"] for r in responses}) == 18  # both serve the same

            # A worker adds the feeds it served to the metrics every second (observe.TALLY).
            wait_until(lambda: _looked_up(one, two) >= 144, "every lookup counted", 10)
            counts = [_metrics(server) for server in (one, two)]
            fetched = sum(c.get(("feedbridge_upstream_requests_total", "ok"), 0) for c in counts)
            assert (fetched, _looked_up(one, two)) == (len(REGISTRY), 144)
            statuses = [s.json() for s in (requests.get(f"{x.url}/status") for x in (one, two))]
            # Read a moment apart, the seconds to the next refresh may differ by one.
            same = [_without_countdown(s["categories"]) for s in statuses]
            assert same[0] == same[1]
            assert statuses[0]["store"] == {"backend": "redis", "state": "ok"}

            redis_server.stop()
            with ThreadPoolExecutor(16) as pool:
                after = list(pool.map(lambda url: requests.get(url, timeout=30), urls[:36]))
            assert {r.status_code for r in after} == {200}
            degraded = requests.get(f"{one.url}/status").json()["store"]
            assert degraded["state"] == "degraded"


@pytest.mark.slow
def test_a_worker_killed_while_fetching_leaves_a_lease_that_expires_soon(
    site: FakeSite, gunicorn_env: dict[str, str], redis_url: str
) -> None:
    anchor = REGISTRY["vok-en"].paths[0]
    release = threading.Event()

    def stuck(request: Request) -> Response:
        release.wait(10)
        return Response((SITE / "articles" / "1730538240-666693401.html").read_bytes())

    site.override(anchor, stuck)
    client = redis.Redis.from_url(redis_url)
    lease = f"{namespace(site.url)}lease:fetch:vok-en"
    env = {**gunicorn_env, "FEEDBRIDGE_REDIS_URL": redis_url, "FEEDBRIDGE_REFRESH": "0"}
    with WebServer(env) as server, ThreadPoolExecutor(1) as pool:
        doomed = pool.submit(requests.get, f"{server.url}/feeds/vok-en.atom", timeout=30)
        wait_until(lambda: site.hits(anchor) == 1, "the fetch", 10)
        assert client.exists(lease)
        for pid in server.workers():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(requests.ConnectionError):
            doomed.result(10)
        release.set()
        site.override(anchor, (SITE / "articles" / "1730538240-666693401.html").read_bytes())
        assert client.exists(lease)  # nobody released it, nobody renews it
        # The server's new workers: until one is up, granian refuses connections.
        wait_until(lambda: len(server.workers()) == 2 and _healthy(server.url), "new workers")
        asked = time.monotonic()
        response = requests.get(f"{server.url}/feeds/vok-en.atom", timeout=30)
        waited = time.monotonic() - asked
    assert response.status_code == 200
    assert waited < FETCH_LEASE + 3, "a dead holder's lease is short"
    check_feed(response.content, response.headers["Content-Type"])
    assert site.hits(anchor) == 2
    assert not client.exists(lease)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _without_countdown(categories: dict[str, dict[str, object]]) -> dict[str, object]:
    return {
        slug: {k: v for k, v in fields.items() if k != "next_refresh_in_s"}
        for slug, fields in categories.items()
    }


def _looked_up(*servers: WebServer) -> float:
    """The feeds the servers served, as their metrics count them."""
    return sum(
        value
        for counts in map(_metrics, servers)
        for (name, _), value in counts.items()
        if name == "feedbridge_cache_lookups_total"
    )


def _metrics(server: WebServer) -> dict[tuple[str, str], float]:
    """Sample values of the server's /metrics, by name and the last label's value."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = list(sample.labels.values())[-1] if sample.labels else ""
            key = (sample.name, label)
            values[key] = values.get(key, 0) + sample.value
    return values


def test_with_redis_away_a_process_reads_the_site_at_most_once_a_ttl(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    """Another format of a feed served before comes from the stories kept here; a
    category never served is read once, and its other formats come from that read."""
    with RedisServer() as server:
        app = make_app(redis_url=server.url)
        client = app.test_client()
        atom = client.get("/feeds/vok-en.atom")
        hits = site.hits()
        server.stop()
        vok = client.get("/feeds/vok-en.json")
        times = [client.get(f"/feeds/pyongyang-times.{fmt}") for fmt in ("rss", "atom", "json")]
    assert (vok.status_code, vok.headers["X-Cache"]) == (200, "stale")
    entries = check_feed(atom.data, atom.content_type).iter(f"{{{ATOM_NS}}}entry")
    ids = [entry.findtext(f"{{{ATOM_NS}}}id") for entry in entries]
    assert [item["id"] for item in check_feed(vok.data, vok.content_type)["items"]] == ids
    assert [r.status_code for r in times] == [200, 200, 200]
    assert [r.headers["X-Cache"] for r in times] == ["miss", "stale", "stale"]
    assert site.hits() == hits + 1, "pyongyang-times read once, vok-en not at all"
