"""gunicorn settings of the Procfile: the worker model, and one set of metrics for all the
workers of a server.

Workers are gevent's: each connection is a greenlet, so clients that send their
headers slowly, and readers waiting on a slow site, cost a little memory each instead
of one of a few threads (with gthread, 32 such clients stalled /healthz for as long as
they lasted; tests/test_slow_clients.py). gevent patches the standard library here,
before the app is imported (``--preload``): the locks, conditions, thread pools and
sockets the app makes are then gevent's, so a request that waits on one yields to the
others. The app's background "threads" are greenlets: I/O in them yields; a long CPU or
C call (a parse, an SQLite query) holds its worker's other requests meanwhile.

``gunicorn --config python:feedbridge.gunicorn_conf …`` reads this module before the
app is imported, which is when prometheus_client must learn that it runs in several
processes (``PROMETHEUS_MULTIPROC_DIR``). Without the variable a fresh directory is
made for this server and removed when it stops; with it, the directory given is used
and its old ``*.db`` files, left by a previous run, are removed first.

Before each fork, the objects the app made at import (``--preload``) are frozen out of
the garbage collector's reach: a worker's collections then skip them, which bench/
measured at about a tenth of a cached request's CPU time, and their pages stay shared.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # first: before anything makes a lock or a socket

import gc  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

worker_class = "gevent"
worker_connections = 1000  # per worker: open connections, slow ones included

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_DIR):
    _made = False
    for stale in Path(os.environ[MULTIPROC_DIR]).glob("*.db"):
        stale.unlink()
else:
    _made = True
    os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="feedbridge-metrics-")


def pre_fork(server: Any, worker: Any) -> None:
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges go with it (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _made:
        shutil.rmtree(os.environ[MULTIPROC_DIR], ignore_errors=True)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Let the worker's other connections run before this one's next request.

    A kept-alive client whose next request is already there is otherwise served again
    at once, and again: under wrk, some connections waited over 2 s (bench/run.py
    failed) while p50 stayed under 1 ms.
    """
    gevent.sleep(0)
