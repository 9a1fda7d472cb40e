"""Settings, read once from ``FEEDBRIDGE_*`` environment variables and validated.

A bad value raises :class:`ConfigError` whose message starts with the variable's name,
so start-up can stop with one clear line.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from feedbridge.errors import ConfigError

PREFIX = "FEEDBRIDGE_"
# prometheus_client's variable: the directory where every worker's metrics meet.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
MAX_FEED_SIZE = 500  # stories a feed or a ?limit= selection may hold
MAX_MIN_REFRESH = 3600  # seconds: a floor above an hour would starve a busy category
MAX_REPAIR_PAGES = 100  # archive pages one repair may read: ~a few days of the site
# gunicorn's variable, read by the app itself (feedbridge/proxy.py) under every server.
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"
LOG_FORMATS = ("logfmt", "json")


@dataclass(frozen=True)
class Timeout:
    """Seconds allowed to connect, and for the whole response (a deadline, not per read)."""

    connect: float = 5.0
    total: float = 15.0


@dataclass(frozen=True)
class Settings:
    upstream_url: str = "https://kcnawatch.org"
    cache_ttl: int = 600
    min_refresh: int = 60
    categories_file: Path | None = None
    db: Path = Path("feedbridge.db")
    redis_url: str | None = None
    feed_size: int = 50
    keep_days: int = 365
    keep_stories: int = 5000
    refresh: bool = True
    websub_hub: str | None = None
    redis_tls_verify: bool = True
    public_url: str | None = None
    timeout: Timeout = field(default_factory=Timeout)
    min_interval: float = 1.0
    max_bytes: int = 5 * 1024 * 1024
    fulltext: bool = True
    fulltext_concurrency: int = 2
    fulltext_budget: float = 10.0
    repair_pages: int = 10
    log_level: str = "INFO"
    log_format: str = "logfmt"
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, warn: bool = True) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); unset means default.

        A ``FEEDBRIDGE_*`` variable that is no setting is a warning line (``warn``), once
        a process however often settings are read.
        """
        env = os.environ if environ is None else environ
        for line in unknown_variables(env) if warn else ():
            if line not in _WARNED:
                _WARNED.add(line)
                logging.getLogger(__name__).warning("%s", line)
        values: dict[str, Any] = {}  # each of the type its setting's parser returns
        for setting in SETTINGS:
            value = setting.read(env)
            if value is not None:
                values[setting.field] = value
        settings = cls(**values)
        if settings.websub_hub and not settings.public_url:
            raise ConfigError(
                f"{PREFIX}WEBSUB_HUB: needs {PREFIX}PUBLIC_URL, the feeds' URL to tell the hub"
            )
        return settings


@dataclass(frozen=True)
class Setting:
    """One environment variable: the field it sets, how it is read, what it means.

    ``also`` names a variable read when this one is unset (a platform's own name).
    """

    variable: str
    field: str
    parse: Callable[[str], object]
    meaning: str
    also: str | None = None

    def read(self, env: Mapping[str, str]) -> object | None:
        """The parsed value, None when unset; ConfigError naming the variable when bad."""
        for name in (self.variable, self.also):
            raw = env.get(name, "").strip() if name else ""
            if raw:
                try:
                    return self.parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc} (got {masked(raw)!r})") from None
        return None

    @property
    def description(self) -> str:
        """What it means, with its default and range as one would write them (for --help
        and docs)."""
        default = _shown(getattr(Settings(), self.field))
        shown = [f"default {default}"] if default else []
        if isinstance(self.parse, Number):
            shown.append(self.parse.range)
        return f"{self.meaning} ({'; '.join(shown)})" if shown else self.meaning


def _shown(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, Timeout):
        return f"{value.connect:g},{value.total:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def redis_client_options(url: str, *, verify: bool) -> dict[str, str]:
    """Options for ``redis.Redis.from_url(url, ...)`` beyond what the URL says.

    A platform's Redis often has a self-signed certificate: with ``verify`` false, a
    ``rediss://`` server's certificate is not checked (``ssl_cert_reqs=none`` in the
    URL does the same).
    """
    if urlsplit(url).scheme == "rediss" and not verify:
        return {"ssl_cert_reqs": "none"}
    return {}


