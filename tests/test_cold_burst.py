"""A burst of first readers over two servers of two workers sharing Redis: all served."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from werkzeug import Request, Response

from feedbridge.categories import load_registry
from tests.conftest import SITE, FakeSite
from tests.feedspec import check_feed
from tests.servers import RedisServer, WebServer

pytestmark = pytest.mark.slow  # two servers and a redis-server
VOK = load_registry()["vok-en"]
BURST = 64


def test_64_first_requests_over_two_servers_of_two_workers_are_all_answered(
    site: FakeSite,
) -> None:
    # The listing takes a second: every request of the burst arrives while it is read.
    def slow_listing(_request: Request) -> Response:
        time.sleep(1.0)
        return Response(
            (SITE / "articles/1730538240-666693401.html").read_bytes(),
            content_type="text/html; charset=UTF-8",
        )

    site.override(VOK.paths[0], slow_listing)
    with RedisServer() as redis_server:
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "0",
            "FEEDBRIDGE_REFRESH": "0",  # the burst alone asks for the category
            "FEEDBRIDGE_LOG_LEVEL": "WARNING",
            "FEEDBRIDGE_REDIS_URL": redis_server.url,
        }
        with WebServer(env) as one, WebServer(env) as two:
            urls = [f"{server.url}/feeds/vok-en.json" for server in (one, two)] * (BURST // 2)
            with ThreadPoolExecutor(BURST) as pool:
                responses = list(pool.map(lambda url: requests.get(url, timeout=60), urls))
    assert [r.status_code for r in responses] == [200] * BURST, {
        r.status_code: r.text for r in responses
    }
    assert len({r.headers["ETag"] for r in responses}) == 1
    check_feed(responses[0].content, responses[0].headers["Content-Type"])
    assert site.hits(VOK.paths[0]) == 1
