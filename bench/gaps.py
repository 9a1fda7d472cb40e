"""Gaps: a simulated week of publishing, fixed polling against the schedule plus repair.

    python3 -m bench.gaps [--days 7] [--history-days 21] [--seed 1]

The site publishes ~250 stories a day across its sources, many in bursts (the profiles
in :data:`PROFILES`: KCNA.kp 30 a day in two morning batches, Voice of Korea 10 a day,
Pyongyang Times a dozen at once, …); a source's listing shows its 11 newest, the home page
(``all``) its 30 newest, the archive every story, 20 to a page. Time is simulated (an
injected clock, no sleeping): a week replays in seconds.

Three ways of refreshing the eight built-in categories are replayed on the same stories:

* **fixed**: every category every 10 minutes (the TTL), nothing else;
* **schedule**: :mod:`feedbridge.schedule` as the bridge uses it (the cadence estimated at
  each refresh from the store's hourly counts, the gap rule, the floor and the TTL), no
  repair;
* **schedule + repair**: the same, and a refresh that finds a gap walks the archive.

What is real: the story store (:class:`~feedbridge.sqlite_store.SQLiteStore`, its merge,
gap detection, pruning and hourly counts) and the schedule (the calls the bridge makes). What
is modelled: the site (lists of stories, no HTML) and the repair walk, explicitly
(:meth:`Replay.walk`): the archive is read from page 1 until a page reaches back past the
newest story the category kept before the gap (at most ``REPAIR_PAGES`` pages); each story
of that span the store lacks costs its article page (where its source is; read for full
text anyway); the span's stories of the category are merged with its listing, which
closes the gap. A walk files into the category whose gap started it: another category's
gap in the same span is walked again (more archive reads than one walk for all would
cost). A listing with no new story and no gap open is a 304 (``touch``), as a site that
honours validators answers; pruning runs once a simulated day per category, not at every
refresh as in the bridge (it is the slowest statement, and the history stays bounded).

Counted as requests to the site: listings, archive pages and article pages (one per story
the store learns, whether from a listing or a walk). Each request takes the site's
minimum interval (1 s) of simulated time. Delay: from a story's publication (its URL
timestamp) to its merge into each of its feeds (its source's and ``all``). Lost: a story's
membership in a feed that never happened. The store starts with ``--history-days`` of
history (as after ``feedbridge backfill``), so that the schedule has a rhythm to read.
"""

from __future__ import annotations

import argparse
import bisect
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from feedbridge import schedule
from feedbridge.categories import load_registry
from feedbridge.model import ArticleKey, Item
from feedbridge.sqlite_store import SQLiteStore
from feedbridge.store import Listing, Retention

HOUR = 3600.0
DAY = 86_400.0
KST = 9 * HOUR  # Pyongyang: the sources publish in its day
START = 1_780_272_000.0  # Monday 1 June 2026, 00:00 UTC
TTL = 600.0
MIN_REFRESH = 60.0
SOURCE_LISTING = 11
HOME_LISTING = 30
ARCHIVE_PAGE = 20  # unknown on the real site: a walk reads what a page holds
REPAIR_PAGES = 10
REQUEST = 1.0  # seconds a request takes: the site's minimum interval


@dataclass(frozen=True)
class Profile:
    """A source: ``batches`` are (hour in Pyongyang, stories, minutes they spread over);
    ``spread`` stories more come one by one in Pyongyang's day (06:00–22:00)."""

    label: str
    slug: str | None  # None: a source without a category of its own (in ``all`` only)
    batches: tuple[tuple[float, int, float], ...] = ()
    spread: int = 0


PROFILES: tuple[Profile, ...] = (
    Profile("KCNA.kp (En)", "kcna-kp-en", batches=((8, 15, 6), (10.5, 15, 6))),
    Profile("Voice of Korea (EN)", "vok-en", spread=10),
    Profile("KCNA.co.jp (En)", "kcna-co-jp-en", batches=((7, 6, 10), (15, 6, 10)), spread=12),
    Profile("Pyongyang Times", "pyongyang-times", batches=((11, 12, 3),)),
    Profile("Naenara (En)", "naenara-en", spread=8),
    Profile("Rodong Sinmun (En)", "rodong-sinmun-en", batches=((6, 10, 5), (13, 8, 5))),
    Profile("Minju Choson (EN)", "minju-choson-en", spread=10),
    # The other ~70 outlets, seen on the home page only.
    Profile("Others", None, batches=((5, 20, 20), (9, 25, 15), (17, 20, 20)), spread=70),
)


