"""Threads for background work that the process may drop when it ends.

:class:`concurrent.futures.ThreadPoolExecutor` joins its threads at exit, and they run
every task still queued first: a worker told to stop (SIGTERM, on every deploy) would
finish a repair walking the archive for minutes, or the article fetches of a fill,
before it ended, past what a platform waits (30 s, then SIGKILL). What runs on these
pools may stop anywhere: each store write is one transaction, a repair notes its
progress after each page and resumes from there, and a story still without full text
is asked for again. So their threads are daemons, and the process ends without them.

Nor do they take the signals that stop a server. Linux hands a signal sent to the
process to whichever of its threads next looks (one that starts a thread, say), and
only the main thread runs Python's handlers: a granian worker whose SIGTERM one of our
threads took never learnt it was told to stop, and was killed 20 s later. Every thread
the bridge starts therefore blocks SIGINT and SIGTERM, and the main thread gets them.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def start_daemon(target: Callable[[], object], name: str) -> threading.Thread:
    """``target()`` on a new daemon thread that leaves :data:`STOP_SIGNALS` to the main
    thread (a thread starts with the mask of the thread that starts it)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return thread


class DaemonPool:
    """Up to ``workers`` daemon threads running what :meth:`submit` is given, in order.

    Threads start with the first tasks (none before the server forks its workers)."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """``work()`` on a thread of the pool; a future of what it returns or raises
        (cancelled, it does not run)."""
        future: Future[T] = Future()
        with self._lock:
            self._tasks.put((future, work))
            # Another thread when the queued tasks outnumber the threads waiting for one.
            if self._tasks.qsize() > self._idle and len(self._threads) < self._workers:
                name = f"{self._name}_{len(self._threads)}"
                self._threads.append(start_daemon(self._run, name))
        return future

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, work = self._tasks.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = work()
            except BaseException as exc:  # the future carries it, as concurrent.futures does
                future.set_exception(exc)
            else:
                future.set_result(result)
