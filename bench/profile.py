"""Where a worker's time goes on the cached path, under load: py-spy samples one worker of
the Procfile's server while wrk asks for a cached Atom feed.

    python3 -m bench.profile [--seconds 8] [--py-spy PATH]    (py-spy from PyPI; root,
                                                              or ptrace allowed)

Prints the functions with the most samples on top of the stack (own) and anywhere in it
(total), as a share of the worker's samples, and feedbridge's own functions by total.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

import requests

from bench.run import FEED, _site
from tests.servers import WebServer

TOP = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with _site() as site, tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        env = {
            "FEEDBRIDGE_UPSTREAM_URL": site.url,
            "FEEDBRIDGE_MIN_INTERVAL": "0",
            "FEEDBRIDGE_FULLTEXT": "0",
            "FEEDBRIDGE_LOG_LEVEL": "WARNING",
        }
        with WebServer(env) as server:
            requests.get(server.url + FEED, timeout=30).raise_for_status()
            worker = server.workers()[0]
            raw = Path(scratch) / "stacks.txt"
            spy = subprocess.Popen(
                [args.py_spy, "record", "--pid", str(worker), "--duration", str(args.seconds),
                 "--format", "raw", "--rate", "250", "--nonblocking", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            subprocess.run(
                ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", server.url + FEED],
                capture_output=True,
                check=True,
                timeout=args.seconds + 60,
            )
            spy.wait(timeout=args.seconds + 60)
        print(report(raw.read_text()))


def report(stacks: str) -> str:
    """Own and total shares of each function, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_name(frame) for frame in stack.split(";")]
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "| own | function |", "|---|---|"]
    lines += [f"| {n / samples:.1%} | {name} |" for name, n in own.most_common(TOP)]
    lines += ["", "| total | function |", "|---|---|"]
    lines += [f"| {n / samples:.1%} | {name} |" for name, n in total.most_common(TOP)]
    ours = [(name, n) for name, n in total.most_common() if "(feedbridge/" in name]
    lines += ["", "| total | feedbridge's own functions |", "|---|---|"]
    lines += [f"| {n / samples:.1%} | {name} |" for name, n in ours[:TOP]]
    return "\n".join(lines)


def _name(frame: str) -> str:
    """``render (feedbridge/feeds.py:12)`` → ``render (feedbridge/feeds.py)``: by function."""
    function, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{function} ({path.removeprefix(str(Path.cwd()) + '/')})"


if __name__ == "__main__":
    main()
