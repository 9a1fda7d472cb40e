"""The HTTP face: routes, query parameters, conditional GET, compression, errors."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from feedbridge import observe
from feedbridge.bridge import FeedService
from feedbridge.categories import Category
from feedbridge.config import MAX_FEED_SIZE
from feedbridge.errors import UpstreamError
from feedbridge.feed_cache import Unavailable
from feedbridge.feeds import OPML_MEDIA_TYPE, Format, render_opml
from feedbridge.model import PYONGYANG
from feedbridge.prepared import Served, answer, root_for
from feedbridge.store import StoreError

log = logging.getLogger(__name__)
bp = Blueprint("feeds", __name__)
MAX_QUERY = 200
HEADLINES = 3  # per category on the front page
# A list in the WSGI environ that receives the detailed error behind an upstream failure
# answer: how `feedbridge render`, which asks through the test client, shows the operator
# what a reader is not told.
ERROR_SINK = "feedbridge.errors"


class BadParameter(ValueError):
    """A query parameter with a value we cannot use; the message names it."""


def service() -> FeedService:
    found: FeedService = current_app.extensions["feedbridge"]
    return found


@bp.get("/")
def index() -> str:
    """What feedbridge is and every feed, with each category's newest headlines.

    Headlines come from what is kept now: the page never waits for the site.
    """
    sections = [
        (category, service().headlines(category, HEADLINES))
        for category in service().registry.values()
    ]
    return render_template(
        "index.html",
        sections=sections,
        failures={category.slug: _failure(category) for category, items in sections if not items},
        keep_days=current_app.config["FEEDBRIDGE"].keep_days,
        site_url=service().upstream.base_url,
        opml_url=public_root() + "feeds.opml",
    )


def _failure(category: Category) -> str | None:
    """Why a category has nothing to show yet, in its failure's public sentence."""
    try:
        failure = service().store.state(category.slug).failure
    except StoreError:
        return None
    return failure.error.public if failure is not None and failure.count else None


@bp.app_template_filter("day")
def day(moment: datetime) -> str:
    """The calendar day in Pyongyang, as the site lists it: ``22 March 2026``."""
    local = moment.astimezone(PYONGYANG)
    return f"{local.day} {local:%B %Y}"


@bp.get("/healthz")
def healthz() -> Response:
    return _plain(200, "ok")


@bp.get("/feeds/<name>")
def feed(name: str) -> Response:
    slug, _, extension = name.rpartition(".")
    category = service().registry.get(slug)
    fmt = _format(extension)
    if category is None or fmt is None:
        return _not_found(name)
    try:
        limit, words = _selection_parameters()
    except BadParameter as exc:
        return _plain(400, str(exc))
    # The selection's own query, without cache busters or other unknown parameters.
    query = urlencode([(k, v) for k, v in (("limit", limit), ("q", " ".join(words))) if v])
    served = service().feed(category, fmt, public_root(), limit=limit, words=words, query=query)
    observe.served(category.slug, served.freshness.value)
    return _feed_response(served)


@bp.get("/feeds.opml")
def opml() -> Response:
    """Every category's feed in one OPML file: Atom, or ``?format=rss`` / ``json``."""
    wanted = request.args.get("format", Format.ATOM.value)
    fmt = _format(wanted)
    if fmt is None:
        formats = ", ".join(f.value for f in Format)
        return _plain(400, f"format: must be one of {formats}")
    feeds = [
        (category.feed_title, category_feeds(category)[fmt.value], public_root())
        for category in service().registry.values()
    ]
    body = render_opml("KCNA Watch feeds from feedbridge", feeds)
    return Response(body, content_type=f"{OPML_MEDIA_TYPE}; charset=utf-8")


@bp.after_app_request
def no_sniffing(response: Response) -> Response:
    """Every answer is what its Content-Type says: a browser must not guess HTML in it."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.app_errorhandler(UpstreamError)
def upstream_failed(exc: UpstreamError) -> Response:
    """Nothing stale to serve: the kind of failure, the matching status, never cached.

    The reader gets the kind's sentence; the detail (URLs, causes) is in the log already
    (the fetch and the failure lines).
    """
    sink = request.environ.get(ERROR_SINK)
    if sink is not None:
        sink.append(exc)
    response = _plain(exc.status, f"upstream failure: {exc.public}")
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


@bp.app_errorhandler(Unavailable)
def unavailable(exc: Unavailable) -> Response:
    """No right answer now (the store fails, or selections are too many at once)."""
    response = _plain(503, str(exc))
    response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    response = _plain(exc.code or 500, exc.description or exc.name)
    if exc.code == 405 and exc.response is None:
        response.headers["Allow"] = "GET, HEAD"
    return response


@bp.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _plain(500, "internal error; it has been logged")


def public_root() -> str:
    """The bridge's base URL as readers see it, ending in a slash."""
    configured: str | None = current_app.config["FEEDBRIDGE"].public_url
    if configured:
        return configured + "/"
    root = root_for(request.scheme, request.host, request.root_path)
    if root is None:
        abort(400, "Host: the request's Host header must be a host name, with a port or not")
    return root


def _selection_parameters() -> tuple[int | None, list[str]]:
    if not request.query_string:  # the common case, without parsing the arguments
        return None, []
    limit = None
    raw_limit = request.args.get("limit")
    if raw_limit is not None:
        # ASCII digits only: str.isdigit() takes "²", which int() refuses.
        if not (raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 3) or not (
            1 <= int(raw_limit) <= MAX_FEED_SIZE
        ):
            raise BadParameter(f"limit: must be a whole number from 1 to {MAX_FEED_SIZE}")
        limit = int(raw_limit)
    words: list[str] = []
    raw_query = request.args.get("q")
    if raw_query is not None:
        words = raw_query.casefold().split()
        if not words or len(raw_query) > MAX_QUERY:
            raise BadParameter(f"q: must be 1 to {MAX_QUERY} characters of words to look for")
    return limit, words


def _feed_response(served: Served) -> Response:
    status, headers, body = answer(served, request.environ)
    return Response(body, status=status, headers=headers)


def _not_found(name: str) -> Response:
    slugs = ", ".join(service().registry)
    formats = ", ".join(f.value for f in Format)
    return _plain(
        404,
        f"no feed {name!r}. Feeds are /feeds/<category>.<format>; "
        f"categories: {slugs}; formats: {formats}",
    )


def _plain(status: int, text: str) -> Response:
    """A one-line plain-text answer that no cache keeps: errors, and the health check."""
    response = Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def _format(name: str) -> Format | None:
    try:
        return Format(name)
    except ValueError:
        return None


def category_feeds(category: Category) -> dict[str, str]:
    """The category's feed URLs by format, for pages and listings."""
    return feed_urls(public_root(), category)


def feed_urls(root: str, category: Category) -> dict[str, str]:
    """The category's feed URLs by format under ``root`` (ending in a slash)."""
    return {fmt.value: f"{root}feeds/{category.slug}.{fmt.value}" for fmt in Format}


# --- for crawlers and browsers ------------------------------------------------------------

# Feeds and the front page may be crawled; the operator's pages are not worth it.
ROBOTS = "User-agent: *\nDisallow: /healthz\nDisallow: /status\nDisallow: /metrics\n"
A_DAY = "public, max-age=86400"


@bp.get("/robots.txt")
def robots() -> Response:
    response = Response(ROBOTS, content_type="text/plain; charset=utf-8")
    response.headers["Cache-Control"] = A_DAY
    return response


@bp.get("/favicon.ico")
def favicon() -> Response:
    response = current_app.send_static_file("favicon.ico")
    response.headers["Cache-Control"] = A_DAY
    return response
