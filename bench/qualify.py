"""Which server runs the app: each candidate serves the same app through our own checks,
then the cached feed under load.

    python3 -m bench.qualify [--seconds 6] [--rounds 3] [--only NAME ...]

Candidates: gunicorn with gevent workers (the Procfile's server until this chose),
gunicorn with gthread workers (``bench/gunicorn_conf.py``), and granian as
``python -m feedbridge.server`` runs it, with several numbers of Python threads and of
requests taken in at once (``--threads``, ``--backpressure``). Each runs 2 workers.

The qualifying round, each check pass or fail with what it saw:

- ``boot``: start to the first ``/healthz`` answer, median of 3 (the candidates taking
  turns), at most 1 s, or, on a machine so busy that the baseline's is slower, at most
  the baseline's;
- ``slow_clients``: /healthz under 2 s while 300 clients trickle header lines;
- ``dripping_site``: /healthz under 2 s while 16 cold requests wait on a site that
  drips its answer (tests/servers.py ``Dripper``);
- ``sigterm``: the command under ``sh -c 'exec …'`` as a platform runs the Procfile,
  SIGTERM to the shell's pid while a request waits on a slow site: that request is
  answered in full, and the server exits 0;
- ``forwarded``: a peer at 127.0.0.2 is believed with ``FORWARDED_ALLOW_IPS=*`` (links
  in https, the access line's client the forwarded one), not without it;
- ``port_and_concurrency``: ``$PORT`` and ``WEB_CONCURRENCY=3``, no arguments: it
  answers there with 3 workers;
- ``one_log_format``: every line of the output is logfmt with time, level and logger,
  access lines and the app's among them;
- ``metrics_summed``: 40 feeds asked on fresh connections, 40 counted by ``/metrics``;
- ``crash_replaced``: a worker killed (SIGKILL) is replaced and the server answers;
  then the master is killed, and no worker outlives it;
- ``leases_after_fork``: the refreshers of the workers take turns, so that each category
  is fetched once by the first round (workers sharing one lease token each fetch it);
- ``memory``: RSS and PSS of every process after warm-up, at most 10% above the
  baseline's (gunicorn with gevent) PSS.

The final: ``wrk -t2 -c32`` on the cached Atom feed, plain, gzip and 304, of the
candidates that passed and the baseline, rounds interleaved; medians and their ratios to
the baseline, and to a bare Flask app of the same bytes under gunicorn with gevent
(bench/ceiling.py). Results are printed and saved under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from bench.memory import memory
from bench.run import RESULTS, Load, Loader, Run, _site, ceiling_server, gunicorn
from feedbridge.categories import load_registry
from feedbridge.feeds import Format
from feedbridge.text import parse_logfmt
from tests.conftest import SITE, FakeSite
from tests.servers import ROOT, Dripper, WebServer, free_port, wait_until

FEED = "/feeds/vok-en.atom"
WORKERS = 2
BOOT_LIMIT = 1.0  # seconds to the first /healthz
HEALTHY = 2.0  # seconds: /healthz while slow clients or a slow site hold connections
SLOW_CLIENTS = 300
MEMORY_LIMIT = 1.10  # of the baseline's PSS


def granian(threads: int, backpressure: int) -> Callable[[int | None], list[str]]:
    """granian as ``python -m feedbridge.server`` runs it, with these settings."""

    def argv(port: int | None) -> list[str]:
        bind = ["--host", "127.0.0.1", "--port", str(port)] if port else []
        return [
            sys.executable, "-m", "feedbridge.server", *bind,
            "--threads", str(threads), "--backpressure", str(backpressure),
        ]  # fmt: skip

    return argv


@dataclass(frozen=True)
class Candidate:
    name: str
    argv: Callable[[int | None], list[str]]
    env: dict[str, str]

    def server(self, env: dict[str, str], workers: int = WORKERS) -> WebServer:
        return WebServer({**self.env, **env}, workers=workers, argv=self.argv)


BASELINE = "gunicorn-gevent"
CANDIDATES = [
    Candidate(BASELINE, gunicorn("gevent"), {"GUNICORN_WORKER": "gevent"}),
    Candidate("gunicorn-gthread-32", gunicorn("gthread"), {"GUNICORN_WORKER": "gthread"}),
    *(
        Candidate(f"granian-{threads}-{pressure}", granian(threads, pressure), {})
        for threads, pressure in ((32, 64), (4, 1000), (16, 1000), (32, 1000), (64, 1000))
    ),
]


@dataclass(frozen=True)
class Check:
    passed: bool
    saw: str
    value: float = 0.0  # what is compared to the baseline's, when it is


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs of each kind")
    parser.add_argument("--only", nargs="*", help="candidates to run (the baseline always is)")
    parser.add_argument(
        "--final-only", action="store_true", help="no qualifying: the final of the candidates"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("qualify: wrk is not installed (Debian package wrk)")
    chosen = [c for c in CANDIDATES if not args.only or c.name in args.only or c.name == BASELINE]
    results: dict[str, dict[str, Check]] = {}
    with _site() as site:
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "0",
        }
        if args.final_only:
            _report({}, run_final(chosen, env, args.seconds, args.rounds))
            return
        print("boot, the candidates taking turns …", flush=True)
        boots = check_boot(chosen, env)
        for candidate in chosen:
            print(f"qualifying {candidate.name} …", flush=True)
            results[candidate.name] = {"boot": boots[candidate.name]}
            results[candidate.name].update(qualify(candidate, env, site))
        _against_baseline(results)
        passed = [c for c in chosen if all(check.passed for check in results[c.name].values())]
        finalists = [c for c in chosen if c.name == BASELINE or c in passed]
        print(f"final: {', '.join(c.name for c in finalists)} …", flush=True)
        final = run_final(finalists, env, args.seconds, args.rounds)
    _report(results, final)


def _against_baseline(results: dict[str, dict[str, Check]]) -> None:
    """Memory against the baseline's; boot time too, when the machine is too busy for
    the baseline itself to boot within the limit (the machine's load slows all alike)."""
    pss, boot = results[BASELINE]["memory"].value, results[BASELINE]["boot"].value
    for checks in results.values():
        ratio = checks["memory"].value / pss
        checks["memory"] = Check(ratio <= MEMORY_LIMIT, f"{checks['memory'].saw}; {ratio:.2f}×")
        ratio = checks["boot"].value / boot
        within = checks["boot"].value <= max(BOOT_LIMIT, boot)
        checks["boot"] = Check(within, f"{checks['boot'].saw}; {ratio:.2f}× the baseline's")


def qualify(candidate: Candidate, env: dict[str, str], site: FakeSite) -> dict[str, Check]:
    checks: dict[str, Callable[[], Check]] = {
        "slow_clients": lambda: check_slow_clients(candidate, env),
        "dripping_site": lambda: check_dripping_site(candidate),
        "sigterm": lambda: check_sigterm(candidate, env),
        "forwarded": lambda: check_forwarded(candidate, env),
        "port_and_concurrency": lambda: check_port_and_concurrency(candidate, env),
        "one_log_format": lambda: check_log_format(candidate, env),
        "metrics_summed": lambda: check_metrics(candidate, env),
        "crash_replaced": lambda: check_crash(candidate, env),
        "leases_after_fork": lambda: check_leases(candidate, env, site),
        "memory": lambda: check_memory(candidate, env),
    }
    found: dict[str, Check] = {}
    for name, check in checks.items():
        try:
            found[name] = check()
        except Exception as exc:  # a check that cannot finish fails, with what stopped it
            found[name] = Check(False, f"{type(exc).__name__}: {str(exc)[:200]}")
        print(
            f"  {name}: {'pass' if found[name].passed else 'FAIL'} ({found[name].saw})", flush=True
        )
    return found


def check_boot(chosen: list[Candidate], env: dict[str, str], rounds: int = 3) -> dict[str, Check]:
    """Start to the first /healthz of each candidate, the candidates taking turns; the
    median of ``rounds``."""
    boots: dict[str, list[float]] = {candidate.name: [] for candidate in chosen}
    for _ in range(rounds):
        for candidate in chosen:
            with candidate.server(env) as server:
                boots[candidate.name].append(server.boot_s)
    found = {}
    for name, times in boots.items():
        boot = statistics.median(times)
        found[name] = Check(boot <= BOOT_LIMIT, f"{boot:.2f} s", boot)
    return found


def healthz_seconds(url: str) -> float:
    started = time.monotonic()
    try:
        requests.get(f"{url}/healthz", timeout=10).raise_for_status()
    except requests.Timeout:
        return 10.0
    return time.monotonic() - started


def check_slow_clients(candidate: Candidate, env: dict[str, str]) -> Check:
    with candidate.server(env) as server, contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(SLOW_CLIENTS):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), 5))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
            sockets.append(sock)
        time.sleep(1)
        times = [healthz_seconds(server.url) for _ in range(3)]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: still coming\r\n")
        time.sleep(1)
        times += [healthz_seconds(server.url) for _ in range(3)]
    return Check(max(times) < HEALTHY, f"slowest /healthz {max(times) * 1000:.0f} ms")


