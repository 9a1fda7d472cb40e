"""feedbridge's soak: the Procfile's server under steady load for minutes, while the
site and the environment fail in every way we know of, one slice of the run after the
other.

    python3 -m bench.soak [--minutes 3]      (from the repository root)

Offline, on 127.0.0.1 only. Each cluster has a stand-in site of its own (the saved pages
of ``tests/fixtures``, with faults on demand), so that its upstream fetches can be
counted: one server (as the Procfile runs it) on its SQLite file; and, when
redis-server is installed, two servers sharing one Redis, which is stopped and started
again on the same port halfway. Readers (a bounded number of threads, every request
with a timeout) ask for every feed, with random ``Host`` headers, ``?limit=500`` and
random ``?q=``; a few slow clients trickle header lines; a prober times ``/healthz``
throughout. Results are printed, saved under ``bench/results/``, and checked against the
invariants of :func:`violations` (``tests/test_soak.py`` runs a short soak and asserts
them).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from feedbridge.app import open_store
from feedbridge.categories import Registry, load_registry
from feedbridge.config import Settings
from feedbridge.feeds import Format
from feedbridge.politeness import Backoff
from feedbridge.redis_store import RETRY_INTERVAL
from tests.conftest import ARTICLE, FIXTURES, SITE, FakeSite
from tests.servers import ROOT, RedisServer, WebServer

RESULTS = ROOT / "bench" / "results"
Figures = dict[str, Any]  # JSON-shaped, as saved
TTL = 5  # FEEDBRIDGE_CACHE_TTL: short, so that faults meet many refreshes
TIMEOUT = 2.0  # FEEDBRIDGE_TIMEOUT: the upstream deadline, seconds
SERVER_ENV = {
    "FEEDBRIDGE_CACHE_TTL": str(TTL),
    "FEEDBRIDGE_MIN_INTERVAL": "0",
    "FEEDBRIDGE_TIMEOUT": f"{TIMEOUT:g}",
    "FEEDBRIDGE_FULLTEXT": "0",  # listing fetches only: what the per-TTL bound counts
    "FEEDBRIDGE_LOG_LEVEL": "WARNING",
}
FAULTS = (
    "drip", "error-500", "hang", "layout-changed", "sign-up-wall", "garbage", "huge",
    "retry-after",
)  # fmt: skip
# Each fault for a slice of the run, the site healthy before and between them. The drip
# comes first, before back-offs space the refreshes out (a short run meets it too); the
# huge Retry-After last, as it closes the site for the rest of the run.
PHASES = ("healthy", *(mode for fault in FAULTS for mode in (fault, "healthy")))[:-1]
RETRY_AFTER = "999999999"  # seconds: about 32 years
RETRY_AFTER_BOUND = Backoff().cap  # the longest the bridge's own back-off waits
HANG_S = 10.0  # a hanging site answers after this, or when the run ends
DRIP_S = 30  # a dripping site sends a byte a second for this long at most
HUGE_CHUNKS = 160  # of 64 KiB: 10 MiB, twice the default FEEDBRIDGE_MAX_BYTES
READERS = 6  # reader threads
SLOW_CLIENTS = 3  # raw sockets trickling header lines, at most, at any time
SLOW_LINES = 5  # header lines each slow client sends, one a second
PROBE_EVERY = 0.25  # seconds between two rounds of /healthz
HEALTHZ_LIMIT = 2.0  # seconds /healthz may take
MEMORY_LIMIT_MIB = 50.0  # growth of a worker's RSS over a run
CLOCK_SLACK = 0.5  # seconds: site-side arrival times vs the bridge's refreshed_at
WORDS = ("korea", "party", "production", "russia", "meeting", "zzz", "경제", "<b>")
FORMATS = tuple(f.value for f in Format)


@dataclass(frozen=True)
class Fetch:
    at: float  # time.time() when the stand-in site saw the request
    category: str
    mode: str


@dataclass(frozen=True)
class Answer:
    feed: str  # "slug.format"
    status: str  # the HTTP status, or "error:<exception>"
    cache: str  # X-Cache, or "-"
    started: float
    ended: float


class StandIn:
    """A stand-in site: the saved pages on 127.0.0.1, every listing page answered as
    ``mode`` says, and a log of the listing fetches."""

    def __init__(self, registry: Registry, stop: threading.Event) -> None:
        self.mode = "healthy"
        self.fetches: list[Fetch] = []
        self.held: list[float] = []  # seconds a fetcher stayed on a dripping page
        self._stop = stop
        self._lock = threading.Lock()
        self._garbage = random.Random(12).randbytes(65536)
        self._layout = (FIXTURES / "variants" / "empty-listing.html").read_bytes()
        self.server = HTTPServer(host="127.0.0.1", threaded=True)
        self.server.start()
        self.site = FakeSite(self.server)
        self.url = self.site.url
        for category in registry.values():  # the first anchor: the one the bridge asks for
            path = category.paths[0]
            self.site.override(path, self._handler(category.slug, _saved_page(path)))

    def stop(self) -> None:
        self.server.stop()

    def _handler(self, slug: str, healthy: bytes) -> Callable[[Request], Response]:
        def handle(_request: Request) -> Response:
            mode = self.mode
            with self._lock:
                self.fetches.append(Fetch(time.time(), slug, mode))
            return self._answer(mode, healthy)

        return handle

    def _answer(self, mode: str, healthy: bytes) -> Response:
        html = "text/html; charset=UTF-8"
        if mode == "error-500":
            return Response("Internal Server Error", status=500)
        if mode == "retry-after":
            return Response("Too Many Requests", status=429, headers={"Retry-After": RETRY_AFTER})
        if mode == "hang":
            self._stop.wait(HANG_S)
        elif mode == "drip":
            # Its length declared, as most servers do: no chunks a client could count.
            length = str(DRIP_S + 1)
            return Response(self._drip(), content_type=html, headers={"Content-Length": length})
        elif mode == "layout-changed":
            return Response(self._layout, content_type=html)
        elif mode == "sign-up-wall":
            return Response("", status=302, headers={"Location": "/free-member-form/"})
        elif mode == "garbage":
            return Response(self._garbage, content_type=html)
        elif mode == "huge":
            return Response(_huge(), content_type=html)
        return Response(healthy, content_type=html)

    def _drip(self) -> Iterator[bytes]:
        started = time.monotonic()
        try:
            yield b"<"
            for _ in range(DRIP_S):
                if self._stop.wait(1.0):
                    return
                yield b" "
        finally:
            with self._lock:
                self.held.append(time.monotonic() - started)


def _saved_page(path: str) -> bytes:
    if path == "/":
        return (SITE / "home.html").read_bytes()
    match = ARTICLE.match(path)
    assert match is not None, path
    return (SITE / "articles" / f"{match.group(1)}.html").read_bytes()


def _huge() -> Iterator[bytes]:
    yield b"<html><body>"
    for _ in range(HUGE_CHUNKS):
        yield b"<p>" + b"x" * 65529 + b"</p>"


@dataclass
class Cluster:
    """Servers sharing one store, and the stand-in site they read."""

    name: str
    site: StandIn
    servers: list[WebServer]
    settings: Settings  # what the soak reads the store with
    answers: list[Answer] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)  # seconds; inf when not 200
    slow_clients: Counter[str] = field(default_factory=Counter)
    rss_start: dict[int, int] = field(default_factory=dict)  # pid: KiB
    # time.time() when the store went away and when it was back, for each restart
    outages: list[tuple[float, float]] = field(default_factory=list)


class Soak:
    """Load, faults and probes on the clusters for ``seconds``, one phase after the other."""

    def __init__(self, clusters: list[Cluster], registry: Registry, seconds: float) -> None:
        self.clusters = clusters
        self.registry = registry
        self.seconds = seconds
        self.done = threading.Event()
        self.phases: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def run(self, redis: RedisServer | None) -> RedisServer | None:
        """Warm up, then the phases under load; returns the Redis running at the end."""
        for cluster in self.clusters:
            self._warm_up(cluster)
            cluster.rss_start = {pid: _rss_kib(pid) for s in cluster.servers for pid in s.workers()}
        threads = [
            *(threading.Thread(target=self._reader, args=(n,)) for n in range(READERS)),
            *(threading.Thread(target=self._slow_client, args=(n,)) for n in range(SLOW_CLIENTS)),
            threading.Thread(target=self._prober),
        ]
        for thread in threads:
            thread.start()
        try:
            redis = self._phases(redis)
        finally:
            self.done.set()
            for thread in threads:
                thread.join(timeout=30)
        return redis

    def _phases(self, redis: RedisServer | None) -> RedisServer | None:
        slice_s = self.seconds / len(PHASES)
        restart_at = PHASES.index("healthy", len(PHASES) // 2)
        start = time.monotonic()
        for index, mode in enumerate(PHASES):
            for cluster in self.clusters:
                cluster.site.mode = mode
            self.phases.append({"mode": mode, "at_s": round(time.monotonic() - start, 1)})
            if redis is not None and index == restart_at:
                redis = self._restart(redis)
            time.sleep(max(0.0, start + (index + 1) * slice_s - time.monotonic()))
        return redis

    def _restart(self, redis: RedisServer) -> RedisServer:
        """Redis stopped, and started again empty on the same port a second later."""
        port = redis.port
        redis.stop()
        down = time.time()
        time.sleep(1.0)
        restarted = RedisServer(port)
        for cluster in self.clusters:
            if cluster.settings.redis_url:
                # A process that saw Redis fail leaves it alone a while longer.
                cluster.outages.append((down, time.time() + RETRY_INTERVAL))
        return restarted

    def _warm_up(self, cluster: Cluster) -> None:
        """Every feed served once by every server, the site healthy."""
        with requests.Session() as session:
            for server in cluster.servers:
                for slug in self.registry:
                    for fmt in FORMATS:
                        cluster.answers.append(_ask(session, server.url, f"{slug}.{fmt}", {}, ""))

    def _reader(self, seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            while not self.done.is_set():
                cluster = rng.choice(self.clusters)
                server = rng.choice(cluster.servers)
                feed = f"{rng.choice(list(self.registry))}.{rng.choice(FORMATS)}"
                headers, query = _variation(rng)
                answer = _ask(session, server.url, feed, headers, query)
                with self._lock:
                    cluster.answers.append(answer)

    def _prober(self) -> None:
        while not self.done.wait(PROBE_EVERY):
            for cluster in self.clusters:
                for server in cluster.servers:
                    cluster.healthz.append(_healthz(server.url))

    def _slow_client(self, seed: int) -> None:
        """A client that sends its request's header lines a second apart, then reads."""
        rng = random.Random(1000 + seed)
        while not self.done.is_set():
            cluster = rng.choice(self.clusters)
            server = rng.choice(cluster.servers)
            outcome = self._trickle(server.port)
            with self._lock:
                cluster.slow_clients[outcome] += 1

    def _trickle(self, port: int) -> str:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                for n in range(SLOW_LINES):
                    if self.done.wait(1.0):
                        return "stopped"
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                sock.sendall(b"Connection: close\r\n\r\n")
                head = sock.recv(64)
        except OSError as exc:
            return f"error:{type(exc).__name__}"
        return "answered " + head.split(b" ", 2)[1].decode() if head else "closed"