@dataclass(frozen=True)
class Number:
    """A number setting's parser: ASCII digits (whole) or a decimal number (seconds), from
    ``low`` to ``high`` both included. The bounds keep every sum and date the bridge
    makes of it finite: ``1e308`` seconds or a 400-digit TTL would overflow later."""

    low: float
    high: float
    whole: bool = True

    def __call__(self, raw: str) -> Any:  # an int when whole, else a float
        value: float | None = None
        if self.whole:
            digits = raw.lstrip("0") or "0"  # as many as the bound has, at most
            if raw.isascii() and raw.isdigit() and len(digits) <= len(_shown(self.high)):
                value = int(raw)
        elif raw.isascii() and re.fullmatch(r"\d+(\.\d*)?|\.\d+", raw):
            value = float(raw)
        if value is None or not self.low <= value <= self.high:
            kind = "a whole number" if self.whole else "a number of seconds"
            raise ValueError(f"must be {kind} from {self.range}")
        return value

    @property
    def range(self) -> str:
        return f"{_shown(self.low)} to {_shown(self.high)}"


@dataclass(frozen=True)
class Timeouts(Number):
    """``TOTAL`` or ``CONNECT,TOTAL`` seconds, each within the bounds."""

    whole: bool = False

    def __call__(self, raw: str) -> Timeout:
        parts = [p.strip() for p in raw.split(",")]
        if len(parts) == 1:
            total = super().__call__(parts[0])
            return Timeout(connect=min(Timeout.connect, total), total=total)
        if len(parts) == 2:
            connect, total = super().__call__(parts[0]), super().__call__(parts[1])
            if connect > total:
                raise ValueError("the time to connect must be within the total")
            return Timeout(connect=connect, total=total)
        raise ValueError(f"must be TOTAL or CONNECT,TOTAL seconds, each from {self.range}")


YEAR = 365 * 86_400
MAX_PORT = 65_535
MAX_WORKERS = 64
REDIS_TIMEOUT_MAX = 60  # seconds a Redis URL's socket_timeout may give a call at most


# A URL's user information (``user:password@`` or a lone token, up to the last ``@`` of
# the authority, as URL parsers read it), and a password given as a query option: what
# no message shows.
_USERINFO = re.compile(r"(?<=//)([^/?#\s]*)@")
_PASSWORD_OPTION = re.compile(r"(?i)(?<=[?&])(password|ssl_password)=[^&#\s]*")