def _dripping(page: bytes, interval: float) -> Dripper:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
    return Dripper(head + page, fast=len(head), interval=interval, limit=60)


def check_dripping_site(candidate: Candidate) -> Check:
    page = (SITE / "home.html").read_bytes()
    feeds = [f"/feeds/{slug}.{fmt}" for slug in load_registry() for fmt in ("atom", "rss")][:16]
    with _dripping(page, 1.0) as site:
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_TIMEOUT": "5,30",
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "0",
            "FEEDBRIDGE_REFRESH": "0",
        }
        with candidate.server(env) as server, ThreadPoolExecutor(len(feeds)) as readers:
            cold = [readers.submit(requests.get, server.url + path, timeout=40) for path in feeds]
            time.sleep(2)
            waiting = sum(not reader.done() for reader in cold)
            times = [healthz_seconds(server.url) for _ in range(3)]
            site.stop()
    ok = max(times) < HEALTHY and waiting == len(feeds)
    return Check(ok, f"{waiting} readers waiting; slowest /healthz {max(times) * 1000:.0f} ms")


def check_sigterm(candidate: Candidate, env: dict[str, str]) -> Check:
    """The Procfile's way: ``sh -c 'exec …'``, SIGTERM to that pid, a request in flight."""
    page = (SITE / "home.html").read_bytes()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
    # All but 8 bytes at once, then one every 0.4 s: the request is in flight for 3 s.
    with Dripper(head + page, fast=len(head + page) - 8, interval=0.4, limit=60) as site:
        port = free_port()
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")},
            **env, **candidate.env,
            "FEEDBRIDGE_UPSTREAM_URL": site.url, "FEEDBRIDGE_REFRESH": "0",
            "FEEDBRIDGE_DB": tempfile.mktemp(prefix="qualify-", suffix=".db"),
            "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": str(WORKERS),
        }  # fmt: skip
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        command = "exec " + " ".join(candidate.argv(port))
        shell = subprocess.Popen(
            ["/bin/sh", "-c", command], env=full_env, cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until(lambda: _answers(f"http://127.0.0.1:{port}"), candidate.name)
            with ThreadPoolExecutor(1) as pool:
                url = f"http://127.0.0.1:{port}/feeds/all.atom"  # the home page, dripped
                reader = pool.submit(requests.get, url, timeout=30)
                time.sleep(1)  # the request waits on the site
                in_flight = not reader.done()
                shell.send_signal(signal.SIGTERM)
                try:
                    response = reader.result(30)
                    answered = f"{response.status_code}, {len(response.content)} bytes"
                    ok = response.status_code == 200 and b"<feed" in response.content
                except requests.RequestException as exc:
                    answered, ok = f"cut: {type(exc).__name__}", False
            status = shell.wait(30)
        finally:
            if shell.poll() is None:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait(10)
            Path(full_env["FEEDBRIDGE_DB"]).unlink(missing_ok=True)
    ok = ok and in_flight and status == 0
    return Check(ok, f"in flight: {in_flight}; answered {answered}; exit {status}")


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def check_forwarded(candidate: Candidate, env: dict[str, str]) -> Check:
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "feeds.example.org",
        "X-Forwarded-For": "203.0.113.7",
    }
    saw = []
    for allowed, believed in (("*", True), ("", False)):
        with candidate.server({**env, "FORWARDED_ALLOW_IPS": allowed}) as server:
            connection = http.client.HTTPConnection(
                "127.0.0.1", server.port, timeout=30, source_address=("127.0.0.2", 0)
            )
            connection.request("GET", FEED, headers=headers)
            body = connection.getresponse().read()
            connection.close()
            time.sleep(0.5)  # the access line is written
            link = b'href="https://feeds.example.org/feeds/vok-en.atom"' in body
            client = "client=203.0.113.7" in server.output()
            saw.append(link == believed and client == believed)
    return Check(all(saw), f"trusted, untrusted: {saw}")


