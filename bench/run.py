"""feedbridge's benchmark: every figure a ratio to a baseline measured in the same run.

    python3 -m bench.run [--seconds 10] [--rounds 3]    (from the repository root,
                                                        after pip install -e '.[test]')

1. Cached feed under gunicorn (the Procfile's settings) against the ceiling: a minimal
   Flask endpoint with a constant body of the same size under the same settings
   (bench/ceiling.py); with the memory cache, and with Redis when redis-server is here.
2. Cold refresh of each category, parse + render (network excluded), against a bare
   ``lxml.html.fromstring`` of the same page.
3. Conditional polls (``If-None-Match`` → 304) against full responses.
4. Peak memory (VmHWM) of each worker after many distinct query strings, against the
   same worker after warm-up.

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
import subprocess
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import lxml.html
import requests
from pytest_httpserver import HTTPServer

from feedbridge.bridge import Bridge, Rendered
from feedbridge.cache import Entry, FeedCache
from feedbridge.categories import Category, load_registry
from feedbridge.feeds import Format
from feedbridge.fulltext import FullText
from feedbridge.model import newest_first
from feedbridge.scrape import parse_home, parse_listing
from feedbridge.upstream import Upstream
from tests.conftest import SITE, FakeSite
from tests.servers import ROOT, Gunicorn, RedisServer

RESULTS = ROOT / "bench" / "results"
FEED = "/feeds/vok-en.atom"
# The distinct query strings of part 4: each wrk thread numbers its own requests.
DISTINCT_QUERIES = """
local words = {"production", "korea", "party", "meeting", "russia", "dprk", "cement", "zzz"}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  local path = "/feeds/all.atom?limit=" .. (n % 50 + 1) .. "&q=" .. words[n % #words + 1]
    .. "&n=" .. id .. "-" .. n
  return wrk.format("GET", path)
end
"""


@dataclass(frozen=True)
class Load:
    """What wrk measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors
    cpu_ms_per_request: float = 0.0  # of the server's workers: what others' load cannot skew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of each kind")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian package wrk)")
    results: dict[str, object] = {"settings": vars(args), "procfile": _procfile()}

    print("2. cold refresh: parse + render against bare lxml …", flush=True)
    results["cold"] = cold_refresh()

    with ExitStack() as servers:
        site = servers.enter_context(_site())
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "0",
            "FEEDBRIDGE_LOG_LEVEL": "WARNING",
        }
        bridge = servers.enter_context(Gunicorn(env))
        warm = requests.get(bridge.url + FEED, timeout=30)
        warm.raise_for_status()
        size, etag = len(warm.content), warm.headers["ETag"]
        ceiling = servers.enter_context(
            Gunicorn({"CEILING_BYTES": str(size)}, app="bench.ceiling:app")
        )
        # Every server is up and idle while another is measured; the kinds of run take
        # turns, so that whatever else the machine does slows all of them alike.
        runs: dict[str, Run] = {
            "ceiling": Run(ceiling, "/feed"),
            "memory_cache": Run(bridge, FEED),
            "not_modified": Run(bridge, FEED, f'wrk.headers["If-None-Match"] = [[{etag}]]'),
        }
        if shutil.which("redis-server"):
            redis_url = servers.enter_context(RedisServer()).url
            on_redis = servers.enter_context(Gunicorn({**env, "FEEDBRIDGE_REDIS_URL": redis_url}))
            requests.get(on_redis.url + FEED, timeout=30).raise_for_status()
            runs["redis_cache"] = Run(on_redis, FEED)
        print(f"1, 3. {args.rounds} rounds of {', '.join(runs)} …", flush=True)
        load = Loader(args.seconds, args.connections)
        best = load.rounds(runs, args.rounds)
        print("4. memory after distinct query strings …", flush=True)
        results["memory"] = _memory(bridge, load)

    ceiling_rps = best["ceiling"].requests_per_s
    results["throughput"] = {
        "body_bytes": size,
        **{name: asdict(found) for name, found in best.items()},
        "ratio": best["memory_cache"].requests_per_s / ceiling_rps,
    }
    if "redis_cache" in best:
        results["throughput"]["redis_ratio"] = (  # type: ignore[index]
            best["redis_cache"].requests_per_s / ceiling_rps
        )
    results["conditional"] = {
        "full": asdict(best["memory_cache"]),
        "not_modified": asdict(best["not_modified"]),
        "ratio": best["not_modified"].requests_per_s / best["memory_cache"].requests_per_s,
    }
    _report(results)


@dataclass(frozen=True)
class Run:
    server: Gunicorn
    path: str
    script: str | None = None  # wrk's Lua


