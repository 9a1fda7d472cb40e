"""WebSub notices under strain: a total deadline per notice, a bounded backlog."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY as METRICS

from feedbridge.categories import load_registry
from feedbridge.websub import Publisher
from tests.servers import Dripper

HUB_ANSWER = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
VOK = load_registry()["vok-en"]


def notices(outcome: str) -> float:
    sample = METRICS.get_sample_value(
        "feedbridge_websub_notices_total", {"category": "vok-en", "outcome": outcome}
    )
    return sample or 0.0


def test_a_hub_dripping_its_answer_is_cut_at_the_deadline() -> None:
    # A byte every half second: the read timeout (2 s) never trips, the total must.
    with Dripper(HUB_ANSWER, interval=0.5, limit=60) as hub:
        publisher = Publisher(hub.url, "https://feeds.example.org", timeout=(2.0, 1.0))
        failed = notices("failed")
        started = time.monotonic()
        publisher.notify(VOK)
        assert publisher.drain(timeout=30), "three notices of 1 s each should be over"
        assert time.monotonic() - started < 20
        assert notices("failed") == failed + 3


def test_the_backlog_is_coalesced_per_feed_and_bounded() -> None:
    other = load_registry()["rodong-sinmun-en"]
    with Dripper(HUB_ANSWER, interval=0.5, limit=60) as hub:
        publisher = Publisher(
            hub.url, "https://feeds.example.org", timeout=(2.0, 2.0), max_queued=4
        )
        coalesced, dropped = notices("coalesced"), notices("dropped")
        publisher.notify(VOK)  # the first is being sent, two wait
        for _ in range(50):
            publisher.notify(VOK)
        assert publisher.queued() <= 3
        assert notices("coalesced") >= coalesced + 3 * 49
        publisher.notify(other)  # room for two of its three feeds at the most
        assert publisher.queued() == 4
        assert notices("dropped") == dropped
        assert METRICS.get_sample_value(
            "feedbridge_websub_notices_total", {"category": other.slug, "outcome": "dropped"}
        ) in (1.0, 2.0)
        assert publisher.drain(timeout=30)
