"""When a category is due: the estimator, its bounds, and the schedule through the app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from bench import gaps
from feedbridge import schedule
from feedbridge.bridge import FeedService
from feedbridge.model import ArticleKey, Item
from feedbridge.schedule import Cadence, Due, Policy, by_hour
from feedbridge.store import Listing
from tests.conftest import Clock, FakeSite

HOUR = 3600.0
DAY = 86_400.0
WEEK = 7 * DAY
MONDAY = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
POLICY = Policy(ttl=600, min_refresh=60)


def bursts(*, weeks: int, hour: int, per_day: int, until: float) -> list[float]:
    """``per_day`` stories every day within the hour ``hour`` (UTC), for ``weeks`` weeks
    before ``until``."""
    start = until - weeks * WEEK
    first_day = start - start % DAY
    return [
        moment
        for day in range(weeks * 7 + 1)
        for n in range(per_day)
        for moment in [first_day + day * DAY + hour * HOUR + 60 + n * 120]
        if start <= moment < until
    ]


# --- the estimator --------------------------------------------------------------------


def test_the_hour_of_the_week_counts_from_monday_midnight_utc() -> None:
    assert schedule.slot(MONDAY) == 0
    assert schedule.slot(MONDAY + 8 * HOUR + 59 * 60) == 8
    assert schedule.slot(MONDAY + WEEK - 1) == 167
    assert schedule.slot(MONDAY + WEEK) == 0


def test_a_short_history_says_nothing() -> None:
    now = MONDAY + 4 * WEEK
    steady = [now - n * HOUR for n in range(1, 24 * 10)]  # one an hour for 10 days
    assert schedule.hourly_rates(by_hour(steady), now) is not None
    too_few = steady[:: 24 * 2][: schedule.MIN_STORIES - 1]
    assert schedule.hourly_rates(by_hour(too_few), now) is None
    six_days = [t for t in steady if t > now - 6 * DAY]
    assert schedule.hourly_rates(by_hour(six_days), now) is None
    assert schedule.cadence(by_hour(six_days), now=now, listed=11, ttl=600) == Cadence(11)
    due = schedule.due(now, Cadence(11), 0, POLICY)
    assert (due.at, due.why) == (now + 600, "ttl: history too short")


def test_a_steady_source_has_its_rate_in_every_hour() -> None:
    now = MONDAY + 4 * WEEK
    steady = [now - 900 - n * HOUR / 2 for n in range(2 * 24 * 21)]  # two an hour, 3 weeks
    rates = schedule.hourly_rates(by_hour(steady), now)
    assert rates is not None
    assert all(1.9 < rate < 2.1 for rate in rates)


def test_history_older_than_the_window_is_not_read() -> None:
    now = MONDAY + 10 * WEEK
    recent = [now - n * HOUR for n in range(1, 24 * 14)]  # one an hour, two weeks
    ancient = [now - schedule.WINDOW - n * 60 for n in range(1, 5000)]  # a flood, long ago
    rates = schedule.hourly_rates(by_hour(recent + ancient), now)
    assert rates is not None and max(rates) < 1.1


def test_a_burst_is_its_hour_smoothed_with_its_neighbours_and_the_mean() -> None:
    now = MONDAY + 3 * WEEK
    history = bursts(weeks=3, hour=8, per_day=10, until=now)  # 10 a day at 08:00
    rates = schedule.hourly_rates(by_hour(history), now)
    assert rates is not None
    mean = len(history) / (3 * 7 * 24)
    weight = schedule.MEAN_WEIGHT
    assert rates[8] == pytest.approx((1 - weight) * 10 * 2 / 4 + weight * mean, rel=0.02)
    assert rates[7] == rates[9] == pytest.approx((1 - weight) * 10 / 4 + weight * mean, rel=0.02)
    assert rates[3] == pytest.approx(weight * mean, rel=0.02), "quiet, never silent"
    assert rates[8 + 24] == pytest.approx(rates[8], rel=0.05), "every day of the week"


def test_the_busy_hour_is_refreshed_sooner_and_the_quiet_one_at_the_ttl() -> None:
    now = MONDAY + 3 * WEEK
    history = bursts(weeks=3, hour=8, per_day=30, until=now)
    busy = schedule.cadence(by_hour(history), now=now + 8 * HOUR, listed=11, ttl=1800)
    assert busy.interval is not None and busy.rate is not None
    assert busy.interval < 1800
    # Expected stories before the next refresh: one (less than a third of the listing).
    assert busy.rate * busy.interval / HOUR == pytest.approx(1)
    quiet = schedule.cadence(by_hour(history), now=now + 20 * HOUR, listed=11, ttl=1800)
    assert quiet.interval == 1800 and quiet.rate is not None and quiet.rate < 1
    assert schedule.due(now, quiet, 0, Policy(1800)).why == (
        f"ttl: {quiet.rate:.1f} stories/h expected, 11 listed"
    )


def test_the_look_ahead_sees_a_busy_hour_coming() -> None:
    now = MONDAY + 3 * WEEK
    history = bursts(weeks=3, hour=8, per_day=30, until=now)
    before = now + 6 * HOUR + 50 * 60  # 06:50: quiet now, busy from 07:00
    ahead = schedule.cadence(by_hour(history), now=before, listed=11, ttl=3 * HOUR)
    assert ahead.interval is not None
    # 10 minutes at 06:00's rate, then 07:00's: a quarter of an hour or so.
    assert 15 * 60 < ahead.interval < 25 * 60, "refreshed early in the busy hours"
    flat = schedule.cadence(by_hour(history), now=now + 20 * HOUR, listed=11, ttl=3 * HOUR)
    assert flat.interval == 3 * HOUR


def test_one_story_ahead_or_a_third_of_a_small_listing() -> None:
    now = MONDAY + 3 * WEEK + 8 * HOUR
    history = by_hour(bursts(weeks=3, hour=8, per_day=30, until=now))
    intervals = {
        listed: schedule.cadence(history, now=now, listed=listed, ttl=HOUR).interval
        for listed in (2, 3, 11, 30)
    }
    assert intervals[11] == intervals[30] == intervals[3], "one story ahead"
    assert intervals[2] == pytest.approx(intervals[3] * 2 / 3), "two thirds of a story"


# --- the bounds, the gap rule, the back-off ---------------------------------------------


@pytest.mark.parametrize(
    ("interval", "rate", "expected", "why"),
    [
        (300.0, 14.7, 300.0, "rate: 14.7 stories/h expected, 11 listed"),
        (10.0, 400.0, 60.0, "min-refresh floor: 400.0 stories/h expected, 11 listed"),
        (600.0, 0.4, 600.0, "ttl: 0.4 stories/h expected, 11 listed"),
    ],
)
def test_a_cadence_is_clamped_between_the_floor_and_the_ttl(
    interval: float, rate: float, expected: float, why: str
) -> None:
    due = schedule.due(1000.0, Cadence(11, interval, rate), 0, POLICY)
    assert (due.at, due.why) == (1000.0 + expected, why)


def test_a_floor_above_the_ttl_is_the_ttl() -> None:
    policy = Policy(ttl=30, min_refresh=60)
    assert schedule.due(0.0, Cadence(11, 5.0, 99.0), 0, policy).at == 30
    assert schedule.due(0.0, None, 4, policy).at == 30


def test_a_category_never_refreshed_is_due() -> None:
    due = schedule.due(None, None, 0, POLICY)
    assert due.at < 0 and due.why == "never refreshed"


@pytest.mark.parametrize(
    ("gaps", "cadence", "expected", "why"),
    [
        (1, None, 300.0, "gap: 1 in a row"),
        (2, Cadence(11, 400.0, 8.0), 150.0, "gap: 2 in a row"),
        (1, Cadence(11, 200.0, 16.0), 200.0, "rate: 16.0 stories/h expected, 11 listed"),
        (6, None, 60.0, "gap: 6 in a row"),  # halved down to the floor, never below
        (0, None, 600.0, "ttl: history too short"),
    ],
)
def test_in_a_gap_the_earliest_rule_wins(
    gaps: int, cadence: Cadence | None, expected: float, why: str
) -> None:
    due = schedule.due(0.0, cadence, gaps, POLICY)
    assert (due.at, due.why) == (expected, why)


def test_the_back_off_puts_the_refresh_off_until_its_retry() -> None:
    scheduled = Due(1000.0, schedule.RATE, Cadence(11, 400.0, 9.0))
    later = schedule.next_refresh(scheduled, 1500.0, 3, now=900.0)
    assert (later.at, later.why) == (1500.0, "back-off: 3 failures in a row")
    assert schedule.next_refresh(scheduled, 950.0, 1, now=900.0) == scheduled
    assert schedule.next_refresh(scheduled, 1500.0, 0, now=1600.0) == scheduled, "over"
    assert schedule.next_refresh(scheduled, None, 0, now=900.0) == scheduled
    assert schedule.backing_off(1500.0, 900.0) and not schedule.backing_off(None, 900.0)


@given(
    offsets=st.lists(st.floats(0, 6 * WEEK), min_size=0, max_size=400),
    at=st.floats(0, WEEK),
    listed=st.integers(0, 60),
    ttl=st.integers(1, 7200),
    min_refresh=st.integers(1, 3600),
    gaps=st.integers(0, 12),
)
def test_the_next_refresh_is_always_within_the_floor_and_the_ttl(
    offsets: list[float], at: float, listed: int, ttl: int, min_refresh: int, gaps: int
) -> None:
    now = MONDAY + 6 * WEEK + at
    cadence = schedule.cadence(by_hour(now - o for o in offsets), now=now, listed=listed, ttl=ttl)
    policy = Policy(ttl, min_refresh)
    interval = schedule.due(now, cadence, gaps, policy).at - now
    assert policy.floor - 1e-6 <= interval <= ttl + 1e-6


# --- through the app --------------------------------------------------------------------


def history_items(timestamps: list[float]) -> tuple[Item, ...]:
    return tuple(
        Item(
            key=ArticleKey(int(t), str(200_000_000 + n)),
            title=f"Earlier story {n}",
            path=f"/newstream/{int(t)}-{200_000_000 + n}/earlier-{n}/",
            source="Voice of Korea (EN)",
        )
        for n, t in enumerate(sorted(timestamps, reverse=True))
    )


def test_a_bursty_category_is_refreshed_sooner_at_its_busy_hour(
    make_app: Callable[..., Flask], site: FakeSite, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 3600
    app = make_app(cache_ttl=ttl)
    service: FeedService = app.extensions["feedbridge"]
    vok = service.registry["vok-en"]
    busy_hour = datetime.fromtimestamp(clock.now, UTC).hour  # the test starts in it
    history = bursts(weeks=3, hour=busy_hour, per_day=30, until=clock.now - HOUR)
    service.store.merge("vok-en", Listing(history_items(history)), now=clock.now - HOUR)
    client = app.test_client()

    # At the busy hour: refreshed well before the TTL, and readers are told so.
    clock.now -= clock.now % HOUR - 60  # a minute into the hour
    service.refresh(vok, force=True)  # also a gap (none of the history listed): its rule is later
    status = client.get("/status").json["categories"]["vok-en"]
    assert status["next_refresh_why"].startswith("rate: ")
    assert status["next_refresh_why"].endswith(" stories/h expected, 11 listed")
    interval = status["next_refresh_in_s"]
    assert 60 <= interval < ttl / 2
    max_age = client.get("/feeds/vok-en.atom").headers["Cache-Control"]
    assert max_age in (f"public, max-age={interval}", f"public, max-age={interval - 1}")
    estimates = []
    read_history = service.store.published_hours
    monkeypatch.setattr(
        service.store,
        "published_hours",
        lambda *a, **k: estimates.append(1) or read_history(*a, **k),
    )
    for _ in range(20):
        client.get("/feeds/vok-en.atom")
    assert estimates == [], "readers never estimate: refreshes do"
    # The listing's own fetches (the gap's repair reads the archive meanwhile).
    fetches = site.hits(vok.paths[0])
    clock.advance(interval - 1)
    client.get("/feeds/vok-en.atom")
    service.drain(timeout=10)
    assert site.hits(vok.paths[0]) == fetches, "not due yet"
    clock.advance(2)
    assert client.get("/feeds/vok-en.atom").headers["X-Cache"] == "stale"
    service.drain(timeout=10)
    assert site.hits(vok.paths[0]) == fetches + 1, "refreshed sooner than the TTL"
    assert estimates == [1], "once per refresh"

    # Twelve hours on, nothing is published at that hour: the TTL.
    clock.advance(12 * HOUR)
    service.refresh(vok, force=True)
    status = client.get("/status").json["categories"]["vok-en"]
    assert status["next_refresh_in_s"] == ttl
    assert status["next_refresh_why"].startswith("ttl: ")
    assert status["next_refresh_why"].endswith(" stories/h expected, 11 listed")


# --- the gaps benchmark, test-sized -----------------------------------------------------


def test_two_days_of_bursts_lose_nothing_with_the_schedule_and_repair() -> None:
    fixed, scheduled = gaps.replay(2, 8, seed=1, ways=(gaps.WAYS[0], gaps.WAYS[2]))
    assert fixed.lost > 0, "the bursts outrun fixed polling: the replay has gaps to close"
    assert scheduled.walks > 0
    assert scheduled.lost == 0
    assert scheduled.requests_per_day <= 1.2 * fixed.requests_per_day
    # Never refreshed less often than fixed polling: no story waits past the TTL, but
    # for the walk (its pages and articles, a second each) when it was found by one.
    assert max(scheduled.delays) <= gaps.TTL + gaps.REPAIR_PAGES + 60
    assert scheduled.delay(0.95) <= gaps.TTL
    assert scheduled.delay(0.5) <= min(5 * 60, fixed.delay(0.5) / 2), "sooner when busy"
