"""The server as the Procfile runs it stays responsive while clients and the site are slow.

The server starts from the Procfile (tests/servers.py ``WebServer``). The health check must
answer within ``HEALTHY`` seconds while slow readers hold connections open: clients that
send their headers a line every few seconds, and readers waiting on a site that drips
its answer a byte a second. A server that gives each such connection a thread runs out
of threads and answers the health check only when they let go.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from feedbridge.categories import load_registry
from tests.conftest import SITE
from tests.servers import Dripper, WebServer

pytestmark = pytest.mark.slow

HEALTHY = 2.0  # seconds: generous on a shared machine, far below any stall
SLOW_CLIENTS = 32
LINE_EVERY = 5.0  # seconds between two header lines of a slow client
SLOW_FOR = 20.0  # seconds the slow clients keep trickling, at most


def healthz_seconds(url: str) -> float:
    """How long /healthz took; a stall counts as the whole time waited."""
    started = time.monotonic()
    try:
        response = requests.get(f"{url}/healthz", timeout=10)
    except requests.Timeout:
        return 10.0
    assert response.status_code == 200
    return time.monotonic() - started


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    """Sockets to be connected by the test, each trickling header lines until it ends."""
    sockets: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        deadline = time.monotonic() + SLOW_FOR
        line = 0
        while not stop.wait(LINE_EVERY) and time.monotonic() < deadline:
            line += 1
            for sock in sockets:
                with contextlib.suppress(OSError):  # the server may give up on one
                    sock.sendall(b"X-Slow-%d: still coming\r\n" % line)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    yield sockets
    stop.set()
    thread.join(LINE_EVERY + 1)
    for sock in sockets:
        sock.close()


def test_clients_trickling_headers_do_not_starve_the_health_check(
    slow_clients: list[socket.socket],
) -> None:
    with WebServer({"FEEDBRIDGE_UPSTREAM_URL": "http://127.0.0.1:9"}) as server:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
            slow_clients.append(sock)
        time.sleep(1)  # the server has taken them all in
        times = [healthz_seconds(server.url) for _ in range(3)]
        time.sleep(LINE_EVERY)  # and once they have each sent another line
        times += [healthz_seconds(server.url) for _ in range(3)]
    assert max(times) < HEALTHY, times


def test_readers_waiting_on_a_dripping_site_do_not_starve_the_health_check() -> None:
    page = (SITE / "home.html").read_bytes()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
    feeds = [f"/feeds/{slug}.{fmt}" for slug in load_registry() for fmt in ("atom", "rss")]
    with (
        Dripper(answer + page, fast=len(answer), interval=1.0, limit=60) as site,
        WebServer(
            {
                "FEEDBRIDGE_UPSTREAM_URL": site.url,
                "FEEDBRIDGE_TIMEOUT": "5,30",
                "FEEDBRIDGE_MIN_INTERVAL": "0",
                "FEEDBRIDGE_FULLTEXT": "0",
            }
        ) as server,
        ThreadPoolExecutor(len(feeds)) as readers,
    ):
        cold = [readers.submit(requests.get, server.url + path, timeout=40) for path in feeds[:16]]
        time.sleep(2)  # every reader is waiting on the site
        assert not any(reader.done() for reader in cold), "the site answered: it should drip"
        times = [healthz_seconds(server.url) for _ in range(3)]
        site.stop()  # the fetches end, and so do the readers
    assert max(times) < HEALTHY, times
