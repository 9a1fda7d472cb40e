"""feedbridge's benchmark: every figure a ratio to a baseline measured in the same run.

    python3 -m bench.run [--seconds 8] [--rounds 3] [--cached]   (from the repository
                                                   root, after pip install -e '.[test]')

1. Cached feed under the Procfile's server against the ceiling: a minimal Flask endpoint
   with a constant body of the same size (bench/ceiling.py) under gunicorn with 2 gevent
   workers, the Procfile's server before granian; with the SQLite store, gzipped, and
   with Redis when redis-server is here. Its targets (:data:`TARGETS`) are ratios of
   runs of the same round, each the median over the rounds. ``--cached`` runs parts 1
   and 3 only.
2. Cold refresh of each category, parse + render (network excluded), against a bare
   ``lxml.html.fromstring`` of the same page.
3. Conditional polls (``If-None-Match`` → 304) against full responses.
4. Peak memory (VmHWM) of each worker after many distinct query strings, against the
   same worker after warm-up.
5. First request of a never-seen category on a fresh server and store (full text on,
   article pages held back), against one bare fetch of its listing page; medians. Once
   with the site on loopback, once with the site answering after SITE_LATENCY, as a site
   across the world does: what the bridge adds to the one fetch a reader waits for.
6. Cached feed with 5,000 kept stories per category against the ceiling, and with 50.
7. Peak memory of the workers of part 6: 5,000 kept stories against 50.

Offline: the saved pages of ``tests/fixtures`` play the site on 127.0.0.1. Load comes
from ``wrk`` (Debian package); in-process timings from ``timeit``. Results are printed
and saved under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lxml.html
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from feedbridge import server as production
from feedbridge.categories import Category, load_registry
from feedbridge.feed_cache import FeedRenderer
from feedbridge.feeds import Format
from feedbridge.model import ArticleKey, Item, newest_first
from feedbridge.prepared import Freshness
from feedbridge.scrape import parse_page
from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import Listing
from tests.conftest import ARTICLE, SITE, FakeSite
from tests.servers import ROOT, RedisServer, WebServer

RESULTS = ROOT / "bench" / "results"
BASE = "https://kcnawatch.org"  # the site the saved pages are from
FEED = "/feeds/vok-en.atom"
# Part 5: article pages answer after this many seconds (unless let go earlier), so that
# a first request that waited for full text could not look fast.
ARTICLE_DELAY = 5.0
SITE_LATENCY = 0.15  # seconds: a site across the world (part 5)
# Parts 6 and 7: stories kept per category in the two generated stores.
HISTORY = (50, 5000)
FOREVER = str(10 * 365 * 86_400)  # a TTL under which nothing is ever refetched
# The distinct query strings of parts 4 and 7: each wrk thread numbers its own requests.
DISTINCT_QUERIES = """
local words = {WORDS}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  local path = "FEED_PATH?limit=" .. (n % 50 + 1) .. "&q=" .. words[n % #words + 1]
    .. "&n=" .. id .. "-" .. n
  return wrk.format("GET", path)
end
"""
WORDS = ("production", "korea", "party", "meeting", "russia", "dprk", "cement")
# Part 4 searches for words of the saved pages, and one that no story holds.
SEARCHED = (*WORDS, "zzz")
# Part 7 searches for a word of every generated story and for one of none: the same
# answers whatever the history, and the second reads all of it.
SEARCHED_IN_HISTORY = ("story", "zzz")


# The cached path's targets: (ours, baseline, measure, bound): the median over the rounds
# of ours' measure over the baseline's in the same round is at least (or, for p99, at
# most) the bound.
TARGETS = {
    # Issue 20: against the ceiling under the same server as the bridge's (granian).
    "cached Atom feed, SQLite, against the ceiling under granian": (
        "sqlite_store", "ceiling_granian", "rps", 0.9,
    ),
    "the same, Redis, against SQLite": ("redis_store", "sqlite_store", "rps", 0.8),
    "304 against the granian ceiling's 200": ("not_modified", "ceiling_granian", "rps", 1.0),
    "gzip against the granian ceiling's 200": ("gzip", "ceiling_granian", "rps", 0.9),
    "p99 of the cached feed against the granian ceiling's": (
        "sqlite_store", "ceiling_granian", "p99", 2.0,
    ),
    # Issue 21: against the ceiling under gunicorn with gevent (the server before granian).
    "cached Atom feed, SQLite, against the ceiling under gunicorn": (
        "sqlite_store", "ceiling", "rps", 2.0,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Load:
    """What wrk measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    cpu_ms_per_request: float = 0.0  # of the server's workers: what others' load cannot skew
    bytes_per_s: float = 0.0  # read by wrk, headers and bodies

    @property
    def answered_per_s(self) -> float:
        """Requests per second that got a 2xx or 3xx answer."""
        return self.requests_per_s * (1 - self.errors / self.requests) if self.requests else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of each kind")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--fresh", type=int, default=9, help="fresh servers of part 5")
    parser.add_argument("--cached", action="store_true", help="parts 1 and 3 only")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian package wrk)")
    results: dict[str, object] = {"settings": vars(args), "procfile": _procfile()}
    if args.cached:
        results["targets"] = cached(args)
        _report(results)
        return

    print("2. cold refresh: parse + render against bare lxml …", flush=True)
    results["cold"] = cold_refresh()
    print(f"5. first request of a never-seen category, {args.fresh} fresh servers …", flush=True)
    results["first_request"] = first_request(args.fresh)
    results["first_request_far"] = first_request(args.fresh, latency=SITE_LATENCY)

    with ExitStack() as servers:
        site = servers.enter_context(_site())
        env = _bridge_env(site)
        runs, size = _cached_runs(servers, env)
        bridge = runs["sqlite_store"].server
        # Part 6: stores filled beforehand; nothing refreshes, so nothing is fetched.
        stores = Path(servers.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        kept: dict[int, WebServer] = {}
        for count in HISTORY:
            print(f"6. filling a store with {count} stories per category …", flush=True)
            db = stores / f"kept-{count}.db"
            fill_store(db, count)
            kept[count] = servers.enter_context(
                WebServer(
                    {
                        **env,
                        "FEEDBRIDGE_DB": str(db),
                        "FEEDBRIDGE_REFRESH": "0",
                        "FEEDBRIDGE_CACHE_TTL": FOREVER,
                    }
                )
            )
        history_size = {count: _warm(server)[0] for count, server in kept.items()}
        ceiling_history = servers.enter_context(ceiling_server(history_size[HISTORY[-1]]))
        runs["ceiling_history"] = Run(ceiling_history, "/feed")
        runs.update({f"kept_{count}": Run(server, FEED) for count, server in kept.items()})

        print(f"1, 3, 6. {args.rounds} rounds of {', '.join(runs)} …", flush=True)
        load = Loader(args.seconds, args.connections)
        found = load.rounds(runs, args.rounds)
        results["targets"] = targets(found)
        median = {name: _median(loads) for name, loads in found.items()}
        print("4. memory after distinct query strings …", flush=True)
        results["memory"] = _memory(bridge, load)
        print("7. memory with 50 and 5,000 kept stories …", flush=True)
        results["history_memory"] = _history_memory(kept, load)

    ceiling_rps = median["ceiling"].requests_per_s
    results["throughput"] = {
        "body_bytes": size,
        **{name: asdict(found) for name, found in median.items()},
        "ratio": median["sqlite_store"].requests_per_s / ceiling_rps,
    }
    if "redis_store" in median:
        results["throughput"]["redis_ratio"] = (  # type: ignore[index]
            median["redis_store"].requests_per_s / ceiling_rps
        )
    results["conditional"] = {
        "full": asdict(median["sqlite_store"]),
        "not_modified": asdict(median["not_modified"]),
        "ratio": median["not_modified"].requests_per_s / median["sqlite_store"].requests_per_s,
    }
    results["history"] = {
        "body_bytes": history_size,
        "ceiling": asdict(median["ceiling_history"]),
        **{
            str(count): {
                **asdict(median[f"kept_{count}"]),
                "ratio": median[f"kept_{count}"].requests_per_s
                / median["ceiling_history"].requests_per_s,
            }
            for count in HISTORY
        },
    }
    _report(results)


def _bridge_env(site: FakeSite) -> dict[str, str]:
    """The bridge's settings on the stand-in site: no pause between fetches, no article
    pages; the log level stays INFO, an access line a request, as in production."""
    return {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
    }


def cached(args: argparse.Namespace) -> dict[str, object]:
    """Parts 1 and 3 alone: the cached path's runs, rounds and targets."""
    with ExitStack() as servers:
        site = servers.enter_context(_site())
        env = _bridge_env(site)
        runs, size = _cached_runs(servers, env)
        print(f"1, 3. {args.rounds} rounds of {', '.join(runs)} …", flush=True)
        found = Loader(args.seconds, args.connections).rounds(runs, args.rounds)
    return {"body_bytes": size, **targets(found)}


def _cached_runs(servers: ExitStack, env: dict[str, str]) -> tuple[dict[str, Run], int]:
    """The servers of parts 1 and 3, started, and their runs; the feed's size."""
    bridge = servers.enter_context(WebServer(env))
    size, etag = _warm(bridge)
    ceiling = servers.enter_context(ceiling_server(size))
    # Every server is up and idle while another is measured; the kinds of run take
    # turns, so that whatever else the machine does slows all of them alike.
    same_server = servers.enter_context(ceiling_server(size, granian=True))
    runs: dict[str, Run] = {
        "ceiling": Run(ceiling, "/feed"),
        "ceiling_granian": Run(same_server, "/feed"),
        "sqlite_store": Run(bridge, FEED),
        "not_modified": Run(bridge, FEED, f'wrk.headers["If-None-Match"] = [[{etag}]]'),
        "gzip": Run(bridge, FEED, 'wrk.headers["Accept-Encoding"] = "gzip"'),
    }
    if shutil.which("redis-server"):
        redis_url = servers.enter_context(RedisServer()).url
        on_redis = servers.enter_context(WebServer({**env, "FEEDBRIDGE_REDIS_URL": redis_url}))
        _warm(on_redis)
        runs["redis_store"] = Run(on_redis, FEED)
    return runs, size


def targets(found: dict[str, list[Load]]) -> dict[str, object]:
    """Each target's ratio in every round, their median, and whether it is met."""
    rounds = {name: [asdict(load) for load in loads] for name, loads in found.items()}
    measured: dict[str, object] = {"rounds": rounds}
    for what, (ours, base, measure, bound) in TARGETS.items():
        if ours not in found:
            continue
        ratios = [
            _measure(mine, measure) / _measure(theirs, measure)
            for mine, theirs in zip(found[ours], found[base], strict=True)
        ]
        median = statistics.median(ratios)
        met = median <= bound if measure == "p99" else median >= bound
        measured[what] = {"ratios": ratios, "median": median, "bound": bound, "met": met}
    return measured


def _measure(load: Load, measure: str) -> float:
    return load.requests_per_s if measure == "rps" else load.p99_ms


def _median(loads: list[Load]) -> Load:
    """The run of median rate among a kind's rounds."""
    return sorted(loads, key=lambda load: load.requests_per_s)[len(loads) // 2]


def gunicorn(worker: str, app: str = "feedbridge.wsgi:app") -> Callable[[int | None], list[str]]:
    """gunicorn with ``bench/gunicorn_conf.py`` and ``worker`` (its class, which
    ``GUNICORN_WORKER`` must name too); on loopback at ``port``, or on ``$PORT`` when it
    is None."""

    def argv(port: int | None) -> list[str]:
        bind = ["--bind", f"127.0.0.1:{port}"] if port else []
        return [
            sys.executable, "-m", "gunicorn", "--config", "python:bench.gunicorn_conf",
            "--worker-class", worker, *bind, app,
        ]  # fmt: skip

    return argv


def ceiling_server(size: int, *, granian: bool = False) -> WebServer:
    """The ceiling: bench/ceiling.py with a body of ``size`` bytes, under gunicorn with 2
    gevent workers (the Procfile's server before granian), or ``granian`` with the
    Procfile's settings and an access line a request, as the bridge writes them."""
    if granian:
        return WebServer({"CEILING_BYTES": str(size)}, argv=_granian_ceiling)
    return WebServer(
        {"CEILING_BYTES": str(size), "GUNICORN_WORKER": "gevent"},
        argv=gunicorn("gevent", "bench.ceiling:app"),
    )


def _granian_ceiling(port: int) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "--blocking-threads", str(production.THREADS),
        "--backpressure", str(production.BACKPRESSURE),
        "bench.ceiling:logged",
    ]  # fmt: skip


def _warm(server: WebServer) -> tuple[int, str]:
    """Ask for the feed once (every worker shares the store): its size and ETag."""
    response = requests.get(server.url + FEED, timeout=30)
    response.raise_for_status()
    return len(response.content), response.headers["ETag"]


@dataclass(frozen=True)
class Run:
    server: WebServer
    path: str
    script: str | None = None  # wrk's Lua


class Loader:
    """wrk runs of one length and concurrency."""

    def __init__(self, seconds: int, connections: int, timeout: int = 2) -> None:
        self.seconds = seconds
        self.connections = connections
        self.timeout = timeout  # seconds after which wrk counts a request as failed

    def rounds(self, runs: dict[str, Run], rounds: int) -> dict[str, list[Load]]:
        """Every run of each kind, round by round; in a round, the kinds take turns."""
        found: dict[str, list[Load]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                found[name].append(self.run(run))
        return found

    def run(self, run: Run, *, turned_away_ok: bool = False) -> Load:
        """wrk's run; a failed request ends the benchmark, unless ``turned_away_ok`` (a
        bound answering 503 is what is measured: counted in ``errors``)."""
        url = run.server.url + run.path
        workers = run.server.workers()
        cpu = _cpu_seconds(workers)
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
            lua.write(run.script or "")
            lua.flush()
            argv = [
                "wrk", "-t2", f"-c{self.connections}", f"-d{self.seconds}s",
                f"--timeout={self.timeout}s", "--latency",
            ]  # fmt: skip
            output = subprocess.run(
                [*argv, "-s", lua.name, url],
                capture_output=True,
                text=True,
                check=True,
                timeout=self.seconds + 60,
            ).stdout
        load = _parse_wrk(output)
        if load.errors and not turned_away_ok:
            raise SystemExit(f"bench: {load.errors} failed requests to {url}:\n{output}")
        spent = _cpu_seconds(workers) - cpu
        return dataclasses.replace(load, cpu_ms_per_request=spent * 1000 / max(1, load.requests))


def _cpu_seconds(pids: list[int]) -> float:
    """User and system time of the processes so far (fields 14 and 15 of /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _parse_wrk(output: str) -> Load:
    def number(pattern: str) -> str:
        match = re.search(pattern, output)
        if match is None:
            raise ValueError(f"no {pattern!r} in wrk's output:\n{output}")
        return match.group(1)

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        requests_per_s=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=ms(number(r"\s50%\s+([\d.]+\w+)")),
        p99_ms=ms(number(r"\s99%\s+([\d.]+\w+)")),
        requests=int(number(r"(\d+) requests in")),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
        bytes_per_s=_bytes(number(r"Transfer/sec:\s+([\d.]+\w+)")),
    )


def _bytes(text: str) -> float:
    """wrk's ``1.23GB`` (powers of 1024) in bytes."""
    value, unit = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text).groups()  # type: ignore[union-attr]
    return float(value) * 1024 ** ("B", "KB", "MB", "GB", "TB").index(unit)


def cold_refresh() -> list[dict[str, object]]:
    """Per category: bare lxml parse; scrape; render (Atom, as served: tagged, gzipped)."""
    return [_cold(category) for category in load_registry().values()]


def _cold(category: Category) -> dict[str, object]:
    page = _page_of(category)
    items = _scrape(category, page)
    path = f"feeds/{category.slug}.atom"

    def served() -> bytes:
        """What the service does with a category's new stories for a request's root:
        rendered (by a renderer of its own, so every entry is new), the root put in,
        gzipped."""
        renderer = FeedRenderer(BASE)
        rendered = renderer.render(category, Format.ATOM, items, path)
        answer = renderer.served_as(rendered, "http://127.0.0.1/", Freshness.HIT, 0.0, 0.0)
        return answer.prepared.gzipped

    bare = _best(lambda: lxml.html.fromstring(page))
    scrape = _best(lambda: _scrape(category, page))
    rendering = _best(served)
    return {
        "category": category.slug,
        "page_bytes": len(page),
        "items": len(items),
        "bare_lxml_ms": bare * 1000,
        "scrape_ms": scrape * 1000,
        "render_ms": rendering * 1000,
        "ratio": (scrape + rendering) / bare,
    }


def _page_of(category: Category) -> bytes:
    path = category.paths[0]
    if path == "/":
        return (SITE / "home.html").read_bytes()
    return (SITE / "articles" / f"{path.split('/')[2]}.html").read_bytes()


def _scrape(category: Category, page: bytes) -> list[Item]:
    """What a refresh makes of a category's page once it has it."""
    return parse_page(page, label=category.label, base_url=BASE, page_path=category.paths[0])


def _best(call: Callable[[], object]) -> float:
    """Seconds per call: the fastest of five timeit rounds of about 0.2 s each."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number


def first_request(fresh: int, latency: float = 0.0) -> dict[str, object]:
    """``GET /feeds/vok-en.atom`` as the first request of a fresh server and store (full
    text on, every article page held back), against a bare fetch of the anchor page; the
    site answers the anchor after ``latency`` seconds, both times."""
    category = load_registry()["vok-en"]
    anchor = category.paths[0]
    release = threading.Event()

    def far(_request: Request) -> Response:
        time.sleep(latency)
        return Response(_page_of(category), content_type="text/html; charset=UTF-8")

    def held(request: Request) -> Response:
        release.wait(ARTICLE_DELAY)
        match = ARTICLE.match(request.path)
        page = SITE / "articles" / f"{match.group(1) if match else ''}.html"
        if not page.is_file():
            return Response("not found", status=404)
        return Response(page.read_bytes(), content_type="text/html; charset=UTF-8")

    app_s: list[float] = []
    bare_s: list[float] = []
    with _site() as site:
        for item in _scrape(category, _page_of(category)):
            site.override(item.path, held)
        site.override(anchor, far)
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "1",
            "FEEDBRIDGE_REFRESH": "0",  # else the refresher may fetch it before we ask
            "FEEDBRIDGE_LOG_LEVEL": "WARNING",
        }
        for _ in range(fresh):
            release.clear()
            with WebServer(env) as server:  # a store file of its own
                started = time.perf_counter()
                requests.get(site.url + anchor, timeout=30).raise_for_status()
                bare_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = requests.get(server.url + FEED, timeout=60)
                app_s.append(time.perf_counter() - started)
                release.set()  # the articles asked for meanwhile answer now
                response.raise_for_status()
                if response.headers["X-Cache"] != "miss":
                    raise SystemExit(f"bench: first request was {response.headers['X-Cache']}")
    app, bare = statistics.median(app_s), statistics.median(bare_s)
    return {
        "fresh_servers": fresh,
        "site_latency_s": latency,
        "article_delay_s": ARTICLE_DELAY,
        "app_ms": [t * 1000 for t in app_s],
        "bare_ms": [t * 1000 for t in bare_s],
        "app_median_ms": app * 1000,
        "bare_median_ms": bare * 1000,
        "ratio": app / bare,
    }


def fill_store(path: Path, per_category: int) -> None:
    """A store where every category has kept ``per_category`` stories, refreshed now."""
    store = SQLiteStore(path)
    try:
        for number, category in enumerate(load_registry().values()):
            items = [_story(number, n, category.label) for n in range(per_category)]
            for start in range(0, per_category, 500):  # oldest first, as refreshes came
                chunk = tuple(newest_first(items[start : start + 500]))
                store.merge(category.slug, Listing(items=chunk), now=time.time())
    finally:
        store.close()


def _story(category: int, n: int, source: str | None) -> Item:
    """Story ``n`` of category number ``category``, as tests/test_store.py makes them."""
    ts = 1_700_000_000 + n * 600
    article_id = str(100_000_000 * (category + 1) + n)
    word = WORDS[n % len(WORDS)]
    return Item(
        key=ArticleKey(ts, article_id),
        title=f"Story {n} on {word} of the day",
        path=f"/newstream/{ts}-{article_id}/story-{n}/",
        excerpt=f"What story {n} says about {word}, in a sentence or two as the site has it.",
        listed=None,
        source=source,
    )


def _memory(server: WebServer, load: Loader) -> dict[str, object]:
    """The workers' peak RSS after warm-up (the throughput runs), then after a flood."""
    requests.get(server.url + "/feeds/all.atom?limit=5&q=korea", timeout=30).raise_for_status()
    before = {pid: _peak_kib(pid) for pid in server.workers()}
    flood = _flood(server, "/feeds/all.atom", SEARCHED, load)
    after = {pid: _peak_kib(pid) for pid in server.workers()}
    return {
        "distinct_query_strings": flood.requests,
        "errors": flood.errors,
        "workers": [
            {"peak_mib_after_warm_up": before[pid] / 1024, "peak_mib_after": after[pid] / 1024}
            for pid in before
        ],
        "ratio": max(after[pid] / before[pid] for pid in before),
    }


def _history_memory(kept: dict[int, WebServer], load: Loader) -> dict[str, object]:
    """Peak RSS of the workers of each kept-history server after the same work: the
    throughput rounds (the full feed), then distinct query strings whose answers do not
    depend on the history's length (one of their words is in every story, the other in
    none, which reads the whole history)."""
    feed: dict[int, list[float]] = {}
    searched: dict[int, list[float]] = {}
    for count, server in kept.items():
        feed[count] = [_peak_kib(pid) / 1024 for pid in server.workers()]
        _flood(server, FEED, SEARCHED_IN_HISTORY, load)
        searched[count] = [_peak_kib(pid) / 1024 for pid in server.workers()]
    fewest, most = HISTORY[0], HISTORY[-1]
    return {
        "peak_mib_after_feed": {str(count): found for count, found in feed.items()},
        "peak_mib_after_searches": {str(count): found for count, found in searched.items()},
        "feed_ratio": max(feed[most]) / max(feed[fewest]),
        "ratio": max(searched[most]) / max(searched[fewest]),
    }


def _flood(server: WebServer, path: str, words: tuple[str, ...], load: Loader) -> Load:
    """Distinct query strings to ``path``, searching for ``words`` in turn."""
    quoted = ", ".join(f'"{word}"' for word in words)
    script = DISTINCT_QUERIES.replace("FEED_PATH", path).replace("{WORDS}", "{" + quoted + "}")
    return load.run(Run(server, path, script))


def _peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


@contextmanager
def _site() -> Iterator[FakeSite]:
    """The saved pages of the site on a local server, as in the tests."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    try:
        yield FakeSite(server)
    finally:
        server.stop()


def _procfile() -> str:
    return (ROOT / "Procfile").read_text().strip()


def _report(results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(_targets_table(results["targets"]))
    if "throughput" not in results:  # --cached
        print(f"\nsaved {path.relative_to(ROOT)}")
        return
    throughput, conditional, memory = (
        results["throughput"],
        results["conditional"],
        results["memory"],
    )
    history, history_memory = (
        results["history"],
        results["history_memory"],
    )
    lines = [
        "",
        "| measure | feedbridge | baseline | ratio |",
        "|---|---|---|---|",
        _row(
            "1. cached feed, SQLite store (req/s; p50/p99 ms; CPU ms/req)",
            throughput["sqlite_store"],
            throughput["ceiling"],
            throughput["ratio"],
        ),
    ]
    if "redis_store" in throughput:
        lines.append(
            _row(
                "1. cached feed, Redis store (req/s; p50/p99 ms; CPU ms/req)",
                throughput["redis_store"],
                throughput["ceiling"],
                throughput["redis_ratio"],
            )
        )
    for row in results["cold"]:
        lines.append(
            f"| 2. cold refresh {row['category']} ({row['items']} items, parse + render ms) "
            f"| {row['scrape_ms']:.2f} + {row['render_ms']:.2f} "
            f"| lxml {row['bare_lxml_ms']:.2f} | {row['ratio']:.1f}× |"
        )
    lines.append(
        _row(
            "3. conditional poll, 304 vs 200 (req/s; p50/p99 ms; CPU ms/req)",
            conditional["not_modified"],
            conditional["full"],
            conditional["ratio"],
        )
    )
    for worker in memory["workers"]:
        lines.append(
            f"| 4. peak RSS of a worker after {memory['distinct_query_strings']} "
            f"distinct query strings (MiB) | {worker['peak_mib_after']:.1f} "
            f"| {worker['peak_mib_after_warm_up']:.1f} after warm-up "
            f"| {worker['peak_mib_after'] / worker['peak_mib_after_warm_up']:.2f}× |"
        )
    for first in (results["first_request"], results["first_request_far"]):
        where = (
            f"site {first['site_latency_s'] * 1000:.0f} ms away"
            if first["site_latency_s"]
            else "site on loopback"
        )
        lines.append(
            f"| 5. first request of a never-seen category, {where}, median of "
            f"{first['fresh_servers']} fresh servers (ms; slowest) | {first['app_median_ms']:.1f};"
            f" {max(first['app_ms']):.1f} | bare fetch of the page {first['bare_median_ms']:.1f} "
            f"| {first['ratio']:.2f}× |"
        )
    for count in HISTORY:
        lines.append(
            _row(
                f"6. cached feed, {count} kept stories a category (req/s; p50/p99 ms; CPU ms/req)",
                history[str(count)],
                history["ceiling"],
                history[str(count)]["ratio"],
            )
        )
    for when, ratio in (("after_feed", "feed_ratio"), ("after_searches", "ratio")):
        fewest, most = (history_memory[f"peak_mib_{when}"][str(count)] for count in HISTORY)
        lines.append(
            f"| 7. peak RSS of the workers with {HISTORY[-1]} kept stories, "
            f"{when.replace('_', ' ')} (MiB) | {' / '.join(f'{mib:.1f}' for mib in most)} "
            f"| with {HISTORY[0]}: {' / '.join(f'{mib:.1f}' for mib in fewest)} "
            f"| {history_memory[ratio]:.2f}× |"
        )
    print("\n".join(lines))
    print(
        f"\nbody {throughput['body_bytes']} bytes, with kept history {history['body_bytes']}; "
        f"saved {path.relative_to(ROOT)}"
    )


def _targets_table(measured: dict[str, Any]) -> str:
    lines = ["", "| target | ratio in each round | median | bound | met |", "|---|---|---|---|---|"]
    for what, (_ours, _base, measure, bound) in TARGETS.items():
        if what in measured:
            found = measured[what]
            sign = "≤" if measure == "p99" else "≥"
            rounds = " / ".join(f"{ratio:.2f}" for ratio in found["ratios"])
            lines.append(
                f"| {what} | {rounds} | **{found['median']:.2f}** | {sign} {bound} "
                f"| {'yes' if found['met'] else 'no'} |"
            )
    lines += ["", "| run | req/s in each round | p99 ms | CPU ms/request |", "|---|---|---|---|"]

    def each(loads: list[dict[str, float]], key: str, form: str) -> str:
        return " / ".join(format(load[key], form) for load in loads)

    for name, loads in measured["rounds"].items():
        lines.append(
            f"| {name} | {each(loads, 'requests_per_s', '.0f')} | {each(loads, 'p99_ms', '.1f')} "
            f"| {each(loads, 'cpu_ms_per_request', '.3f')} |"
        )
    return "\n".join(lines)


def _row(what: str, ours: dict[str, float], base: dict[str, float], ratio: float) -> str:
    def cell(load: dict[str, float]) -> str:
        return (
            f"{load['requests_per_s']:.0f}; {load['p50_ms']:.2f}/{load['p99_ms']:.2f}; "
            f"{load['cpu_ms_per_request']:.3f}"
        )

    cpu_ratio = base["cpu_ms_per_request"] / ours["cpu_ms_per_request"]
    return f"| {what} | {cell(ours)} | {cell(base)} | {ratio:.2f} ({cpu_ratio:.2f} by CPU) |"


if __name__ == "__main__":
    main()