def masked(text: str) -> str:
    """``text`` with the secrets of the URLs in it replaced by ``***``, even when the
    URL cannot be parsed (``redis://:secret@[::1/0``)."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _password = match.group(1).partition(":")
        return f"{user}:***@" if colon else "***@"

    text = _USERINFO.sub(userinfo, text)
    return _PASSWORD_OPTION.sub(lambda m: f"{m.group(1)}=***", text)


def _split(raw: str) -> SplitResult:
    """The URL's parts, its port read (a number from 1 to 65535) so that a bad one is
    refused now, not at the first connection."""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValueError(
            f"must be a URL whose host is a name or an [IPv6] address, with a port from 1 to "
            f"{MAX_PORT} if any"
        ) from None
    if port == 0:
        raise ValueError(f"the port must be from 1 to {MAX_PORT}")
    return parts


def http_url(raw: str) -> str:
    """An http(s) base URL without query or fragment, with no trailing slash."""
    parts = _split(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return raw.rstrip("/")


def site_address(url: str) -> str:
    """The site's address as a store records it: one text for every spelling of one
    address (scheme and host lowercased, the default port and a trailing slash left out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, {"http": 80, "https": 443}.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


# Query options of a Redis URL whose value is text (redis-py parses the others itself).
_REDIS_TEXT_OPTIONS = frozenset(
    {"client_name", "username", "password", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path",
     "ssl_certfile", "ssl_keyfile", "ssl_ciphers", "ssl_password"}
)  # fmt: skip


def _redis_url(raw: str) -> str:
    """A URL redis-py reads whole, as ``redis.Redis.from_url`` will: its port, its
    database number and every query option (known to the connection it makes, of the
    right type), so that no bad part waits for the first command to fail."""
    parts = _split(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    database = unquote(parts.path).replace("/", "")
    if parts.scheme != "unix" and database and not (database.isascii() and database.isdigit()):
        raise ValueError("the path must be a database number, like /0")
    from redis.connection import (
        URL_QUERY_ARGUMENT_PARSERS,
        Connection,
        ConnectionPool,
        parse_url,
    )

    try:
        options = parse_url(raw)  # type: ignore[no-untyped-call]  # redis-py has none
    except ValueError as exc:
        raise ValueError(masked(str(exc))) from None
    connection = options.get("connection_class", Connection)
    accepted = _init_parameters(connection) | _init_parameters(ConnectionPool)
    readable = (set(URL_QUERY_ARGUMENT_PARSERS) - {"retry_on_error"}) | _REDIS_TEXT_OPTIONS
    unknown = sorted(set(options) - {"connection_class", "host", "port", "path", "db"}
                     - (accepted & readable))  # fmt: skip
    if unknown:
        raise ValueError(f"{unknown[0]!r} is no option of a {parts.scheme}:// connection")
    if options.get("ssl_cert_reqs", "none") not in ("none", "optional", "required"):
        raise ValueError("ssl_cert_reqs must be none, optional or required")
    for name in ("socket_timeout", "socket_connect_timeout"):  # every call keeps a deadline
        if name in options and not 0 < options[name] <= REDIS_TIMEOUT_MAX:
            raise ValueError(f"{name} must be more than 0 and at most {REDIS_TIMEOUT_MAX} s")
    return raw


def _init_parameters(cls: type) -> set[str]:
    """The keyword arguments a class's ``__init__`` (and its bases') take."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(vars(klass)["__init__"]).parameters)
    return names


def _existing_file(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError("no such file")
    return path


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0")


def _log_format(raw: str) -> str:
    value = raw.lower()
    if value not in LOG_FORMATS:
        raise ValueError("must be logfmt or json")
    return value


def _addresses(raw: str) -> tuple[str, ...]:
    """gunicorn's form: ``*``, or addresses and networks separated by commas."""
    values = tuple(value.strip() for value in raw.split(",") if value.strip())
    for value in values:
        if value != "*":
            try:
                ipaddress.ip_network(value)
            except ValueError:
                raise ValueError(f"{value!r} is no IP address or network, nor *") from None
    return values


def _log_level(raw: str) -> str:
    value = raw.upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return value


# Every setting, once: what from_env reads, what --help and docs/operating.md say.
SETTINGS: tuple[Setting, ...] = (
    *(
    Setting(PREFIX + name, field, parse, meaning, also)
    for name, field, parse, meaning, also in (
        ("UPSTREAM_URL", "upstream_url", http_url,
         "base URL of the site; every fetched URL is built on it", None),
        ("CACHE_TTL", "cache_ttl", Number(1, 10 * YEAR),
         "seconds between two refreshes of a category's listing, at the most", None),
        ("MIN_REFRESH", "min_refresh", Number(1, MAX_MIN_REFRESH),
         "seconds between two refreshes of a category's listing, at the least: a busy "
         "hour or a gap brings a refresh before the TTL, never sooner than this", None),
        ("CATEGORIES_FILE", "categories_file", _existing_file,
         "a TOML file of categories that add to or replace the built-in ones", None),
        ("DB", "db", _path, "the SQLite file that keeps every story seen", None),
        ("REDIS_URL", "redis_url", _redis_url,
         "redis:// or rediss:// URL of a store shared by several machines, instead of DB "
         "(REDIS_URL, a Redis add-on's, when this is not set)", "REDIS_URL"),
        ("REDIS_TLS_VERIFY", "redis_tls_verify", _boolean,
         "1/0: check the certificate of a rediss:// server", None),
        ("FEED_SIZE", "feed_size", Number(1, MAX_FEED_SIZE),
         f"stories in a feed, newest first; ?limit= reaches up to {MAX_FEED_SIZE}", None),
        ("KEEP_DAYS", "keep_days", Number(1, 36_500),
         "days a story is kept after it was last listed", None),
        ("KEEP_STORIES", "keep_stories", Number(1, 1_000_000),
         "stories kept per category at the most", None),
        ("REFRESH", "refresh", _boolean,
         "1/0: refresh every category in the background; 0: when a reader asks", None),
        ("WEBSUB_HUB", "websub_hub", http_url,
         "a WebSub hub URL to announce in feeds and notify of new stories", None),
        ("PUBLIC_URL", "public_url", http_url,
         "the bridge's public base URL, for self links (else: from the request)", None),
        ("TIMEOUT", "timeout", Timeouts(0.1, 600),
         "upstream time limits: TOTAL or CONNECT,TOTAL seconds", None),
        ("MIN_INTERVAL", "min_interval", Number(0, 3600, whole=False),
         "minimum seconds between two requests to the site", None),
        ("MAX_BYTES", "max_bytes", Number(1, 1024**3), "largest upstream body read, in bytes",
         None),
        ("FULLTEXT", "fulltext", _boolean, "1/0: fetch each article's full text", None),
        ("FULLTEXT_CONCURRENCY", "fulltext_concurrency", Number(1, 16),
         "article pages fetched at once", None),
        ("FULLTEXT_BUDGET", "fulltext_budget", Number(0.1, 3600, whole=False),
         "seconds a round of full text may spend on article pages", None),
        ("REPAIR_PAGES", "repair_pages", Number(1, MAX_REPAIR_PAGES),
         "archive pages a repair of a gap reads at the most", None),
        ("LOG_LEVEL", "log_level", _log_level, "DEBUG, INFO, WARNING or ERROR", None),
        ("LOG_FORMAT", "log_format", _log_format, "logfmt or json: the form of every log line",
         None),
    )
    ),
    # gunicorn's own variable, read the same way by every server of the app.
    Setting(FORWARDED_ALLOW_IPS, "forwarded_allow_ips", _addresses,
            "addresses or networks whose X-Forwarded-Proto, -Host and -For are trusted, "
            "or * for any"),
)  # fmt: skip
# Variables a platform sets that the servers read, not the settings: their parsers,
# defaults and meanings. A server launcher reads them with port() and web_concurrency().
PORT = Number(1, MAX_PORT)
WEB_CONCURRENCY = Number(1, MAX_WORKERS)
PLATFORM_VARIABLES: dict[str, str] = {
    "PORT": f"port to listen on (default 8000; {PORT.range})",
    "WEB_CONCURRENCY": f"worker processes of the Procfile's server (default 2; "
    f"{WEB_CONCURRENCY.range})",
}


_WARNED: set[str] = set()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each ``FEEDBRIDGE_*`` variable that is no setting (a typo is otherwise
    ignored without a word), naming the closest setting. A warning, not an error: a
    setting a later version reads must not stop this one."""
    known = [s.variable for s in SETTINGS if s.variable.startswith(PREFIX)]
    lines = []
    for name in sorted(environ):
        if name.startswith(PREFIX) and name not in known:
            closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {closest[0]}?" if closest else "see 'feedbridge --help'"
            lines.append(f"{name}: not a setting, ignored; {hint}")
    return lines


def port(environ: Mapping[str, str] | None = None) -> int:
    """``PORT``, the port a platform tells the server to listen on (default 8000)."""
    return _platform("PORT", PORT, 8000, environ)


def web_concurrency(environ: Mapping[str, str] | None = None) -> int:
    """``WEB_CONCURRENCY``, the server's worker processes (default 2)."""
    return _platform("WEB_CONCURRENCY", WEB_CONCURRENCY, 2, environ)


def _platform(name: str, parse: Number, default: int, environ: Mapping[str, str] | None) -> int:
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value: int = parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc} (got {raw!r})") from None
    return value


def setting_descriptions() -> dict[str, str]:
    """Every variable the bridge reads, by its full name: for --help and the docs."""
    return {s.variable: s.description for s in SETTINGS} | PLATFORM_VARIABLES
