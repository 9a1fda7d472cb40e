"""The background refresher while the store fails: spaced out rounds, one line each way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from feedbridge.refresher import STORE_RETRY, TICK, Refresher
from feedbridge.store import Store, StoreError


class FullStore:
    """A store whose disk is full: what writes stories fails, reads and leases go on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.full = True

    def merge(self, *args: Any, **kwargs: Any) -> Any:
        if self.full:
            raise StoreError("database or disk is full")
        return self.store.merge(*args, **kwargs)

    def save_failure(self, *args: Any, **kwargs: Any) -> Any:
        if self.full:
            raise StoreError("database or disk is full")
        return self.store.save_failure(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_full_store_spaces_rounds_out_and_is_logged_once_each_way(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    full: FullStore | None = None

    def fill(store: Store) -> Store:
        nonlocal full
        full = FullStore(store)
        return full  # type: ignore[return-value]  # a Store by delegation

    refresher = Refresher(make_app(wrap_store=fill).extensions["feedbridge"])
    assert full is not None
    caplog.set_level("INFO", logger="feedbridge.refresher")
    try:
        pauses = [refresher.round() for _ in range(8)]
        first, cap = STORE_RETRY
        assert pauses == [max(first * 2**n, 0.5) if first * 2**n < cap else cap for n in range(8)]
        [line] = store_lines(caplog)
        assert line.startswith("event=store_error") and "disk is full" in line
        full.full = False
        assert refresher.round() <= TICK
        assert refresher.round() <= TICK
        assert store_lines(caplog)[1:] == ["event=store_recovered failed_rounds=8"]
    finally:
        refresher.stop()


def store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=store_" in r.getMessage()]