def check_port_and_concurrency(candidate: Candidate, env: dict[str, str]) -> Check:
    port = free_port()

    def argv(_port: int) -> list[str]:
        return candidate.argv(None)

    with WebServer(
        {**candidate.env, **env, "PORT": str(port)}, workers=3, argv=argv, port=port
    ) as server:
        with contextlib.suppress(Exception):  # a master may start its workers in turn
            wait_until(lambda: len(server.workers()) == 3, "3 workers", timeout=10)
        workers = len(server.workers())
    return Check(workers == 3, f"answered on $PORT with {workers} workers")


def check_log_format(candidate: Candidate, env: dict[str, str]) -> Check:
    with candidate.server(env) as server:
        requests.get(server.url + FEED, timeout=30).raise_for_status()
        requests.get(server.url + "/feeds/nonesuch.atom", timeout=30)
        time.sleep(0.5)
        lines = [line for line in server.output().splitlines() if line.strip()]
    parsed = [parse_logfmt(line) for line in lines]
    bad = [
        line
        for line, fields in zip(lines, parsed, strict=True)
        if not fields or "time" not in fields
    ]
    loggers = {fields.get("logger", "") for fields in parsed if fields}
    access = any(fields and fields.get("event") == "access" for fields in parsed)
    app = any(name.startswith("feedbridge.") and name != "feedbridge.access" for name in loggers)
    ok = not bad and access and app
    return Check(
        ok, f"{len(lines)} lines, {len(bad)} not logfmt{': ' + bad[0][:80] if bad else ''}"
    )


