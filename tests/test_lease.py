"""Leases belong to a process: one made before a fork is another holder after it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import Lease


def _in_a_child(work: Callable[[], object]) -> str:
    """What ``work()`` returns, run in a forked child of this process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, never return into pytest
        try:
            os.write(write, str(work()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(pid, 0)
    return said


def test_a_lease_made_before_a_fork_is_not_shared_with_the_child(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "leases.db")
    lease = Lease(store, "refresher", 30.0)  # made at import, as under preload_app
    assert lease.acquire()
    token = lease.token
    try:
        # The child inherits the object: it must neither hold the lease nor take it.
        assert _in_a_child(lambda: (lease.held, lease.acquire())) == "(False, False)"
        assert lease.held and lease.token == token
    finally:
        lease.release()
    # Let go by the parent, the lease is the child's to take, with a token of its own.
    assert _in_a_child(lambda: (lease.acquire(), lease.token != token)) == "(True, True)"
