"""The failures feedbridge knows about, each with the HTTP status a reader gets.

Every error that can come from the site is an :class:`UpstreamError`. The web layer
turns one into a short plain-text answer with ``status`` (and ``Retry-After`` when
``retry_after`` is set) when there is no stale feed to serve instead. That answer is the
class's ``public`` sentence; the exception's own message, which names URLs and causes,
is for logs and the operator's commands only.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting or the categories file is invalid; the message names which."""


class UpstreamError(Exception):
    """The site could not give us a usable listing.

    ``upstream_status`` is the site's HTTP status when it answered with an error.
    """

    status: int = 502
    kind: str = "upstream"
    public: str = "the site did not give a usable page"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    @classmethod
    def restore(
        cls, message: str, *, retry_after: float | None, upstream_status: int | None
    ) -> UpstreamError:
        """The error again from what was stored of it (``kind`` chose the class)."""
        return cls(message, retry_after=retry_after, upstream_status=upstream_status)


class Unreachable(UpstreamError):
    kind = "unreachable"
    public = "the site cannot be reached"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"
    public = "the site did not answer in time"


class HTTPStatusError(UpstreamError):
    """The site answered with an error status; 429 and 503 mean "come back later"."""

    kind = "http"
    public = "the site answered with an error"

    def __init__(
        self, message: str, *, upstream_status: int | None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after, upstream_status=upstream_status)
        if upstream_status in (429, 503):
            self.status = 503


class Blocked(UpstreamError):
    """A sign-up wall, a bot challenge or a redirect off the site instead of the page."""

    kind = "blocked"
    public = "the site answered with a wall or a challenge instead of the page"


class NotHTML(UpstreamError):
    kind = "not-html"
    public = "the site answered with something that is not a web page"


class TooLarge(UpstreamError):
    kind = "too-large"
    public = "the site's page is larger than the bridge reads"


class LayoutChanged(UpstreamError):
    """The page parsed to no items: the site's layout changed, it is not an empty feed."""

    kind = "layout"
    public = "the site's page lists no story the bridge can read"


class BackingOff(UpstreamError):
    """We are not asking the site again yet, after failures or its own Retry-After."""

    status = 503
    kind = "backoff"
    public = "the bridge is waiting before it asks the site again"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        cause: UpstreamError | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, upstream_status=upstream_status)
        if cause is not None:
            # Which failure it waits after, in the failure's own public words.
            self.public = f"{cause.public}; {type(self).public}"


class SitePaused(BackingOff):
    """The site asked every reader to wait (``Retry-After``): the bridge's pause, not a
    category's failure (see :mod:`feedbridge.politeness`)."""

    kind = "paused"
    public = "the site asked the bridge to wait before it asks again"


# Each error class by its ``kind``: how a stored failure gets its class back.
ERROR_KINDS: dict[str, type[UpstreamError]] = {
    cls.kind: cls
    for cls in (
        UpstreamError, Unreachable, UpstreamTimeout, HTTPStatusError, Blocked, NotHTML,
        TooLarge, LayoutChanged, BackingOff, SitePaused,
    )
}  # fmt: skip