class Loader:
    """wrk runs of one length and concurrency."""

    def __init__(self, seconds: int, connections: int) -> None:
        self.seconds = seconds
        self.connections = connections

    def rounds(self, runs: dict[str, Run], rounds: int) -> dict[str, Load]:
        """The best run of each kind: the machine's other work only ever slows one down."""
        found: dict[str, list[Load]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                found[name].append(self.run(run))
        return {
            name: max(loads, key=lambda load: load.requests_per_s) for name, loads in found.items()
        }

    def run(self, run: Run) -> Load:
        url = run.server.url + run.path
        workers = run.server.workers()
        cpu = _cpu_seconds(workers)
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
            lua.write(run.script or "")
            lua.flush()
            argv = ["wrk", "-t2", f"-c{self.connections}", f"-d{self.seconds}s", "--latency"]
            output = subprocess.run(
                [*argv, "-s", lua.name, url],
                capture_output=True,
                text=True,
                check=True,
                timeout=self.seconds + 60,
            ).stdout
        load = _parse_wrk(output)
        if load.errors:
            raise SystemExit(f"bench: {load.errors} failed requests to {url}:\n{output}")
        spent = _cpu_seconds(workers) - cpu
        return dataclasses.replace(load, cpu_ms_per_request=spent * 1000 / load.requests)


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
    )


def cold_refresh() -> list[dict[str, object]]:
    """Per category: bare lxml parse; scrape; render (Atom, as served: gzipped, tagged)."""
    upstream = Upstream("https://kcnawatch.org")
    bridge = Bridge(
        load_registry(),
        upstream=upstream,
        cache=FeedCache(ttl=600, stale_ttl=86_400),
        fulltext=FullText(upstream),  # never used: nothing is fetched here
    )
    return [_cold(bridge, category) for category in bridge.registry.values()]


def _cold(bridge: Bridge, category: Category) -> dict[str, object]:
    page = _page_of(category)
    entry = Entry(tuple(_scrape(category, page)), "bench")
    self_url = f"http://127.0.0.1/feeds/{category.slug}.atom"

    def render() -> Rendered:
        return bridge.rendered(category, entry, Format.ATOM, self_url, items=entry.items)

    bare = _best(lambda: lxml.html.fromstring(page))
    scrape = _best(lambda: _scrape(category, page))
    rendering = _best(render)
    return {
        "category": category.slug,
        "page_bytes": len(page),
        "items": len(entry.items),
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


def _scrape(category: Category, page: bytes) -> list:  # type: ignore[type-arg]
    """What Bridge.load does with a page once it has it."""
    base = "https://kcnawatch.org"
    if category.label is None:
        return newest_first(parse_home(page, base_url=base))
    items = parse_listing(page, label=category.label, base_url=base, page_path=category.paths[0])
    return newest_first(items)


def _best(call: Callable[[], object]) -> float:
    """Seconds per call: the fastest of five timeit rounds of about 0.2 s each."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number


def _memory(server: Gunicorn, load: Loader) -> dict[str, object]:
    """The workers' peak RSS after warm-up (the throughput runs), then after a flood."""
    requests.get(server.url + "/feeds/all.atom?limit=5&q=korea", timeout=30).raise_for_status()
    before = {pid: _peak_kib(pid) for pid in server.workers()}
    flood = load.run(Run(server, "/feeds/all.atom", DISTINCT_QUERIES))
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


def _report(results: dict[str, object]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    throughput, conditional, memory = (
        results["throughput"],
        results["conditional"],
        results["memory"],
    )
    lines = [
        "",
        "| measure | feedbridge | baseline | ratio |",
        "|---|---|---|---|",
        _row(
            "1. cached feed, memory cache (req/s; p50/p99 ms; CPU ms/req)",
            throughput["memory_cache"],  # type: ignore[index]
            throughput["ceiling"],  # type: ignore[index]
            throughput["ratio"],  # type: ignore[index]
        ),
    ]
    if "redis_cache" in throughput:  # type: ignore[operator]
        lines.append(
            _row(
                "1. cached feed, Redis cache (req/s; p50/p99 ms; CPU ms/req)",
                throughput["redis_cache"],  # type: ignore[index]
                throughput["ceiling"],  # type: ignore[index]
                throughput["redis_ratio"],  # type: ignore[index]
            )
        )
    for row in results["cold"]:  # type: ignore[attr-defined]
        lines.append(
            f"| 2. cold refresh {row['category']} ({row['items']} items, parse + render ms) "
            f"| {row['scrape_ms']:.2f} + {row['render_ms']:.2f} "
            f"| lxml {row['bare_lxml_ms']:.2f} | {row['ratio']:.1f}× |"
        )
    lines.append(
        _row(
            "3. conditional poll, 304 vs 200 (req/s; p50/p99 ms; CPU ms/req)",
            conditional["not_modified"],  # type: ignore[index]
            conditional["full"],  # type: ignore[index]
            conditional["ratio"],  # type: ignore[index]
        )
    )
    for worker in memory["workers"]:  # type: ignore[index]
        lines.append(
            f"| 4. peak RSS of a worker after {memory['distinct_query_strings']} "  # type: ignore[index]
            f"distinct query strings (MiB) | {worker['peak_mib_after']:.1f} "
            f"| {worker['peak_mib_after_warm_up']:.1f} after warm-up "
            f"| {worker['peak_mib_after'] / worker['peak_mib_after_warm_up']:.2f}× |"
        )
    print("\n".join(lines))
    print(f"\nbody {throughput['body_bytes']} bytes; saved {path.relative_to(ROOT)}")  # type: ignore[index]


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
