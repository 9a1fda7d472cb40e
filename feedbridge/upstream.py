"""The only module that talks HTTP to the site.

Every URL is built from the configured base and a path the bridge chose itself, so no
request of a reader can make it fetch anything else. Bodies are read against a total
deadline and a size cap; every way a fetch can fail is a typed :mod:`feedbridge.errors`
exception.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
from urllib3.exceptions import ReadTimeoutError

from feedbridge import __version__, observe, politeness
from feedbridge.config import Timeout
from feedbridge.deadline import Watchdog, WatchedAdapter
from feedbridge.errors import (
    Blocked,
    HTTPStatusError,
    NotHTML,
    SitePaused,
    TooLarge,
    Unreachable,
    UpstreamError,
    UpstreamTimeout,
)
from feedbridge.politeness import LocalPause, Pause
from feedbridge.site import CHALLENGE_MARKERS, WALL_PATHS

USER_AGENT = (
    f"feedbridge/{__version__} (RSS/Atom bridge for KCNA Watch; "
    "+https://pypi.org/project/feedbridge/)"
)
MAX_REDIRECTS = 5
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True, slots=True)
class Page:
    """What the site answered: the body, or ``not_modified`` after a conditional GET."""

    url: str
    body: bytes = b""
    encoding: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


class Upstream:
    """A polite client of one site: one session, spaced requests, bounded bodies."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: Timeout | None = None,
        max_bytes: int = 5 * 1024 * 1024,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        pause: Pause | None = None,
    ) -> None:
        self.base_url, auth = _without_credentials(base_url.rstrip("/"))
        self.timeout = timeout or Timeout()
        self.max_bytes = max_bytes
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._session = session or requests.Session()
        if auth is not None:
            self._session.auth = auth
        for scheme in ("http://", "https://"):
            self._session.mount(scheme, WatchedAdapter())
        self._session.headers.update(
            {
                "User-Agent": USER_AGENT,
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
                "Accept-Encoding": "gzip, deflate",
            }
        )
        # Held while the next request's time is taken (and while the site's pause is
        # set): the pace of this process's requests, one after the other.
        self._pacing = threading.Lock()
        self._next_request_at = 0.0
        self.pause = pause or LocalPause(clock)  # the site's Retry-After, for every page

    def url_for(self, path: str) -> str:
        """The absolute URL of a site path; refuses anything that would leave the site."""
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError(f"not a site path: {path!r}")
        return self.base_url + path

    def fetch(
        self,
        path: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> Page:
        """GET one page of the site, conditionally when validators are given.

        Every request is counted, timed and logged here, under the category it is for
        (:func:`feedbridge.observe.fetching_for`).
        """
        url = self.url_for(path)
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        self._wait_turn()
        started = self._clock()
        try:
            page = self._exchange(url, headers, started + self.timeout.total)
        except UpstreamError as exc:
            observe.fetch_failed(path, self._clock() - started, exc)
            raise
        observe.fetched(
            path, self._clock() - started, not_modified=page.not_modified, size=len(page.body)
        )
        return page

    def _exchange(self, url: str, headers: dict[str, str], deadline: float) -> Page:
        """The page at ``url``, whole within the deadline however slowly the bytes come."""
        with Watchdog(max(0.0, deadline - self._clock())) as watchdog:
            try:
                page = self._follow_redirects(url, headers, deadline)
            except UpstreamError:
                if not watchdog.expired:
                    raise
            else:
                if not watchdog.expired:
                    return page
        # Whatever failed or ended (a body read until the connection closed) was cut short
        # by the watchdog.
        raise UpstreamTimeout(f"{url} took over {self.timeout.total:g}s")

    def _follow_redirects(self, url: str, headers: dict[str, str], deadline: float) -> Page:
        """The page at ``url``, following the redirects that stay on the site."""
        start = url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._get(url, headers, deadline)
            if not response.is_redirect:
                return self._read(url, response, deadline)
            url = self._follow(url, response)
        raise UpstreamError(f"more than {MAX_REDIRECTS} redirects from {start}")

    def _wait_turn(self) -> None:
        """Space requests ``min_interval`` apart across all categories of this process."""
        with self._pacing:
            paused = self.pause.paused_for()
            if paused > 0:
                raise SitePaused(f"the site asked us to wait {paused:.0f}s", retry_after=paused)
            now = self._clock()
            # Clamped, so that a clock stepped backwards never means a long sleep.
            wait = min(self.min_interval, self._next_request_at - now)
            if wait > 0:
                self._sleep(wait)
            self._next_request_at = max(now, self._next_request_at) + self.min_interval

    def _get(self, url: str, headers: dict[str, str], deadline: float) -> requests.Response:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise UpstreamTimeout(f"no answer from {url} within {self.timeout.total:g}s")
        try:
            return self._session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(min(self.timeout.connect, remaining), remaining),
            )
        except requests.Timeout as exc:
            raise UpstreamTimeout(f"no answer from {url} within the time limit") from exc
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach {url}: {type(exc).__name__}") from exc

    def _follow(self, url: str, response: requests.Response) -> str:
        """The redirect's target, only when it stays on the site and is not a wall."""
        response.close()
        target = urljoin(url, response.headers.get("Location", ""))
        parts, base = urlsplit(target), urlsplit(self.base_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise Blocked(f"the site redirected {url} off the site, to {parts.netloc or '?'}")
        if any(parts.path.startswith(wall) for wall in WALL_PATHS):
            raise Blocked("the site redirected to its sign-up wall")
        return target

    def _read(self, url: str, response: requests.Response, deadline: float) -> Page:
        with response:
            if response.status_code == 304:
                etag, last_modified = _validators(response)
                return Page(url, etag=etag, last_modified=last_modified, not_modified=True)
            if response.status_code >= 400:
                retry_after = politeness.retry_after(response.headers.get("Retry-After"))
                if response.status_code in (429, 503) and retry_after:
                    with self._pacing:
                        self.pause.pause(retry_after)
                raise HTTPStatusError(
                    f"the site answered {response.status_code} for {url}",
                    upstream_status=response.status_code,
                    retry_after=retry_after,
                )
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type and media_type not in _HTML_TYPES:
                raise NotHTML(f"the site sent {media_type}, not HTML, for {url}")
            declared = response.headers.get("Content-Length", "")
            # ASCII digits only ("²" is a digit to str.isdigit(), not to int()); more
            # digits than int() reads are too many bytes anyway.
            if (
                declared.isascii()
                and declared.isdigit()
                and (len(declared) > 18 or int(declared) > self.max_bytes)
            ):
                raise TooLarge(f"{url} is {declared} bytes, over the {self.max_bytes} cap")
            body = self._body(url, response, deadline)
        head = body[:65536].lower()
        if not media_type and not head.lstrip().startswith(b"<"):
            raise NotHTML(f"the site sent something that is not HTML for {url}")
        if any(marker in head for marker in CHALLENGE_MARKERS):
            raise Blocked("the site answered with a bot challenge instead of the page")
        etag, last_modified = _validators(response)
        return Page(url, body, _charset(response), etag, last_modified)

    def _body(self, url: str, response: requests.Response, deadline: float) -> bytes:
        """The decoded body, stopped at the size cap (gzip bombs too) and the deadline."""
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > self.max_bytes:
                    raise TooLarge(f"{url} is over the {self.max_bytes}-byte cap")
                if self._clock() > deadline:
                    raise UpstreamTimeout(f"{url} took over {self.timeout.total:g}s")
                chunks.append(chunk)
        except requests.RequestException as exc:
            # requests reports a read timeout inside the body as a ConnectionError.
            if isinstance(exc, requests.Timeout) or isinstance(
                exc.args[0] if exc.args else None, ReadTimeoutError
            ):
                raise UpstreamTimeout(f"{url} stopped sending within the time limit") from exc
            raise Unreachable(f"the connection broke while reading {url}: {exc}") from exc
        return b"".join(chunks)


def _without_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The base URL without its ``user:password@``, and those as HTTP Basic credentials:
    every message, log line and feed link is built on the URL, none may show them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=host)), auth


def _validators(response: requests.Response) -> tuple[str | None, str | None]:
    """The page's ``ETag`` and ``Last-Modified``, for a conditional request next time."""
    return response.headers.get("ETag"), response.headers.get("Last-Modified")


def _charset(response: requests.Response) -> str | None:
    """The charset the HTTP header declares, if any (not requests' ISO-8859-1 guess)."""
    for param in response.headers.get("Content-Type", "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None
