"""The application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask

from feedbridge import web
from feedbridge.bridge import Bridge
from feedbridge.cache import Backoff, FeedCache
from feedbridge.categories import load_registry
from feedbridge.config import Settings
from feedbridge.upstream import Upstream


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
) -> Flask:
    """A feedbridge app. Settings default to the environment; ``clock`` drives the cache.

    Raises :class:`~feedbridge.errors.ConfigError` for a bad setting or categories file.
    """
    settings = settings or Settings.from_env()
    registry = load_registry(settings.categories_file)
    _configure_logging(settings.log_level)
    app = Flask(__name__)
    # Paths are exact: "/feeds//x" is a 404 like any other unknown path, not a redirect.
    app.url_map.merge_slashes = False
    app.config["FEEDBRIDGE"] = settings
    upstream = Upstream(
        settings.upstream_url,
        timeout=settings.timeout,
        max_bytes=settings.max_bytes,
        min_interval=settings.min_interval,
    )
    cache = FeedCache(
        ttl=settings.cache_ttl, stale_ttl=settings.stale_ttl, clock=clock, backoff=backoff
    )
    app.extensions["feedbridge"] = Bridge(registry, upstream=upstream, cache=cache)
    app.register_blueprint(web.bp)
    app.jinja_env.globals["category_feeds"] = web.category_feeds
    return app


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("feedbridge")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