def check_metrics(candidate: Candidate, env: dict[str, str]) -> Check:
    asked = 40
    with candidate.server(env) as server:
        for _ in range(asked):
            requests.get(server.url + FEED, headers={"Connection": "close"}, timeout=30)
        text = requests.get(server.url + "/metrics", timeout=30).text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("feedbridge_cache_lookups_total{") and 'category="vok-en"' in line
    )
    return Check(counted == asked, f"{asked} asked, {counted:.0f} counted")


def check_crash(candidate: Candidate, env: dict[str, str]) -> Check:
    """A worker killed is replaced; then the master is killed, and its workers stop too."""
    with candidate.server(env) as server:
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            workers = server.workers()
            return len(workers) == WORKERS and victim not in workers and _answers(server.url)

        started = time.monotonic()
        wait_until(replaced, "a new worker", timeout=15)
        took = time.monotonic() - started
        workers = server.workers()
        server.process.kill()
        server.process.wait(10)

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() for pid in workers)

        with contextlib.suppress(Exception):
            wait_until(gone, "the workers of a killed master to stop", timeout=10)
        orphans = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
    return Check(
        not orphans, f"replaced in {took:.1f} s; {len(orphans)} workers outlived the master"
    )


def check_leases(candidate: Candidate, env: dict[str, str], site: FakeSite) -> Check:
    paths = {category.paths[0] for category in load_registry().values()}
    before = {path: site.hits(path) for path in paths}
    with candidate.server({**env, "FEEDBRIDGE_REFRESH": "1"}) as server:

        def refreshed() -> bool:
            status = requests.get(server.url + "/status", timeout=10).json()
            return all(c.get("last_refresh") for c in status["categories"].values())

        wait_until(refreshed, "a first round of refreshes", timeout=60)
        time.sleep(1)  # a second refresher would be fetching too by now
        fetched = {path: site.hits(path) - before[path] for path in paths}
    twice = sorted(path for path, hits in fetched.items() if hits > 1)
    return Check(not twice, f"{len(paths)} listings, {len(twice)} fetched more than once")


def check_memory(candidate: Candidate, env: dict[str, str]) -> Check:
    with candidate.server({**env, "FEEDBRIDGE_FULLTEXT": "1"}) as server:
        for _ in range(3):
            for slug in load_registry():
                for fmt in Format:
                    requests.get(f"{server.url}/feeds/{slug}.{fmt.value}", timeout=60)
            requests.get(f"{server.url}/", timeout=60)
        pids = [server.process.pid, *server.workers()]
        rss = pss = 0
        for pid in pids:
            one_rss, one_pss = memory(pid)
            rss, pss = rss + one_rss, pss + one_pss
    return Check(True, f"{len(pids)} processes, RSS {rss} MiB, PSS {pss} MiB", pss)