def _variation(rng: random.Random) -> tuple[dict[str, str], str]:
    """What a reader adds to a request: a random Host, a selection, or nothing."""
    roll = rng.random()
    if roll < 0.2:
        host = rng.choice(
            [
                f"r{rng.randrange(10**6)}.example",
                f"h{rng.randrange(99)}:8{rng.randrange(999)}",
                "no host!",
            ]
        )
        return {"Host": host}, ""
    if roll < 0.45:
        words = (
            f"{rng.choice(WORDS)}+{rng.randrange(10**4)}"
            if rng.random() < 0.5
            else rng.choice(WORDS)
        )
        return {}, f"limit=500&q={words}"
    return {}, ""


def _ask(
    session: requests.Session, url: str, feed: str, headers: dict[str, str], query: str
) -> Answer:
    started = time.time()
    target = f"{url}/feeds/{feed}" + (f"?{query}" if query else "")
    try:
        response = session.get(target, headers=headers, timeout=(2, 10))
    except requests.RequestException as exc:
        return Answer(feed, f"error:{type(exc).__name__}", "-", started, time.time())
    cache = response.headers.get("X-Cache", "-")
    return Answer(feed, str(response.status_code), cache, started, time.time())


def _healthz(url: str) -> float:
    started = time.perf_counter()
    try:
        ok = requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        ok = False
    return time.perf_counter() - started if ok else float("inf")


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


