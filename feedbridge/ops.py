"""The operator's view: ``/status`` (JSON) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from feedbridge import __version__, observe, status
from feedbridge.config import MULTIPROC_DIR
from feedbridge.errors import ConfigError
from feedbridge.web import service

bp = Blueprint("ops", __name__)


@bp.get("/status")
def status_view() -> Response:
    """What is kept for every category, read without asking the site anything."""
    response = jsonify(version=__version__, **status.report(service()))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text; under the Procfile's server, the sum over all its workers (the
    others' served feeds as of their last flush, at most ``observe.TALLY.every`` ago)."""
    observe.TALLY.flush()
    registry = REGISTRY
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # not annotated
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def check_metrics_dir() -> None:
    """Stop start-up with one line when the multi-process metrics have nowhere to go."""
    path = os.environ.get(MULTIPROC_DIR)
    if path and not os.path.isdir(path):
        raise ConfigError(f"{MULTIPROC_DIR}: no such directory (got {path!r})")
