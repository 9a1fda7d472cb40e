"""What the story store means, apart from where it keeps it: one set of rules that
every backend applies, so that SQLite and Redis cannot drift.

Pure: no I/O. A backend reads what a rule needs, asks the rule, and writes what it says
in one transaction.

* **Merging** a listing into stored stories (:func:`plan_merge`): which stories to
  write, which are new to the category, which changed.
* **Versions** (:class:`Versions`): a category's version changes when a story joins it,
  when one of its stories changes (its listing was revised, its full text was saved),
  and when stories leave it (prune).
* **Full text** (:func:`wants_full_text`, :func:`with_full_text`, :func:`next_try`,
  :func:`is_due`): which stories still want theirs, when they are due again, and what
  saving it changes of the story stored at that moment (nothing the listing said).
* **Failures** (:func:`resolution`) and **gaps** (:func:`next_gap`, :func:`merge_result`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from feedbridge.model import ArticleKey, Item
from feedbridge.store import CategoryState, Failure, Gap, Merged

# Seconds: the first retry of an article that could not be read, and the longest wait.
FULL_TEXT_RETRY = (300.0, 86_400.0)


@dataclass
class MergePlan:
    """What merging a listing into stored stories comes to; computed the same way by
    every backend, from the stored versions of the listed stories."""

    writes: list[Item] = field(default_factory=list)  # new or changed stories
    added: list[ArticleKey] = field(default_factory=list)  # new to the category
    updated: int = 0


def plan_merge(
    listed: Sequence[Item], stored: dict[ArticleKey, Item], members: set[ArticleKey], now: datetime
) -> MergePlan:
    """Which of ``listed`` to write: new stories as they are; known ones when what the
    site lists of them changed (their full text kept; marked modified ``now`` when what
    they said changed, not when something they lacked was filled in).

    Listings do not all say everything (the home page names no source): what one leaves
    out is kept from before, so two listings of one story never undo each other.
    """
    plan = MergePlan()
    for item in listed:
        old = stored.get(item.key)
        if old is None:
            plan.writes.append(item)
        else:
            combined = replace(
                old,
                title=item.title,
                path=item.path,
                excerpt=item.excerpt or old.excerpt,
                listed=item.listed or old.listed,
                thumbnail=item.thumbnail or old.thumbnail,
                source=item.source or old.source,
            )
            if combined != old:
                # Filling in what was missing is no change of the story; changing what
                # it said is.
                revised = any(
                    getattr(old, name) and getattr(combined, name) != getattr(old, name)
                    for name in ("title", "excerpt", "thumbnail", "source", "listed")
                )
                plan.writes.append(replace(combined, modified=now) if revised else combined)
                plan.updated += 1
        if item.key not in members:
            plan.added.append(item.key)
    return plan


@dataclass(frozen=True, slots=True)
class Versions:
    """Whose versions a change moves: the category's own, and every category that lists
    one of ``stories``."""

    category: bool = False
    stories: tuple[ArticleKey, ...] = ()

    @classmethod
    def of_merge(cls, plan: MergePlan, stored: dict[ArticleKey, Item]) -> Versions:
        """New members change the category; a changed story changes all that list it."""
        changed = tuple(item.key for item in plan.writes if item.key in stored)
        return cls(category=bool(plan.added), stories=changed)

    @classmethod
    def of_full_text(cls, key: ArticleKey) -> Versions:
        return cls(stories=(key,))

    @classmethod
    def of_prune(cls, dropped: int) -> Versions:
        return cls(category=dropped > 0)


def wants_full_text(item: Item) -> bool:
    """A story is pending until its full text is saved."""
    return item.content_html is None


def is_due(retry_at: float, now: float) -> bool:
    """A pending story is asked for when its next try has come (0: never tried)."""
    return retry_at <= now


def next_try(attempts: int, now: float) -> float:
    """When to ask again for an article read in vain ``attempts`` times before: later
    each time, doubling from :data:`FULL_TEXT_RETRY`'s first wait up to its cap."""
    first, cap = FULL_TEXT_RETRY
    return now + min(cap, first * 2.0 ** min(attempts, 32))


def with_full_text(stored: Item, read: Item) -> Item:
    """The story as stored now, patched with what reading its article gave: the full
    text, the original's address, the article's date when no listing gave one, and
    ``read.modified`` (readers see it updated). Whatever a listing changed since the
    article was asked for (a corrected title) stays."""
    return replace(
        stored,
        content_html=read.content_html,
        original_url=read.original_url,
        listed=stored.listed or read.listed,
        modified=read.modified or stored.modified,
    )


def resolution(failure: Failure | None) -> Failure | None:
    """What a success leaves of the last failure: no more back-off, but what went wrong
    last, and when (for ``/status``). None when there is nothing to write."""
    if failure is None or failure.count == 0:
        return None
    return Failure(0, failure.error, failure.at, 0.0)


def next_gap(previous: CategoryState, overlap: bool, now: float) -> Gap | None:
    """The category's gap record after a refresh that did (or did not) ``overlap``.

    A refresh of a category that kept nothing yet cannot be a gap.
    """
    if overlap or previous.stories == 0:
        if previous.gap is None or previous.gap.in_a_row == 0:
            return previous.gap
        return Gap(previous.gap.at, previous.gap.since_previous, 0)
    since = now - previous.refreshed_at if previous.refreshed_at is not None else None
    in_a_row = previous.gap.in_a_row + 1 if previous.gap is not None else 1
    return Gap(now, since, in_a_row)


def merge_result(plan: MergePlan, gap: Gap | None, now: float) -> Merged:
    """What a merge tells its caller; ``gap`` is the category's record after it, a gap of
    this refresh only when it was made ``now``."""
    new = gap is not None and gap.in_a_row > 0 and gap.at == now
    return Merged(tuple(plan.added), gap if new else None)