# --- figures -----------------------------------------------------------------------------


def figures(cluster: Cluster) -> Figures:
    """What a cluster's run comes to, from its answers, its site's log and its servers."""
    statuses = Counter(a.status for a in cluster.answers)
    return {
        "servers": len(cluster.servers),
        "requests": len(cluster.answers),
        "by_status": dict(sorted(statuses.items())),
        "by_x_cache": dict(sorted(Counter(a.cache for a in cluster.answers).items())),
        "5xx_after_200": _failures_after_success(cluster.answers),
        "tracebacks": sum(s.output().count("Traceback") for s in cluster.servers),
        "upstream": _upstream(cluster),
        "healthz": _latency(cluster.healthz),
        "slow_clients": dict(cluster.slow_clients),
        "workers": _memory(cluster),
        "site_closed_for_s": _closed_for(cluster.settings),
    }


def _failures_after_success(answers: list[Answer]) -> list[dict[str, object]]:
    """5xx (or no answer) for a feed after a 200 for it had been received."""
    first_ok: dict[str, float] = {}
    for answer in sorted(answers, key=lambda a: a.ended):
        if answer.status == "200":
            first_ok.setdefault(answer.feed, answer.ended)
    return [
        asdict(answer)
        for answer in answers
        if (answer.status.startswith(("5", "error")))
        and answer.feed in first_ok
        and answer.started > first_ok[answer.feed]
    ]


