"""The application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask

from feedbridge import ops, web
from feedbridge.bridge import FeedService
from feedbridge.categories import Category, Registry, load_registry
from feedbridge.config import Settings, redis_client_options
from feedbridge.fulltext import FullText
from feedbridge.politeness import Backoff
from feedbridge.prepared import FastPath
from feedbridge.proxy import ForwardedHeaders
from feedbridge.refresher import Refresher
from feedbridge.store import Retention, SharedPause, Store
from feedbridge.upstream import Upstream
from feedbridge.websub import Publisher


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    backoff: Backoff | None = None,
    store: Store | None = None,
) -> Flask:
    """A feedbridge app. Settings default to the environment.

    ``clock`` (wall-clock seconds) drives refreshes, back-off and the site's own
    Retry-After; tests pass one they move by hand. ``store``: the store to use instead of
    the one the settings name (:func:`open_store`); its caller closes it. Nothing runs
    in the background until the server starts the refresher (:func:`start_refresher`).

    Raises :class:`~feedbridge.errors.ConfigError` for a bad setting, categories file or
    store.
    """
    settings = settings or Settings.from_env()
    registry = load_registry(settings.categories_file)
    logging.getLogger("feedbridge").setLevel(settings.log_level)
    ops.check_metrics_dir()
    app = Flask(__name__)
    # Paths are exact: "/feeds//x" is a 404 like any other unknown path, not a redirect.
    app.url_map.merge_slashes = False
    app.config["FEEDBRIDGE"] = settings
    store = store or open_store(settings, clock)
    publisher = None
    if settings.websub_hub and settings.public_url:
        publisher = Publisher(settings.websub_hub, settings.public_url)
    service = build_service(
        settings,
        registry,
        store,
        clock=clock,
        backoff=backoff,
        notify=publisher.notify if publisher is not None else None,
    )
    app.extensions["feedbridge"] = service
    # A cached feed is answered before routing; forwarded headers are read before that.
    fast = FastPath(app.wsgi_app, service, settings.public_url)
    app.wsgi_app = ForwardedHeaders(fast, settings.forwarded_allow_ips)  # type: ignore[method-assign]
    app.extensions["feedbridge.websub"] = publisher
    refresher = Refresher(service) if settings.refresh else None
    app.extensions["feedbridge.refresher"] = refresher
    if refresher is not None:
        # Whatever server runs the app, the refresher starts with the first request of
        # each process at the latest (feedbridge.server starts it as each worker boots).
        app.before_request(refresher.start)
    app.register_blueprint(web.bp)
    app.register_blueprint(ops.bp)
    app.jinja_env.globals["category_feeds"] = web.category_feeds
    return app


def build_service(
    settings: Settings,
    registry: Registry,
    store: Store,
    *,
    clock: Callable[[], float],
    backoff: Backoff | None,
    notify: Callable[[Category], None] | None,
) -> FeedService:
    """The service on ``store``, with the HTTP client to the site it builds (whose pause
    of the site the store shares between processes)."""
    upstream = Upstream(
        settings.upstream_url,
        timeout=settings.timeout,
        max_bytes=settings.max_bytes,
        min_interval=settings.min_interval,
        clock=clock,
        pause=SharedPause(store, clock),
    )
    fulltext = FullText(
        upstream,
        concurrency=settings.fulltext_concurrency,
        budget=settings.fulltext_budget,
        clock=clock,
    )
    return FeedService(
        registry,
        upstream=upstream,
        store=store,
        fulltext=fulltext,
        ttl=settings.cache_ttl,
        min_refresh=settings.min_refresh,
        feed_size=settings.feed_size,
        retention=Retention(settings.keep_days, settings.keep_stories),
        refresh_on_request=not settings.refresh,
        fulltext_by_default=settings.fulltext,
        clock=clock,
        backoff=backoff,
        hub=settings.websub_hub,
        repair_pages=settings.repair_pages,
        notify=notify,
    )


def open_store(settings: Settings, clock: Callable[[], float]) -> Store:
    """The store the settings name: Redis when a URL is given, else the SQLite file."""
    if settings.redis_url:
        from feedbridge.redis_store import RedisStore

        return RedisStore(
            settings.redis_url,
            upstream_url=settings.upstream_url,
            clock=clock,
            search_depth=settings.keep_stories,
            options=redis_client_options(settings.redis_url, verify=settings.redis_tls_verify),
        )
    from feedbridge.sqlite_store import SQLiteStore

    return SQLiteStore(settings.db, clock=clock, site=settings.upstream_url)


def start_refresher(app: Flask) -> None:
    """Start this process's refresher, when the settings want one (idempotent per
    process: each worker of a server calls it, one of them wins the lease)."""
    refresher: Refresher | None = app.extensions.get("feedbridge.refresher")
    if refresher is not None:
        refresher.start()