@dataclass(frozen=True, slots=True)
class Story:
    ts: int
    key: ArticleKey
    profile: Profile

    def item(self) -> Item:
        return Item(
            key=self.key,
            title=f"Story {self.key}",
            path=f"/newstream/{self.key}/story/",
            source=self.profile.label,
        )

    @property
    def feeds(self) -> tuple[str, ...]:
        return ("all",) if self.profile.slug is None else (self.profile.slug, "all")


def publish(first_day: float, days: int, rng: random.Random) -> list[Story]:
    """Every story of ``days`` days from ``first_day`` (00:00 UTC), oldest first."""
    moments: list[tuple[float, Profile]] = []
    for day in range(days):
        morning = first_day + day * DAY - KST  # 00:00 in Pyongyang
        for profile in PROFILES:
            for hour, count, minutes in profile.batches:
                begin = morning + hour * HOUR + rng.uniform(-10, 10) * 60
                n = max(1, count + rng.randint(-2, 2))
                moments += [(begin + rng.uniform(0, minutes * 60), profile) for _ in range(n)]
            moments += [
                (morning + rng.uniform(6, 22) * HOUR, profile)
                for _ in range(max(0, profile.spread + rng.randint(-2, 2)))
            ]
    moments.sort(key=lambda pair: pair[0])
    return [
        Story(int(t), ArticleKey(int(t), str(300_000_000 + rng.randrange(600_000_000))), p)
        for t, p in moments
    ]


class Site:
    """What the site shows at a given time: listings, the home page, the archive."""

    def __init__(self, stories: list[Story]) -> None:
        self.stories = stories
        self.times = [s.ts for s in stories]
        self.by_source: dict[str, tuple[list[int], list[Story]]] = {}
        for profile in PROFILES:
            if profile.slug is not None:
                own = [s for s in stories if s.profile is profile]
                self.by_source[profile.slug] = ([s.ts for s in own], own)

    def listing(self, slug: str, now: float) -> list[Story]:
        if slug == "all":
            end = bisect.bisect_right(self.times, now)
            return self.stories[max(0, end - HOME_LISTING) : end][::-1]
        times, own = self.by_source[slug]
        end = bisect.bisect_right(times, now)
        return own[max(0, end - SOURCE_LISTING) : end][::-1]

    def archive(self, page: int, now: float) -> list[Story]:
        """Page ``page`` (from 1) of the all-sources archive: newest first."""
        end = bisect.bisect_right(self.times, now) - (page - 1) * ARCHIVE_PAGE
        return self.stories[max(0, end - ARCHIVE_PAGE) : max(0, end)][::-1]


@dataclass(frozen=True)
class Way:
    name: str
    cadence: bool  # the rate of the history for the hour of the week
    gap_rule: bool  # more often while in a gap
    repair: bool  # walk the archive back past a gap
    ttl: float = TTL


WAYS = (
    Way("fixed 10-min polling", cadence=False, gap_rule=False, repair=False),
    Way("schedule, no repair", cadence=True, gap_rule=True, repair=False),
    Way("schedule + repair", cadence=True, gap_rule=True, repair=True),
    Way("schedule + repair, TTL 1 h", cadence=True, gap_rule=True, repair=True, ttl=HOUR),
)


@dataclass
class Result:
    way: str
    days: float
    expected: int = 0  # memberships of the stories published in the replayed days
    delays: list[float] = field(default_factory=list)
    listings: int = 0
    archive_pages: int = 0
    articles: int = 0
    gaps: int = 0
    walks: int = 0
    walk_pages_max: int = 0
    walks_cut_short: int = 0
    why: Counter[str] = field(default_factory=Counter)  # what each refresh was due by

    @property
    def lost(self) -> int:
        return self.expected - len(self.delays)

    @property
    def requests_per_day(self) -> float:
        return (self.listings + self.archive_pages + self.articles) / self.days

    def delay(self, quantile: float) -> float:
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else 0.0