def _upstream(cluster: Cluster) -> dict[str, object]:
    """Listing fetches: in all, by mode, and at most how many per category in any TTL
    (each Redis restart starts the count again, the outage itself left out: see _split)."""
    fetches = cluster.site.fetches
    by_category: dict[str, list[float]] = {}
    for fetch in fetches:
        by_category.setdefault(fetch.category, []).append(fetch.at)
    segments = [
        segment
        for times in by_category.values()
        for segment in _split(sorted(times), cluster.outages)
    ]
    gaps = [b - a for seg in segments for a, b in pairwise(seg)]
    return {
        "listing_fetches": len(fetches),
        "by_mode": dict(Counter(f.mode for f in fetches)),
        "max_per_category_per_ttl": max(
            (_most_in_window(s, TTL - CLOCK_SLACK) for s in segments), default=0
        ),
        "min_gap_s": round(min(gaps), 2) if gaps else None,
        "longest_drip_held_s": round(max(cluster.site.held), 1) if cluster.site.held else None,
    }


def _split(times: list[float], outages: list[tuple[float, float]]) -> list[list[float]]:
    """``times`` in segments between the store's outages, those within one left out:
    while the store is away, each process reads the site for itself, at most once a TTL
    (nothing can be shared); once it is back, it has forgotten the last refresh."""
    segments: list[list[float]] = [[]]
    pending = sorted(outages)
    for at in times:
        while pending and at > pending[0][1]:
            pending.pop(0)
            segments.append([])
        if pending and pending[0][0] <= at <= pending[0][1]:
            continue
        segments[-1].append(at)
    return [s for s in segments if s]


def _most_in_window(times: list[float], width: float) -> int:
    """The most of ``times`` (sorted) in any half-open window ``width`` long."""
    most, left = 0, 0
    for right, at in enumerate(times):
        while at - times[left] >= width:
            left += 1
        most = max(most, right - left + 1)
    return most


def _latency(samples: list[float]) -> dict[str, object]:
    ok = sorted(s for s in samples if s != float("inf"))
    return {
        "probes": len(samples),
        "not_200": len(samples) - len(ok),
        "max_ms": round(ok[-1] * 1000, 1) if ok else None,
        "p99_ms": round(ok[int(0.99 * (len(ok) - 1))] * 1000, 1) if ok else None,
    }


def _memory(cluster: Cluster) -> list[dict[str, object]]:
    alive = {pid for s in cluster.servers for pid in s.workers()}
    end = {pid: _rss_kib(pid) for pid in cluster.rss_start if pid in alive}
    return [
        {
            "pid": pid,
            "rss_start_mib": round(kib / 1024, 1),
            "rss_end_mib": round(end[pid] / 1024, 1) if pid in end else None,
            "growth_mib": round((end[pid] - kib) / 1024, 1) if pid in end else None,
        }
        for pid, kib in cluster.rss_start.items()
    ]


def _closed_for(settings: Settings) -> int:
    """How long the store says the site is closed (its Retry-After), at the end."""
    store = open_store(settings, time.time)
    try:
        return round(store.paused_for())
    finally:
        store.close()


def violations(results: Figures) -> list[str]:
    """Every broken invariant of a run, each said precisely; empty when all hold."""
    checks = (_tracebacks, _served_after_200, _healthz_ok, _fetches_bounded, _deadline_held,
              _retry_after_clamped, _memory_bounded)  # fmt: skip
    return [
        f"{name}: {problem}"
        for name, cluster in results["clusters"].items()
        for check in checks
        for problem in check(cluster)
    ]


def _tracebacks(c: Figures) -> list[str]:
    return [f"{c['tracebacks']} tracebacks in the servers' logs"] if c["tracebacks"] else []


def _served_after_200(c: Figures) -> list[str]:
    failed = c["5xx_after_200"]
    if not failed:
        return []
    return [f"{len(failed)} 5xx or failed answers for feeds served 200 before, e.g. {failed[0]}"]


def _healthz_ok(c: Figures) -> list[str]:
    healthz = c["healthz"]
    if not healthz["not_200"] and (healthz["max_ms"] or 0) <= HEALTHZ_LIMIT * 1000:
        return []
    return [
        f"/healthz not always 200 under {HEALTHZ_LIMIT:g}s: {healthz} (slow clients"
        f" {c['slow_clients']}; a gthread worker reads headers on its pool's threads)"
    ]


