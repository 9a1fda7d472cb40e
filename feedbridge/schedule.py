"""When a category is due: its cadence, the gap rule, the back-off. Pure: no I/O.

A category is refreshed as often as its source publishes. Every story's URL carries the
time KCNA Watch ingested it, so the stories kept show each source's rhythm; at each
refresh, :func:`cadence` turns the category's recent history into the time until its next
refresh, and the store keeps that with the category's state (readers never recompute it).

**The estimator**, written down:

1. *History*: how many of the category's stories were published in each hour of the last
   :data:`WINDOW` (4 weeks; the store counts them: at most 672 numbers). It *covers* the
   time from the hour of its oldest story to now.
2. *Too short*: under :data:`MIN_STORIES` stories, or covering less than
   :data:`MIN_COVERAGE` (a week, so that every hour of the week was seen at least once),
   the cadence is the TTL.
3. *Rate of each hour of the week* (168 slots, UTC, Monday 00:00 first): the stories
   published in that slot, divided by the number of times that hour occurred in the
   covered time (counted in whole hours back from now): stories per hour.
4. *Smoothed*: each slot's rate is ¼ of each neighbour's plus ½ of its own (bursts a few
   minutes either side of an hour boundary count for both), then blended with the
   overall mean (stories over the covered hours) by :data:`MEAN_WEIGHT` (a fifth), so that
   a slot quiet so far is never taken for silent.
5. *Look ahead*: from now, hour slot by hour slot, the expected number of new stories is
   the sum of rate × time; the next refresh comes when it would reach one story, or a
   third of the listing's size (what the category's last listing held: ~11 for a
   source, ~30 for the home page) if that is less, or at the TTL if that comes first.
   A third of the listing keeps a refresh from being outrun by what it expects; one
   story makes a reader wait about as long as the source's own pace, not half a TTL,
   at busy hours (``bench/gaps.py`` measures what each costs: docs/contributing.md).

The interval is then clamped: never shorter than ``FEEDBRIDGE_MIN_REFRESH``, never longer
than the TTL. A category in a gap is refreshed twice as often for each gap in a row (down
to the same floor); the earliest of the two rules wins. A category backing off after
failures is not refreshed before its retry time, whatever else says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOUR = 3600.0
WEEK_HOURS = 168
WINDOW = 28 * 86_400.0  # seconds of history the estimate reads
MIN_STORIES = 20  # fewer kept stories in the window: the TTL
MIN_COVERAGE = 7 * 86_400.0  # history covering less: the TTL
MEAN_WEIGHT = 0.2  # share of the overall mean in a slot's rate
SHARE_OF_LISTING = 1 / 3  # of the listing: new stories expected before the next refresh
STORIES_AHEAD = 1.0  # and at most this many
# The rules a refresh is due by.
NEVER = "never refreshed"
SHORT = "ttl: history too short"
TTL = "ttl"
RATE = "rate"
FLOOR = "min-refresh floor"
GAP = "gap"
BACK_OFF = "back-off"
# 1 January 1970 was a Thursday: hours to add to count the week from Monday 00:00 UTC.
_MONDAY = 3 * 24


@dataclass(frozen=True, slots=True)
class Policy:
    """The bounds of every cadence (seconds): the TTL and ``FEEDBRIDGE_MIN_REFRESH``."""

    ttl: float
    min_refresh: float = 60.0

    @property
    def floor(self) -> float:
        """The shortest interval; the TTL if that is shorter still."""
        return min(self.ttl, self.min_refresh)


@dataclass(frozen=True, slots=True)
class Cadence:
    """What a category's history says at a refresh, kept with its state.

    ``interval`` is the time until one new story, or a third of ``listed`` if that is
    less, is expected (at most the TTL it was computed with), ``rate`` the stories per
    hour expected over it; both None when the history is too short to say.
    """

    listed: int
    interval: float | None = None
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """When a category's next refresh is due, and by which rule (said in words by
    :attr:`why`, for ``/status`` only: the hot path reads :attr:`at`)."""

    at: float  # wall-clock seconds; -inf for a category never refreshed
    rule: str  # never refreshed, ttl: history too short, ttl, rate, min-refresh floor, gap…
    cadence: Cadence | None = None
    in_a_row: int = 0  # gaps, or failures

    @property
    def why(self) -> str:
        if self.rule == GAP:
            return f"gap: {self.in_a_row} in a row"
        if self.rule == BACK_OFF:
            plural = "" if self.in_a_row == 1 else "s"
            return f"back-off: {self.in_a_row} failure{plural} in a row"
        if self.cadence is not None and self.cadence.rate is not None:
            rate, listed = self.cadence.rate, self.cadence.listed
            return f"{self.rule}: {rate:.1f} stories/h expected, {listed} listed"
        return self.rule


def slot(timestamp: float) -> int:
    """The hour of the week of ``timestamp`` (UTC): 0 is Monday 00:00–01:00."""
    return (int(timestamp // HOUR) + _MONDAY) % WEEK_HOURS


def by_hour(timestamps: Iterable[float]) -> dict[int, int]:
    """How many of ``timestamps`` fall in each hour (hours since the epoch, UTC)."""
    return dict(Counter(int(t // HOUR) for t in timestamps))


def hourly_rates(history: Mapping[int, int], now: float) -> list[float] | None:
    """The expected stories per hour in each hour of the week (steps 1–4 above), from the
    stories published in each hour (:func:`by_hour`), or None while the history is too
    short to say."""
    window = {h: n for h, n in history.items() if now - WINDOW <= h * HOUR <= now and n > 0}
    total = sum(window.values())
    if total < MIN_STORIES:
        return None
    covered = now - min(window) * HOUR  # from the start of its oldest story's hour
    if covered < MIN_COVERAGE:
        return None
    hours, this_hour = int(covered // HOUR), int(now // HOUR) + _MONDAY
    exposure = [hours // WEEK_HOURS] * WEEK_HOURS
    for back in range(1, hours % WEEK_HOURS + 1):  # the last partial week: once more
        exposure[(this_hour - back) % WEEK_HOURS] += 1  # the slot() of now - back hours
    counts = [0] * WEEK_HOURS
    for hour, count in window.items():
        counts[(hour + _MONDAY) % WEEK_HOURS] += count  # the slot() of that hour
    raw = [count / seen for count, seen in zip(counts, exposure, strict=True)]
    mean = total / (covered / HOUR)
    return [
        (1 - MEAN_WEIGHT) * (raw[s - 1] + 2 * raw[s] + raw[(s + 1) % WEEK_HOURS]) / 4
        + MEAN_WEIGHT * mean
        for s in range(WEEK_HOURS)
    ]


def cadence(history: Mapping[int, int], *, now: float, listed: int, ttl: float) -> Cadence:
    """The cadence of a category refreshed ``now`` whose listing held ``listed`` stories,
    from its stories published in each hour (:func:`by_hour`; step 5 above)."""
    rates = hourly_rates(history, now)
    if rates is None or listed <= 0:
        return Cadence(listed)
    target = min(listed * SHARE_OF_LISTING, STORIES_AHEAD)
    expected, elapsed = 0.0, 0.0
    while elapsed < ttl:
        moment = now + elapsed
        rate = rates[slot(moment)]
        step = min(HOUR - moment % HOUR, ttl - elapsed)  # to the end of this hour slot
        if expected + rate * step / HOUR >= target:
            elapsed += (target - expected) / rate * HOUR
            return Cadence(listed, elapsed, target / (elapsed / HOUR))
        expected += rate * step / HOUR
        elapsed += step
    return Cadence(listed, ttl, expected / (ttl / HOUR))


def gap_interval(gaps_in_a_row: int, policy: Policy) -> float | None:
    """A category in a gap: the TTL halved for each gap in a row, down to the floor."""
    if gaps_in_a_row <= 0:
        return None
    return max(policy.floor, policy.ttl / 2.0**gaps_in_a_row)


def due(
    refreshed_at: float | None,
    cadence: Cadence | None,
    gaps_in_a_row: int,
    policy: Policy,
) -> Due:
    """When the next refresh is due, back-off aside: the earliest of the cadence and the
    gap rule, within the floor and the TTL."""
    if refreshed_at is None:
        return Due(float("-inf"), NEVER)
    interval, rule = policy.ttl, TTL
    if cadence is None or cadence.interval is None:
        rule = SHORT
    elif cadence.interval < policy.ttl:
        interval = max(policy.floor, cadence.interval)
        rule = FLOOR if cadence.interval < policy.floor else RATE
    in_gap = gap_interval(gaps_in_a_row, policy)
    if in_gap is not None and in_gap < interval:
        return Due(refreshed_at + in_gap, GAP, cadence, gaps_in_a_row)
    return Due(refreshed_at + interval, rule, cadence)


def backing_off(retry_at: float | None, now: float) -> bool:
    """Whether a category's failures keep it from the site ``now``."""
    return retry_at is not None and now < retry_at


def next_refresh(scheduled: Due, retry_at: float | None, failures: int, now: float) -> Due:
    """``scheduled``, or later: the back-off's retry time when that is later."""
    if backing_off(retry_at, now) and retry_at is not None and retry_at > scheduled.at:
        return Due(retry_at, BACK_OFF, in_a_row=failures)
    return scheduled
