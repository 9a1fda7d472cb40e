"""The background pools: futures as concurrent.futures gives them, a bound on threads,
a process that ends without waiting for them, and threads that leave the signals that
stop a server to the main thread."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path

from flask import Flask

from feedbridge import observe
from feedbridge.app import start_refresher
from feedbridge.threads import STOP_SIGNALS, DaemonPool, start_daemon
from tests.conftest import settle


def test_work_runs_and_its_future_says_how_it_went() -> None:
    pool = DaemonPool(2, "test-pool")
    done = pool.submit(lambda: 42)

    def fails() -> None:
        raise ValueError("no")

    failed = pool.submit(fails)
    assert done.result(timeout=10) == 42
    assert isinstance(failed.exception(timeout=10), ValueError)


def test_no_more_threads_than_workers_and_none_before_the_first_task() -> None:
    pool = DaemonPool(2, "test-bounded")
    assert not [t for t in threading.enumerate() if t.name.startswith("test-bounded")]
    go = threading.Event()
    lock = threading.Lock()
    running = 0
    most = 0

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        go.wait(10)
        with lock:
            running -= 1

    flights = [pool.submit(work) for _ in range(6)]
    deadline = time.monotonic() + 10
    while running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.set()
    wait(flights, timeout=10)
    assert all(flight.done() for flight in flights)
    assert most == 2
    assert len([t for t in threading.enumerate() if t.name.startswith("test-bounded")]) == 2


def test_a_task_cancelled_before_it_starts_does_not_run() -> None:
    pool = DaemonPool(1, "test-cancel")
    go = threading.Event()
    ran: list[str] = []
    first = pool.submit(lambda: go.wait(10))
    second = pool.submit(lambda: ran.append("second"))
    assert second.cancel()
    go.set()
    assert first.result(timeout=10) is True
    assert pool.submit(lambda: "after").result(timeout=10) == "after"
    assert ran == []


def test_the_process_ends_without_waiting_for_its_background_work() -> None:
    """A worker told to stop ends at once, a repair's walk of the archive in flight or
    not (it resumes next time): a walk of 10 minutes would time this test out, as it
    did with concurrent.futures' pool, whose threads are joined at exit."""
    script = (
        "import threading, feedbridge.threads\n"
        "pool = feedbridge.threads.DaemonPool(1, 'walk')\n"
        "started = threading.Event()\n"
        "pool.submit(lambda: (started.set(), threading.Event().wait(600)))\n"
        "started.wait(10)\n"
        "print('walking', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, "walking\n"), done.stderr


def blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals ``thread`` blocks, as Linux reports them."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    found = re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.MULTILINE)
    assert found, status
    mask = int(found.group(1), 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


def test_a_thread_started_leaves_the_stop_signals_to_the_main_thread() -> None:
    """Linux gives a signal sent to the process to any thread that does not block it,
    and only the main thread runs Python's handlers: a granian worker whose SIGTERM
    went to one of our threads did not stop until it was killed."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    go = threading.Event()
    thread = start_daemon(lambda: go.wait(10), "test-masked")
    try:
        assert blocked_signals(thread) >= STOP_SIGNALS
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the starter's own
        assert STOP_SIGNALS.isdisjoint(blocked_signals(threading.main_thread()))
    finally:
        go.set()
        thread.join(10)


def test_no_thread_of_a_worker_takes_the_signals_that_stop_it(
    make_app: Callable[..., Flask],
) -> None:
    """Every thread a worker of the bridge starts: the refresher and its lease, the
    pools of refreshes and articles, the metrics' flusher."""
    earlier = set(threading.enumerate())  # other tests' threads may end as this one looks
    app = make_app(refresh=True, fulltext=True)
    start_refresher(app)
    try:
        assert app.test_client().get("/feeds/vok-en.atom").status_code == 200
        settle(app)
        observe.TALLY.add("vok-en", "fresh")  # its flusher: one per process, for good
        ours = [
            t
            for t in threading.enumerate()
            if t.native_id is not None  # not one still starting, as a lease's heartbeat may be
            and (
                (t not in earlier and t.name.startswith(("feedbridge-", "lease-")))
                or t.name == "feedbridge-tally"
            )
        ]
        names = {re.sub(r"_\d+$", "", t.name) for t in ours}
        assert {"feedbridge-refresher", "lease-refresher", "feedbridge-tally"} <= names
        assert {"feedbridge-refresh", "feedbridge-article"} <= names
        for thread in ours:
            try:
                blocked = blocked_signals(thread)
            except FileNotFoundError:  # a lease let go: its heartbeat ended meanwhile
                thread.join(10)
                assert not thread.is_alive(), thread.name
                continue
            assert blocked >= STOP_SIGNALS, thread.name
    finally:
        app.extensions["feedbridge.refresher"].stop()
