"""What ``/status`` says: what is kept for every category, the site's pause and the
archive's open gaps, read without asking the site anything."""

from __future__ import annotations

from feedbridge.bridge import FeedService
from feedbridge.categories import Category
from feedbridge.refresh import backing_off, due_in, next_refresh
from feedbridge.store import StoreError, iso_seconds


def report(service: FeedService) -> dict[str, object]:
    """What is kept for every category, read without asking the site anything."""
    categories = {}
    for category in service.registry.values():
        try:
            categories[category.slug] = _category(service, category)
        except StoreError:
            categories[category.slug] = {"store": "unavailable"}
    paused = service.upstream.pause.paused_for()
    site = {"paused_until": _when(service.clock() + paused) if paused > 0 else None}
    try:
        gaps: object = [
            {"category": gap.category, "since": _when(gap.since), "why": gap.why,
             "found": gap.found}
            for gap in service.archive.gaps()
        ]  # fmt: skip
    except StoreError:
        gaps = "unavailable"
    return {
        "store": service.store.describe(), "site": site, "open_gaps": gaps,
        "categories": categories,
    }  # fmt: skip


def _category(service: FeedService, category: Category) -> dict[str, object]:
    state = service.store.state(category.slug)
    now = service.clock()
    newest = service.store.newest(category.slug, 1)
    failure, gap = state.failure, state.gap
    following = next_refresh(state, service.policy, now)
    return {
        "last_refresh": _when(state.refreshed_at),
        "stories": state.stories,
        "newest_item": newest[0].published.isoformat() if newest else None,
        "stale": state.seen and due_in(state, service.policy, now) <= 0,
        "next_refresh_at": _when(max(now, following.at)),
        "next_refresh_in_s": round(max(0.0, following.at - now)),
        "next_refresh_why": following.why,
        "last_error": (
            {
                "kind": failure.error.kind,
                "status": failure.error.upstream_status,
                "at": _when(failure.at),
                "failures_in_a_row": failure.count,
            }
            if failure
            else None
        ),
        "backing_off_until": (
            _when(failure.retry_at) if failure and backing_off(state, now) else None
        ),
        "last_gap": (
            {
                "at": _when(gap.at),
                "since_previous_refresh_s": round(gap.since_previous or 0),
                "ongoing": gap.in_a_row > 0,
            }
            if gap
            else None
        ),
    }


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return iso_seconds(timestamp)
