"""Memory of a server as the Procfile runs it, for sizing a dyno or a VM.

    python3 -m bench.memory [--workers 2]    (from the repository root)

The Procfile's server serves the saved pages of ``tests/fixtures`` (full text on);
every feed and the front page are asked for three times, then each process's resident
memory (RSS) and its proportional share (PSS: shared pages, the modules the master
imported before it forked, split between the processes that share them) are printed in
MiB. The sum of PSS is what the server costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import requests
from pytest_httpserver import HTTPServer

from feedbridge.categories import load_registry
from feedbridge.feeds import Format
from tests.conftest import FakeSite
from tests.servers import WebServer


def memory(pid: int) -> tuple[int, int]:
    """RSS and PSS of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        if ":" in line and not line.startswith("0")
    )  # fmt: skip
    return int(fields["Rss"].split()[0]) // 1024, int(fields["Pss"].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    workers = parser.parse_args().workers
    site_server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    site_server.start()
    site = FakeSite(site_server)
    env = {"FEEDBRIDGE_UPSTREAM_URL": site.url, "FEEDBRIDGE_MIN_INTERVAL": "0"}
    try:
        with WebServer(env, workers=workers) as server:
            for _ in range(3):
                for slug in load_registry():
                    for fmt in Format:
                        requests.get(f"{server.url}/feeds/{slug}.{fmt.value}", timeout=60)
                requests.get(f"{server.url}/", timeout=60)
            processes = [("master", server.process.pid)]
            processes += [("worker", pid) for pid in server.workers()]
            total = 0
            for role, pid in processes:
                rss, pss = memory(pid)
                total += pss
                print(f"{role:6}  RSS {rss:4d} MiB  PSS {pss:4d} MiB")
            print(f"server  PSS {total:4d} MiB in all, {workers} workers")
    finally:
        site_server.stop()


if __name__ == "__main__":
    main()
