"""gunicorn settings of the Procfile: one set of metrics for all the workers of a server.

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

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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


def post_worker_init(worker: Any) -> None:
    """Each worker runs a refresher; the store's lease lets one of them work at a time."""
    from feedbridge.app import start_refresher

    start_refresher(worker.wsgi)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges go with it (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _made:
        shutil.rmtree(os.environ[MULTIPROC_DIR], ignore_errors=True)