def _fetches_bounded(c: Figures) -> list[str]:
    upstream = c["upstream"]
    if upstream["max_per_category_per_ttl"] <= 1:
        return []
    return [
        f"{upstream['max_per_category_per_ttl']} listing fetches of one category within"
        f" {TTL - CLOCK_SLACK:g}s (TTL {TTL}s); min gap {upstream['min_gap_s']}s"
    ]


def _deadline_held(c: Figures) -> list[str]:
    held = c["upstream"]["longest_drip_held_s"]
    if held is None or held <= TIMEOUT + 2:
        return []
    return [
        f"a site dripping a byte a second (its Content-Length declared) held a fetch {held}s,"
        f" past the {TIMEOUT:g}s upstream deadline, until the site stopped dripping:"
        " FEEDBRIDGE_TIMEOUT is no total deadline for such a body"
    ]


def _retry_after_clamped(c: Figures) -> list[str]:
    closed = c["site_closed_for_s"]
    if closed is None or closed <= RETRY_AFTER_BOUND:
        return []
    return [
        f"the site's Retry-After: {RETRY_AFTER} closed it for {closed}s"
        f" (~{closed / 3.156e7:.0f} years), over {RETRY_AFTER_BOUND:g}s: not clamped"
    ]


def _memory_bounded(c: Figures) -> list[str]:
    found = []
    for worker in c["workers"]:
        if worker["growth_mib"] is None:
            found.append(f"worker {worker['pid']} was replaced during the run")
        elif worker["growth_mib"] > MEMORY_LIMIT_MIB:
            found.append(f"worker {worker['pid']} grew {worker['growth_mib']} MiB")
    return found


# --- running -------------------------------------------------------------------------------


def soak(minutes: float, *, use_redis: bool = True) -> Figures:
    """A soak of ``minutes``: its settings, phases and figures per cluster."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    registry = load_registry()
    stop = threading.Event()
    redis = RedisServer() if use_redis and shutil.which("redis-server") else None
    try:
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            clusters = [_sqlite_cluster(stack, registry, stop, Path(tmp))]
            if redis is not None:
                clusters.append(_redis_cluster(stack, registry, stop, redis.url))
            run = Soak(clusters, registry, minutes * 60)
            try:
                redis = run.run(redis)
            finally:
                stop.set()  # hanging and dripping pages end
            found = {c.name: figures(c) for c in clusters}
    finally:
        if redis is not None:
            redis.stop()
    return {
        "settings": {"minutes": minutes, "env": SERVER_ENV, "readers": READERS,
                     "slow_clients": SLOW_CLIENTS, "retry_after": RETRY_AFTER},
        "procfile": (ROOT / "Procfile").read_text().strip(),
        "phases": run.phases,
        "clusters": found,
    }  # fmt: skip


def _sqlite_cluster(
    stack: ExitStack, registry: Registry, stop: threading.Event, tmp: Path
) -> Cluster:
    site = _stand_in(stack, registry, stop)
    db = tmp / "feedbridge.db"
    env = {**SERVER_ENV, "FEEDBRIDGE_UPSTREAM_URL": site.url, "FEEDBRIDGE_DB": str(db)}
    servers = [_server(stack, env)]
    return Cluster("sqlite", site, servers, Settings(upstream_url=site.url, db=db))


def _redis_cluster(
    stack: ExitStack, registry: Registry, stop: threading.Event, redis_url: str
) -> Cluster:
    site = _stand_in(stack, registry, stop)
    env = {**SERVER_ENV, "FEEDBRIDGE_UPSTREAM_URL": site.url, "FEEDBRIDGE_REDIS_URL": redis_url}
    servers = [_server(stack, env) for _ in range(2)]
    return Cluster("redis", site, servers, Settings(upstream_url=site.url, redis_url=redis_url))


def _server(stack: ExitStack, env: dict[str, str]) -> WebServer:
    server = WebServer(env)
    stack.callback(server.stop)
    return server


def _stand_in(stack: ExitStack, registry: Registry, stop: threading.Event) -> StandIn:
    site = StandIn(registry, stop)
    stack.callback(site.stop)
    return site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the run")
    parser.add_argument("--no-redis", action="store_true", help="the SQLite cluster only")
    args = parser.parse_args()
    results = soak(args.minutes, use_redis=not args.no_redis)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("soak-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["clusters"], indent=2))
    problems = violations(results)
    print("\n".join(["", "invariants:", *(problems or ["all hold"])]))
    print(f"\nsaved {path.relative_to(ROOT)}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