# --- the final ------------------------------------------------------------------------------


def run_final(
    finalists: list[Candidate], env: dict[str, str], seconds: int, rounds: int
) -> dict[str, dict[str, Load]]:
    """Median of ``rounds`` interleaved wrk runs of each server and kind."""
    loader = Loader(seconds, 32, timeout=10)  # a shared machine stalls a request now and then
    with contextlib.ExitStack() as stack:
        runs: dict[tuple[str, str], Run] = {}
        size = 0
        for candidate in finalists:
            server = stack.enter_context(candidate.server({**env, "FEEDBRIDGE_LOG_LEVEL": "INFO"}))
            response = requests.get(server.url + FEED, timeout=30)
            size, etag = len(response.content), response.headers["ETag"]
            runs[(candidate.name, "plain")] = Run(server, FEED)
            runs[(candidate.name, "gzip")] = Run(
                server, FEED, 'wrk.headers["Accept-Encoding"] = "gzip"'
            )
            runs[(candidate.name, "304")] = Run(
                server, FEED, f'wrk.headers["If-None-Match"] = [[{etag}]]'
            )
        ceiling = stack.enter_context(ceiling_server(size))
        runs[("ceiling", "plain")] = Run(ceiling, "/feed")
        found: dict[tuple[str, str], list[Load]] = {key: [] for key in runs}
        for number in range(rounds):
            print(f"  round {number + 1} of {rounds} …", flush=True)
            for key, run in runs.items():
                found[key].append(loader.run(run))
    final: dict[str, dict[str, Load]] = {}
    for (name, kind), loads in found.items():
        rate = statistics.median(load.requests_per_s for load in loads)
        p99 = statistics.median(load.p99_ms for load in loads)
        median = min(loads, key=lambda load: abs(load.requests_per_s - rate))
        final.setdefault(name, {})[kind] = Load(
            requests_per_s=rate, p50_ms=median.p50_ms, p99_ms=p99,
            requests=median.requests, errors=sum(load.errors for load in loads),
            cpu_ms_per_request=statistics.median(load.cpu_ms_per_request for load in loads),
        )  # fmt: skip
    return final


def _report(results: dict[str, dict[str, Check]], final: dict[str, dict[str, Load]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("qualify-%Y%m%d-%H%M%S.json")
    path.write_text(
        json.dumps(
            {
                "qualifying": {
                    n: {c: asdict(v) for c, v in cs.items()} for n, cs in results.items()
                },
                "final": {n: {k: asdict(v) for k, v in ks.items()} for n, ks in final.items()},
            },
            indent=2,
        )
        + "\n"
    )
    names = list(results)
    checks = list(results[names[0]]) if names else []
    lines = ["", "| check | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for check in checks:
        cells = [
            f"{'pass' if results[n][check].passed else '**fail**'}: {results[n][check].saw}"
            for n in names
        ]
        lines.append(f"| {check} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    base = final[BASELINE]
    ceiling = final["ceiling"]["plain"].requests_per_s
    lines = [
        "",
        "| server | plain req/s (p99 ms) | gzip | 304 | plain vs baseline | gzip | 304 "
        "| plain vs bare Flask on gunicorn+gevent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, kinds in final.items():
        if name == "ceiling":
            continue
        cells = [
            f"{kinds[k].requests_per_s:.0f} ({kinds[k].p99_ms:.1f})"
            for k in ("plain", "gzip", "304")
        ]
        ratios = [
            f"{kinds[k].requests_per_s / base[k].requests_per_s:.2f}×"
            for k in ("plain", "gzip", "304")
        ]
        target = f"{kinds['plain'].requests_per_s / ceiling:.2f}×"
        lines.append(f"| {name} | " + " | ".join([*cells, *ratios, target]) + " |")
    lines.append(
        f"| bare Flask, same bytes, gunicorn+gevent | {ceiling:.0f} "
        f"({final['ceiling']['plain'].p99_ms:.1f}) | | | | | | 1.00× |"
    )
    print("\n".join(lines))
    print(f"\nsaved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
