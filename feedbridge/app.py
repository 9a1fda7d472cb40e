"""The application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask

from feedbridge import ops, web
from feedbridge.bridge import Bridge
from feedbridge.cache import Backoff, FeedCache, MemoryStore, Store
from feedbridge.categories import Registry, load_registry
from feedbridge.config import Settings, redis_client_options
from feedbridge.fulltext import FullText
from feedbridge.proxy import ForwardedHeaders
from feedbridge.redis_store import RedisStore
from feedbridge.upstream import Upstream


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
) -> Flask:
    """A feedbridge app. Settings default to the environment.

    ``clock`` (wall-clock seconds) drives the cache's expiry and back-off and the site's
    own Retry-After; tests pass one they move by hand.

    Raises :class:`~feedbridge.errors.ConfigError` for a bad setting or categories file.
    """
    settings = settings or Settings.from_env()
    registry = load_registry(settings.categories_file)
    logging.getLogger("feedbridge").setLevel(settings.log_level)
    ops.check_metrics_dir()
    app = Flask(__name__)
    # Paths are exact: "/feeds//x" is a 404 like any other unknown path, not a redirect.
    app.url_map.merge_slashes = False
    app.config["FEEDBRIDGE"] = settings
    app.wsgi_app = ForwardedHeaders(app.wsgi_app, settings.forwarded_allow_ips)
    store: Store
    if settings.redis_url:
        store = RedisStore(
            settings.redis_url,
            clock=clock,
            local_for=settings.cache_ttl,
            options=redis_client_options(settings.redis_url, verify=settings.redis_tls_verify),
        )
    else:
        store = MemoryStore(clock=clock)
    upstream = Upstream(
        settings.upstream_url,
        timeout=settings.timeout,
        max_bytes=settings.max_bytes,
        min_interval=settings.min_interval,
        clock=clock,
        closure=store if isinstance(store, RedisStore) else None,
    )
    cache = FeedCache(
        ttl=settings.cache_ttl,
        stale_ttl=settings.stale_ttl,
        clock=clock,
        backoff=backoff,
        store=store,
        lock_ttl=lock_ttl(settings, registry),
    )
    fulltext = FullText(
        upstream,
        concurrency=settings.fulltext_concurrency,
        budget=settings.fulltext_budget,
        clock=clock,
    )
    app.extensions["feedbridge"] = Bridge(
        registry,
        upstream=upstream,
        cache=cache,
        fulltext=fulltext,
        fulltext_by_default=settings.fulltext,
    )
    app.register_blueprint(web.bp)
    app.register_blueprint(ops.bp)
    app.jinja_env.globals["category_feeds"] = web.category_feeds
    return app


def lock_ttl(settings: Settings, registry: Registry) -> float:
    """Seconds a category's fetch lock lasts: longer than any load can take.

    A load tries the category's anchor pages in turn, each within the total timeout,
    then may spend the full-text budget; the lock of a holder that died expires after it.
    """
    anchors = max((len(category.paths) for category in registry.values()), default=1)
    fulltext = settings.fulltext_budget if settings.fulltext else 0.0
    return anchors * (settings.timeout.total + settings.min_interval) + fulltext + 1.0
