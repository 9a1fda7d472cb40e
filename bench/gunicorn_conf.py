"""gunicorn's settings for bench/qualify.py's candidates (``gunicorn --config
python:bench.gunicorn_conf``): the worker class from ``GUNICORN_WORKER`` (gevent, or
gthread with ``THREADS`` threads), one set of metrics for all the workers, logs in the
app's form. Until granian replaced it, this was the Procfile's server (feedbridge/server.py).

With gevent, each connection is a greenlet, and gevent patches the standard library
here, before the app is imported (``--preload``): the locks, conditions, thread pools
and sockets the app makes are then gevent's, so a request that waits on one yields to
the others. With gthread, a connection holds a thread while its request is read.

``PROMETHEUS_MULTIPROC_DIR`` is set here, before the app is imported: without the
variable a fresh directory is made for this server and removed when it stops; with it,
the directory given is used and its old ``*.db`` files are removed first.

Before each fork, the objects the app made at import (``--preload``) are frozen out of
the garbage collector's reach: a worker's collections then skip them, and their pages
stay shared. gunicorn's own log and its access log take the app's form
(:mod:`feedbridge.logs`).
"""

from __future__ import annotations

import os

WORKER = os.environ.get("GUNICORN_WORKER", "gevent")
if WORKER == "gevent":
    from gevent import monkey

    monkey.patch_all()  # first: before anything makes a lock or a socket

import gc  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from gunicorn.glogging import Logger  # noqa: E402

# Not `from feedbridge import config`: gunicorn would take a module variable `config`
# for its own setting of that name.
from feedbridge.config import MULTIPROC_DIR, Settings, port, web_concurrency  # noqa: E402
from feedbridge.errors import ConfigError  # noqa: E402
from feedbridge.logs import Formatter  # noqa: E402
from feedbridge.text import logfmt  # noqa: E402

THREADS = 32  # gthread's, as many as granian's blocking threads (feedbridge/server.py)
worker_class = WORKER
worker_connections = 1000  # gevent's, per worker: open connections, slow ones included
threads = THREADS
try:
    workers = web_concurrency()  # a platform sets it by memory
    bind = [f"0.0.0.0:{port()}"]  # the platform's port
except ConfigError as exc:  # one line, not gunicorn's traceback or a server of no workers
    print(f"feedbridge: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
preload_app = True  # a bad setting stops the whole server with one line, not each worker
accesslog = "-"
control_socket_disable = True  # a platform's home directory may be read-only


if os.environ.get(MULTIPROC_DIR):
    _made = False
    for stale in Path(os.environ[MULTIPROC_DIR]).glob("*.db"):
        stale.unlink()
else:
    _made = True
    os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="feedbridge-metrics-")


def _log_format() -> str:
    try:
        return Settings.from_env().log_format
    except ConfigError:  # the app stops start-up with the line that names the setting
        return Settings.log_format


class FeedbridgeLogger(Logger):  # type: ignore[misc]  # gunicorn has no annotations
    """gunicorn's logs, one line each in the app's form."""

    formatter = Formatter(_log_format())

    def _set_handler(self, log: Any, output: Any, fmt: Any, stream: Any = None) -> None:
        super()._set_handler(log, output, self.formatter, stream)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        path = atoms["U"] + (f"?{atoms['q']}" if atoms["q"] else "")
        fields = {
            "event": "access", "client": atoms["h"], "method": atoms["m"], "path": path,
            "status": int(atoms["s"]), "bytes": atoms["B"] or 0, "duration_ms": atoms["M"],
            "agent": atoms["a"],
        }  # fmt: skip
        # The fields themselves too: a JSON log keeps status and bytes as numbers.
        self.access_log.info(logfmt(**fields), extra={"fields": fields})


logger_class = FeedbridgeLogger


def pre_fork(server: Any, worker: Any) -> None:
    gc.freeze()


def post_worker_init(worker: Any) -> None:
    """Each worker runs a refresher; the store's lease lets one of them work at a time."""
    from feedbridge.app import start_refresher

    start_refresher(worker.wsgi)


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges go with it (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # idem


def on_exit(server: Any) -> None:
    if _made:
        shutil.rmtree(os.environ[MULTIPROC_DIR], ignore_errors=True)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Let the worker's other connections run before this one's next request.

    A kept-alive client whose next request is already there is otherwise served again
    at once, and again: under wrk, some connections waited over 2 s (bench/run.py
    failed) while p50 stayed under 1 ms.
    """
    if WORKER == "gevent":
        import gevent

        gevent.sleep(0)
