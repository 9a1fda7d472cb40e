"""The operator's view: ``/status`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from feedbridge import __version__
from feedbridge.cache import Inspection
from feedbridge.errors import ConfigError
from feedbridge.web import bridge

bp = Blueprint("ops", __name__)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


@bp.get("/status")
def status() -> Response:
    """What the cache holds for every category, read without asking the site anything."""
    cache = bridge().cache
    categories = {
        category.slug: _category(cache.inspect(category.slug))
        for category in bridge().registry.values()
    }
    # After the reads above, which tell whether the store answers now.
    response = jsonify(version=__version__, cache=cache.store.describe(), categories=categories)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text; under gunicorn, the sum over every worker of the server."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def check_metrics_dir() -> None:
    """Stop start-up with one line when the multi-process metrics have nowhere to go."""
    path = os.environ.get(MULTIPROC_DIR)
    if path and not os.path.isdir(path):
        raise ConfigError(f"{MULTIPROC_DIR}: no such directory (got {path!r})")


def _category(seen: Inspection) -> dict[str, object]:
    entry, failure = seen.entry, seen.failure
    return {
        "last_refresh": _when(entry.fetched_at) if entry else None,
        "items": len(entry.items) if entry else 0,
        "newest_item": (
            max(item.published for item in entry.items).isoformat()
            if entry and entry.items
            else None
        ),
        "stale": seen.stale,
        "last_error": (
            {
                "message": str(failure.error),
                "kind": failure.error.kind,
                "at": _when(failure.at),
                "failures_in_a_row": failure.count,
            }
            if failure
            else None
        ),
        "backing_off_until": _when(seen.backing_off_until) if seen.backing_off_until else None,
    }


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