class Replay:
    """One way of refreshing, replayed against ``site`` with the real store."""

    def __init__(self, way: Way, site: Site, store: SQLiteStore, start: float, end: float) -> None:
        self.way, self.site, self.store = way, site, store
        self.start, self.end = start, end
        self.policy = schedule.Policy(way.ttl, MIN_REFRESH)
        self.slugs = list(load_registry())
        self.known: set[ArticleKey] = set()  # stories in the store
        self.members: dict[str, set[ArticleKey]] = {slug: set() for slug in self.slugs}
        self.newest: dict[str, ArticleKey] = {}  # each category's newest story kept
        self.delivered: dict[tuple[ArticleKey, str], float] = {}
        days = (end - start) / DAY
        self.result = Result(way.name, days)

    def preload(self, history: list[Story]) -> None:
        """The history the store starts with, merged as a backfill would, a day at a time."""
        for slug in self.slugs:
            own = [s for s in history if slug in s.feeds]
            for first in range(0, len(own), 249):  # each chunk overlaps the one before
                chunk = own[first : first + 250]
                items = tuple(s.item() for s in chunk[::-1])
                self.store.merge(slug, Listing(items), now=chunk[-1].ts)
                self.members[slug].update(s.key for s in chunk)
                self.known.update(s.key for s in chunk)
            if own:
                self.newest[slug] = own[-1].key
        for slug in self.slugs:  # staggered, as a refresher's first round is
            self.store.touch(slug, now=self.start - TTL + self.slugs.index(slug) * REQUEST)

    def run(self) -> Result:
        clock = self.start
        finish = self.end + 2 * TTL  # the last stories have time to be seen
        due = {slug: self.due(slug) for slug in self.slugs}
        while True:
            slug = min(self.slugs, key=lambda s: due[s].at)
            clock = max(clock, due[slug].at)
            if clock >= finish:
                break
            if clock >= self.start:
                self.result.why[due[slug].rule.split(":")[0]] += 1
            clock = self.refresh(slug, clock)
            due[slug] = self.due(slug)  # a refresh changes its own category's state only
        for story in self.site.stories:
            if self.start <= story.ts < self.end:
                self.result.expected += len(story.feeds)
                self.result.delays += [
                    self.delivered[(story.key, feed)] - story.ts
                    for feed in story.feeds
                    if (story.key, feed) in self.delivered
                ]
        return self.result

    def due(self, slug: str) -> schedule.Due:
        state = self.store.state(slug)
        cadence = state.cadence if self.way.cadence else None
        gaps = state.gap.in_a_row if self.way.gap_rule and state.gap is not None else 0
        return schedule.due(state.refreshed_at, cadence, gaps, self.policy)

    def refresh(self, slug: str, now: float) -> float:
        """A refresh at ``now`` as the bridge's; returns the time it ends."""
        now += REQUEST
        self.result.listings += 1
        listed = self.site.listing(slug, now)
        newest_before = self.newest.get(slug)
        state = self.store.state(slug)
        if not state.in_gap and all(s.key in self.members[slug] for s in listed):
            self.store.touch(slug, now=now)  # nothing new: as a 304 would
        elif self.merge(slug, listed, now):
            self.result.gaps += 1
            if self.way.repair and newest_before is not None:
                now = self.walk(slug, listed, newest_before, now)
        if now // DAY != (state.refreshed_at or now) // DAY:
            self.store.prune(slug, Retention(), now=now)  # the bridge's at every refresh
        if self.way.cadence:
            history = self.store.published_hours(slug, since=now - schedule.WINDOW)
            cadence = schedule.cadence(history, now=now, listed=len(listed), ttl=self.way.ttl)
            self.store.save_cadence(slug, cadence)
        return now

    def merge(self, slug: str, stories: list[Story], now: float) -> bool:
        """Merge through the store; True when the store says it is a gap."""
        new = [s for s in stories if s.key not in self.known]
        self.result.articles += len(new)  # each read once, for its full text
        self.known.update(s.key for s in new)
        merged = self.store.merge(slug, Listing(tuple(s.item() for s in stories)), now=now)
        for key in merged.added:
            self.members[slug].add(key)
            self.delivered.setdefault((key, slug), now)
            self.newest[slug] = max(key, self.newest.get(slug, key))
        return merged.gap is not None

    def walk(self, slug: str, listed: list[Story], newest_before: ArticleKey, now: float) -> float:
        """Read the archive back past ``newest_before``, and the article page of each
        story of that span the store lacks (its source is only there); merge the span's
        stories of ``slug`` with its listing, which closes the gap. Cut short by the page
        limit, the stories found are merged and the gap stays open. Returns the time the
        walk ends."""
        self.result.walks += 1
        span: list[Story] = []
        reached = False
        for page in range(1, REPAIR_PAGES + 1):
            now += REQUEST
            self.result.archive_pages += 1
            stories = self.site.archive(page, now)
            span += [s for s in stories if s.key > newest_before]
            self.result.walk_pages_max = max(self.result.walk_pages_max, page)
            if not stories or stories[-1].key <= newest_before:
                reached = True
                break
        unknown = {s.key for s in span} - self.known
        now += REQUEST * len(unknown)
        self.result.articles += len(unknown)
        self.known |= unknown
        missing = [s for s in span if slug in s.feeds and s.key not in self.members[slug]]
        if reached:
            self.merge(slug, sorted({*listed, *missing}, key=lambda s: s.key, reverse=True), now)
        else:
            self.result.walks_cut_short += 1
            if missing:
                self.merge(slug, missing, now)  # no overlap: the store keeps the gap open
        return now


