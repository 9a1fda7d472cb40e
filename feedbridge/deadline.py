"""A total deadline for an HTTP exchange made with requests, however slowly bytes come.

requests' ``timeout`` bounds each socket operation, not the response: a server that
drips a byte every few seconds keeps one request alive for ever. Mount
:class:`WatchedAdapter` on a session and make each exchange inside ``with
Watchdog(seconds)``: when the time is up, the exchange's sockets are shut down and
whichever read is blocked ends. Used for the site (:mod:`feedbridge.upstream`) and the
WebSub hub (:mod:`feedbridge.websub`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse


class Watchdog:
    """Shuts down the sockets of one exchange when its deadline passes.

    A socket timeout bounds each read, not the response: a site that drips a byte a
    second keeps http.client's header reads and urllib3's body reads going for ever.
    Shutting the socket down ends whichever read is blocked, in any phase; the
    connection is then broken, so urllib3 never puts it back in its pool.
    """

    _current = threading.local()  # the watchdog of the exchange running on this thread

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    @classmethod
    def watch(cls, sock: socket.socket | None) -> None:
        """Put ``sock`` under this thread's running watchdog, if there is one."""
        watchdog: Watchdog | None = getattr(cls._current, "watchdog", None)
        if watchdog is None or sock is None:
            return
        with watchdog._lock:
            if not watchdog._done:
                watchdog._sockets.append(sock)
                if watchdog.expired:
                    _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:  # the exchange ended: its sockets may serve another one now
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Watchdog:
        self._current.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
        self._current.watchdog = None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed, or detached by the TLS wrapper
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    """A connection whose socket is watched from its creation (a slow connect) and at
    each response (headers and body, a kept-alive connection reused too). A TLS
    handshake replaces the socket object, so it has only its per-read timeout."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        Watchdog.watch(sock)
        return sock

    def getresponse(self) -> BaseHTTPResponse:  # type: ignore[override]
        Watchdog.watch(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """requests' adapter, its connections put under the running exchange's watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
