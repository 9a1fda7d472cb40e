"""The production server: granian, serving the app in ``WEB_CONCURRENCY`` processes on ``$PORT``.

    python -m feedbridge.server [--host H] [--port P] [--workers N]

The Procfile, the Dockerfile and ``feedbridge serve --workers N`` all run this module.
bench/qualify.py chose granian over gunicorn (gevent or gthread) by measurement; the
table is in docs/benchmarks.md.

- **I/O outside Python.** granian reads requests and writes answers on Rust's tokio:
  clients that send their headers slowly cost no Python thread, and /healthz stays fast
  while they last. Each worker runs the app in up to ``THREADS`` Python threads; a reader
  waiting on a slow site holds one of them.
- **One process per worker, the app made in each** (after the fork): its store
  connections, its refresher and that refresher's lease are the worker's own. The master
  checks the settings and the store first, so that a bad one stops the server with one
  line (status 2), not a worker that dies and is replaced forever.
- **Workers are replaced** when they die, and stop gracefully on SIGTERM: the master
  passes it on, and each worker finishes the requests it has begun, not its background
  work (a repair's walk, full text), which resumes next time (:mod:`feedbridge.threads`).
- **Metrics** of all the workers are summed (``PROMETHEUS_MULTIPROC_DIR``, set here
  before any worker starts; a fresh directory removed at exit unless one is given).
- **Logs**: granian's lines and one access line per request (written by the app, with
  the reader's address when the proxy is trusted) take the app's form
  (:mod:`feedbridge.logs`).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feedbridge import config, logs
from feedbridge.config import MULTIPROC_DIR, Settings
from feedbridge.errors import ConfigError
from feedbridge.text import logfmt

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Python threads per worker that run the app (granian's blocking threads): each reader
# waiting on a slow site holds one. Connections a worker takes in at once (granian's
# backpressure): slow clients count too, still sending their headers, so it is gevent's
# worker_connections, not a number of threads (with 64, 100 slow clients stalled
# /healthz). Both chosen by bench/qualify.py.
THREADS = 32
BACKPRESSURE = 1000
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends
STOP_TIMEOUT = 30  # seconds a worker gets to finish its requests after SIGTERM

access_log = logging.getLogger("feedbridge.access")
_master = os.getpid()  # imported by the master (see the end), so a worker's is its master's


class AccessLog:
    """WSGI middleware: one ``event=access`` line per answered request.

    It wraps the app from outside, and reads ``REMOTE_ADDR`` after the app ran: the
    forwarded client when the proxy is trusted (:mod:`feedbridge.proxy` rewrites it).
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not access_log.isEnabledFor(logging.INFO):
            return self.app(environ, start_response)
        started = time.perf_counter()
        answer: dict[str, str] = {}

        def starting(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            answer["status"] = status.partition(" ")[0]
            answer["bytes"] = next(
                (value for name, value in headers if name.lower() == "content-length"), ""
            )
            return start_response(status, headers, *exc)

        body = self.app(environ, starting)
        query = environ.get("QUERY_STRING")
        status, size = answer.get("status", ""), answer.get("bytes", "")
        fields = {
            "event": "access", "client": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"),
            "path": environ.get("PATH_INFO", "") + (f"?{query}" if query else ""),
            "status": int(status) if status.isdigit() else "-",
            "bytes": int(size) if size.isascii() and size.isdigit() else 0,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "agent": environ.get("HTTP_USER_AGENT", "-"),
        }  # fmt: skip
        # The fields themselves too: a JSON log keeps status and bytes as numbers.
        access_log.info(logfmt(**fields), extra={"fields": fields})
        return body


def app() -> WSGIApplication:
    """The app of one worker (granian calls this in each worker, after the fork)."""
    from feedbridge.app import start_refresher

    _stop_with_the_master()
    from feedbridge.wsgi import app as flask_app

    start_refresher(flask_app)
    return AccessLog(flask_app)


def _stop_with_the_master() -> None:
    """Ask Linux to kill this worker when its master is gone, however it went.

    granian's workers do not watch their master (gunicorn's do): a master killed, or
    stopped while it was starting a worker, left workers serving the port on their own.
    SIGKILL, as a worker still loading the app ignores SIGTERM (the master's handler,
    inherited through the fork, is still in place); a master that stops as it should
    has stopped its workers gracefully before it ends.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _master:  # the master went before the request took effect
        os._exit(1)


def command(host: str, port: int, workers: int) -> list[str]:
    """The Procfile's command, after ``python``, with this address and number of workers
    (``feedbridge serve --workers``; the Procfile takes them from the platform)."""
    return [
        "-m", "feedbridge.server",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m feedbridge.server", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0", help="address (default: every one)")
    parser.add_argument("--port", type=int, help="port (default: $PORT, else 8000)")
    parser.add_argument("--workers", type=int, help="processes (default: $WEB_CONCURRENCY, else 2)")
    parser.add_argument("--threads", type=int, default=THREADS, help=argparse.SUPPRESS)
    parser.add_argument("--backpressure", type=int, default=BACKPRESSURE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


class ChosenThreads(logging.Filter):
    """Drops granian's warning, at every start, that ``THREADS`` is many for the cores:
    they were chosen so (each mostly waits on the site or the store), and
    ``BACKPRESSURE`` bounds what a worker takes in, as the warning advises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(f"Configuration allows spawning up to {THREADS} ")


def _log_config(form: str) -> dict[str, Any]:
    """granian's loggers, in the app's form, on standard error as the app's lines are."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "app",
        "stream": "ext://sys.stderr",
        "filters": ["chosen"],
    }
    return {
        "formatters": {"app": {"()": "feedbridge.logs.Formatter", "form": form}},
        "filters": {"chosen": {"()": "feedbridge.server.ChosenThreads"}},
        "handlers": {"app": handler},
        "loggers": {
            "_granian": {"handlers": ["app"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["app"], "level": "INFO", "propagate": False},
        },
    }


def _check(settings: Settings) -> None:
    """Make the app once, as each worker will: a bad categories file or store stops here."""
    from feedbridge.app import create_app

    create_app(settings).extensions["feedbridge"].store.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = _arguments(argv)
    try:
        settings = Settings.from_env(warn=False)
        logs.configure(settings.log_format)  # the master's own lines, in the app's form
        Settings.from_env()  # a misspelt variable named once: the workers inherit that
        port = args.port or config.port()
        workers = args.workers or config.web_concurrency()
        made = not os.environ.get(MULTIPROC_DIR)
        if made:  # before prometheus_client is first imported, here and in the workers
            os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="feedbridge-metrics-")
        else:
            for stale in Path(os.environ[MULTIPROC_DIR]).glob("*.db"):
                stale.unlink()
        _check(settings)
    except ConfigError as exc:
        print(f"feedbridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from granian import Granian
    from granian.constants import Interfaces

    try:
        Granian(
            "feedbridge.server:app",
            factory=True,
            interface=Interfaces.WSGI,
            websockets=False,  # WSGI has none (else a line at every start says so)
            address=args.host,
            port=port,
            workers=workers,
            blocking_threads=args.threads,
            backpressure=args.backpressure,
            respawn_failed_workers=True,
            respawn_interval=0.5,
            workers_kill_timeout=STOP_TIMEOUT,
            log_dictconfig=_log_config(settings.log_format),
        ).serve()
    finally:
        if made:
            shutil.rmtree(os.environ[MULTIPROC_DIR], ignore_errors=True)


if __name__ == "__main__":
    # The module itself, not this __main__ copy: the workers' loader finds it imported,
    # its _master this process.
    from feedbridge import server

    server.main()