def replay(
    days: int, history_days: int, seed: int, ways: tuple[Way, ...] = WAYS
) -> Iterator[Result]:
    rng = random.Random(seed)
    stories = publish(START - history_days * DAY, history_days + days, rng)
    site = Site(stories)
    history = [s for s in stories if s.ts < START]
    end = START + days * DAY
    for way in ways:
        store = SQLiteStore(":memory:")  # the real store, in memory: a replay in seconds
        try:
            run = Replay(way, site, store, START, end)
            run.preload(history)
            yield run.run()
        finally:
            store.close()


def table(results: list[Result]) -> str:
    base = results[0].requests_per_day
    rows = [
        "| | " + " | ".join(r.way for r in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]

    def row(name: str, values: list[str]) -> None:
        rows.append(f"| {name} | " + " | ".join(values) + " |")

    row("stories lost (feed memberships)", [f"{r.lost} of {r.expected}" for r in results])
    row(
        "requests a day: listings + archive + articles",
        [
            f"{r.listings / r.days:.0f} + {r.archive_pages / r.days:.0f} + "
            f"{r.articles / r.days:.0f} = **{r.requests_per_day:.0f}**"
            for r in results
        ],
    )
    row("requests, to fixed polling", [f"{r.requests_per_day / base:.2f}×" for r in results])
    row(
        "delay to the feed: median / p95",
        [f"{r.delay(0.5) / 60:.1f} / {r.delay(0.95) / 60:.1f} min" for r in results],
    )
    row(
        "refreshes due by: rate / floor / gap / TTL",
        [
            " / ".join(str(r.why[name]) for name in ("rate", "min-refresh floor", "gap", "ttl"))
            for r in results
        ],
    )
    row(
        "gaps found; walks (longest, cut short)",
        [f"{r.gaps}; {r.walks} ({r.walk_pages_max} pages, {r.walks_cut_short})" for r in results],
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--history-days", type=int, default=21)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    results = list(replay(args.days, args.history_days, args.seed))
    print(table(results))
    took = time.perf_counter() - started
    print(
        f"\n{args.days} days after {args.history_days} of history, seed {args.seed}: {took:.1f} s"
    )


if __name__ == "__main__":
    main()
