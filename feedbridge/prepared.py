"""A feed's answer, prepared once per rendering and root, and the one place that turns it
into an HTTP response: the feed view and the fast path both send what :func:`answer`
says.

A cached feed is most of what the bridge serves. Its bodies (plain and gzipped) and its
fixed headers are built when a rendering is first served for a root; a request then
only adds what changes with time (``Cache-Control``'s countdown, ``X-Cache``, ``Age``)
and picks the body its validators and ``Accept-Encoding`` call for.

:class:`FastPath` answers the hot case before any routing: ``GET``/``HEAD`` of
``/feeds/<slug>.<format>`` without a query string, when the service holds that feed fresh
for the request's root. Everything else (and every miss of the hot case) goes on to the
app, whose feed view answers through :func:`answer` too.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from werkzeug.datastructures import Accept
from werkzeug.http import http_date, parse_accept_header, parse_date
from werkzeug.sansio.utils import get_current_url, get_host

from feedbridge import observe
from feedbridge.categories import Category, Registry
from feedbridge.feeds import Format

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# A host name (underscores too, as container names have them), an IPv4 or [IPv6] address.
_HOST = re.compile(r"(?:\w(?:[\w.-]*[\w.])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?", re.ASCII)
NOSNIFF = ("X-Content-Type-Options", "nosniff")  # every answer of the app has it
OK = "200 OK"
NOT_MODIFIED = "304 NOT MODIFIED"  # werkzeug's words, whichever path answers
FEEDS = "/feeds/"

Headers = list[tuple[str, str]]


@dataclass(slots=True, eq=False)
class Prepared:
    """One rendering of a feed with one root put in: bodies and fixed headers.

    The gzipped body is made when a reader first asks for it, not before: a selection
    (``?limit=``, ``?q=``) is mostly asked for once, by one reader, and compressing 1.5
    MB costs more than putting it together did. ``compress`` makes it (off the worker's
    loop, under gevent, for a large body).
    """

    body: bytes
    etag: str
    last_modified: datetime
    media_type: str
    always: tuple[tuple[str, str], ...]  # ETag, Vary: in every answer, a 304's too
    plain: tuple[tuple[str, str], ...]  # Last-Modified, Content-Type and -Length: a 200's
    compress: Callable[[bytes], bytes]
    _gzipped: tuple[bytes, tuple[tuple[str, str], ...]] | None = None

    @classmethod
    def of(
        cls,
        body: bytes,
        etag: str,
        last_modified: datetime,
        media_type: str,
        compress: Callable[[bytes], bytes],
    ) -> Prepared:
        modified = ("Last-Modified", http_date(last_modified))
        content_type = ("Content-Type", f"{media_type}; charset=utf-8")
        return cls(
            body, etag, last_modified, media_type,
            always=(("ETag", etag), ("Vary", "Accept-Encoding")),
            plain=(modified, content_type, ("Content-Length", str(len(body)))),
            compress=compress,
        )  # fmt: skip

    @property
    def gzipped(self) -> bytes:
        return self._gzip()[0]

    @property
    def compressed(self) -> tuple[tuple[str, str], ...]:
        """A gzipped answer's headers: :attr:`plain`'s, with Content-Encoding."""
        return self._gzip()[1]

    @property
    def size(self) -> int:
        """About the bytes it holds: its body, and room for the gzipped body."""
        return len(self.body) + len(self.body) // 3

    def _gzip(self) -> tuple[bytes, tuple[tuple[str, str], ...]]:
        made = self._gzipped
        if made is None:  # two readers at once may both compress it: the same bytes
            gzipped = self.compress(self.body)
            modified, content_type, _length = self.plain
            headers = (
                modified,
                ("Content-Encoding", "gzip"),
                content_type,
                ("Content-Length", str(len(gzipped))),
            )
            made = self._gzipped = (gzipped, headers)
        return made


class Freshness(enum.Enum):
    HIT = "hit"  # refreshed within the TTL
    STALE = "stale"  # older: kept while a refresh is due or failing
    MISS = "miss"  # fetched for this request


@dataclass(frozen=True, slots=True)
class Served:
    """A feed as one request gets it: the answer prepared for its root, and how fresh."""

    prepared: Prepared
    freshness: Freshness
    age: float  # seconds since the category was refreshed
    fresh_for: float  # seconds until its next refresh is due; 0 when stale


class FreshFeeds(Protocol):
    """What the fast path asks of the service (:class:`feedbridge.bridge.FeedService`)."""

    @property
    def registry(self) -> Registry: ...

    def fresh(self, category: Category, fmt: Format, root: str) -> Served | None: ...


def answer(served: Served, environ: WSGIEnvironment) -> tuple[str, Headers, bytes]:
    """The status, headers and body (a HEAD's too: the server leaves it out) of the
    answer to the request of ``environ``: ``max-age`` counts down to the refresh, a stale
    answer tells its ``Age``."""
    prepared = served.prepared
    headers = [
        *prepared.always,
        ("X-Cache", served.freshness.value),
        ("Cache-Control", f"public, max-age={int(served.fresh_for)}"),
    ]
    if served.freshness.value == "stale":
        headers.append(("Age", str(int(served.age))))
    if _not_modified(prepared, environ):
        headers.append(NOSNIFF)
        return NOT_MODIFIED, headers, b""
    if _accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING")):
        headers += prepared.compressed
        body = prepared.gzipped
    else:
        headers += prepared.plain
        body = prepared.body
    headers.append(NOSNIFF)
    return OK, headers, body


def _not_modified(prepared: Prepared, environ: WSGIEnvironment) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in wanted or prepared.etag.removeprefix("W/") in wanted
    since = _date(environ.get("HTTP_IF_MODIFIED_SINCE"))
    return since is not None and prepared.last_modified.replace(microsecond=0) <= since


@functools.lru_cache(maxsize=256)  # readers send a few distinct values, again and again
def _accepts_gzip(accept_encoding: str | None) -> bool:
    return parse_accept_header(accept_encoding, Accept).quality("gzip") > 0


@functools.lru_cache(maxsize=256)  # a reader sends back the Last-Modified it was given
def _date(value: str | None) -> datetime | None:
    return parse_date(value)


def root_for(scheme: str, host: str, root_path: str) -> str | None:
    """The bridge's base URL for a request (ending in a slash); None when its Host is no
    host: self links built on it would be invalid."""
    if not _HOST.fullmatch(host):
        return None
    return _url_root(scheme, host, root_path)


@functools.lru_cache(maxsize=64)
def _url_root(scheme: str, host: str, root_path: str) -> str:
    """``request.url_root``, remembered: werkzeug builds it anew for every request."""
    return get_current_url(scheme, host, root_path)


class FastPath:
    """WSGI middleware: a cached feed's answer without routing, for the hot case only."""

    def __init__(self, app: WSGIApplication, service: FreshFeeds, public_url: str | None) -> None:
        self._app = app
        self._service = service
        self._public_root = public_url + "/" if public_url else None
        self._feeds = {
            f"{FEEDS}{slug}.{fmt.value}": (category, fmt)
            for slug, category in service.registry.items()
            for fmt in Format
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        found = self._hit(environ)
        if found is None:
            return self._app(environ, start_response)
        status, headers, body = found
        start_response(status, headers)
        return () if environ["REQUEST_METHOD"] == "HEAD" else (body,)

    def _hit(self, environ: WSGIEnvironment) -> tuple[str, Headers, bytes] | None:
        """The answer when the request is the hot case and the service holds it fresh."""
        feed = self._feeds.get(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD")
        if feed is None or method not in ("GET", "HEAD") or environ.get("QUERY_STRING"):
            return None
        root = self._public_root or _root(environ)
        served = self._service.fresh(*feed, root) if root is not None else None
        if served is None:
            return None
        observe.served(feed[0].slug, served.freshness.value)
        return answer(served, environ)


def _root(environ: WSGIEnvironment) -> str | None:
    """The root as the app's view finds it (werkzeug's ``request.host``, ``root_path``)."""
    name = environ.get("SERVER_NAME")
    server: tuple[str, int | None] | None = None
    if name is not None:
        port = environ.get("SERVER_PORT")
        server = (name, int(port) if port and port.isdigit() else None)
    script = environ.get("SCRIPT_NAME") or ""
    return _root_of(environ["wsgi.url_scheme"], environ.get("HTTP_HOST"), server, script)


@functools.lru_cache(maxsize=64)
def _root_of(
    scheme: str, host_header: str | None, server: tuple[str, int | None] | None, script: str
) -> str | None:
    root_path = script.encode("latin1").decode(errors="replace").rstrip("/")
    return root_for(scheme, get_host(scheme, host_header, server), root_path)
