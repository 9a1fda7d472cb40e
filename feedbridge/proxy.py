"""Forwarded headers, trusted from the proxies that gunicorn trusts.

Behind a platform's router or a TLS proxy, the scheme, host and client address a
reader used arrive in ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
``X-Forwarded-For``. They are believed only from a peer listed in
``FORWARDED_ALLOW_IPS`` (gunicorn's own setting, read the same way), so that the
development server and gunicorn agree, and the access log shows the reader's address.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.middleware.proxy_fix import ProxyFix

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)  # a request's peer is parsed once, not every time
def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in network for network in networks)


class ForwardedHeaders:
    """WSGI middleware: the last hop's forwarded headers, when that hop is trusted."""

    def __init__(self, app: WSGIApplication, allowed: tuple[str, ...]) -> None:
        self._app = app
        self._forwarded = ProxyFix(app, x_for=1, x_proto=0, x_host=1)
        self._any = "*" in allowed
        self._networks = tuple(ipaddress.ip_network(a) for a in allowed if a != "*")

    def trusts(self, address: str | None) -> bool:
        """Whether a peer at ``address`` may set forwarded headers (gunicorn's rule)."""
        return self._any or _within(address or "", self._networks)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return self._app(environ, start_response)
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto is not None:  # as gunicorn reads it: https, or else http
            https = proto.rpartition(",")[2].strip().lower() == "https"
            environ["wsgi.url_scheme"] = "https" if https else "http"
        return self._forwarded(environ, start_response)
