"""The service's work off the requests: one refresh per category at a time, one repair
at a time, and a drain that waits for all of it (and says how long it has left)."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from feedbridge.background import Background


def test_work_of_one_key_runs_once_at_a_time() -> None:
    background = Background()
    gate, ran = threading.Event(), []

    def held(name: str) -> None:
        ran.append(name)
        assert gate.wait(10)

    background.run_once("vok-en", lambda: held("first"))
    background.run_once("vok-en", lambda: held("second"))  # the first is in flight
    background.run_once("all", lambda: held("other"))  # another key: runs
    gate.set()
    assert background.drain(timeout=10) is not None
    assert sorted(ran) == ["first", "other"]
    background.run_once("vok-en", lambda: held("again"))  # the first is over
    assert background.drain(timeout=10) is not None
    assert ran[-1] == "again"


def test_one_repair_at_a_time_and_a_failure_frees_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    background = Background()
    gate, ran = threading.Event(), []

    def repair() -> None:
        ran.append("repair")
        assert gate.wait(10)
        raise RuntimeError("a bug")

    caplog.set_level("ERROR", logger="feedbridge.background")
    background.repair(repair)
    background.repair(repair)  # one is in flight: nothing more
    gate.set()
    background.drain(timeout=10)
    assert ran == ["repair"]
    assert "a repair failed unexpectedly" in caplog.text
    background.repair(repair)
    background.drain(timeout=10)
    assert ran == ["repair", "repair"]


def test_drain_waits_for_what_others_hand_it_and_says_what_is_left() -> None:
    background = Background()
    handed: Future[None] = Future()  # a first fetch in flight, say
    gate = threading.Event()

    def finish() -> None:
        assert gate.wait(10)
        handed.set_result(None)

    threading.Thread(target=finish).start()
    looked: list[bool] = []  # at each look of drain's: was the handed work done?

    def also() -> list[Future[None]]:
        looked.append(handed.done())
        gate.set()
        return [] if handed.done() else [handed]

    left = background.drain(timeout=30, also=also)
    assert looked[0] is False and looked[-1] is True, "waited until it was done"
    assert left is not None and 0 < left <= 30
    assert background.drain() is None  # no timeout: nothing to tell
