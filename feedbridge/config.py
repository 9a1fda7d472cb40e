"""Settings, read once from ``FEEDBRIDGE_*`` environment variables and validated.

A bad value raises :class:`ConfigError` whose message starts with the variable's name,
so start-up can stop with one clear line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedbridge.errors import ConfigError

PREFIX = "FEEDBRIDGE_"
MAX_FEED_SIZE = 500  # stories a feed or a ?limit= selection may hold
MAX_REPAIR_PAGES = 100  # archive pages one repair may read: ~a few days of the site
# Read by gunicorn itself, and in the same way by every other server of the app.
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); unset means default."""
        env = os.environ if environ is None else environ
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
                    raise ConfigError(f"{name}: {exc} (got {raw!r})") from None
        return None

    @property
    def description(self) -> str:
        """What it means, with its default as one would write it (for --help and docs)."""
        default = _shown(getattr(Settings(), self.field))
        return f"{self.meaning} (default {default})" if default else self.meaning


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


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _feed_size(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_FEED_SIZE:
        raise ValueError(f"must be at most {MAX_FEED_SIZE}")
    return value


def _repair_pages(raw: str) -> int:
    value = _positive_int(raw)
    if value > MAX_REPAIR_PAGES:
        raise ValueError(f"must be at most {MAX_REPAIR_PAGES}")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be 0 or more seconds")
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError("must be greater than 0")
    return value


def _timeout(raw: str) -> Timeout:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) == 1:
        total = _positive_float(parts[0])
        return Timeout(connect=min(Timeout.connect, total), total=total)
    if len(parts) == 2:
        connect, total = _positive_float(parts[0]), _positive_float(parts[1])
        if connect > total:
            raise ValueError("the time to connect must be within the total")
        return Timeout(connect=connect, total=total)
    raise ValueError("must be TOTAL or CONNECT,TOTAL seconds")


def http_url(raw: str) -> str:
    """An http(s) base URL without query or fragment, with no trailing slash."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    return raw.rstrip("/")


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return raw


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
        ("CACHE_TTL", "cache_ttl", _positive_int,
         "seconds between two refreshes of a category's listing", None),
        ("CATEGORIES_FILE", "categories_file", _existing_file,
         "a TOML file of categories that add to or replace the built-in ones", None),
        ("DB", "db", _path, "the SQLite file that keeps every story seen", None),
        ("REDIS_URL", "redis_url", _redis_url,
         "redis:// or rediss:// URL of a store shared by several machines, instead of DB "
         "(REDIS_URL, a Redis add-on's, when this is not set)", "REDIS_URL"),
        ("REDIS_TLS_VERIFY", "redis_tls_verify", _boolean,
         "1/0: check the certificate of a rediss:// server", None),
        ("FEED_SIZE", "feed_size", _feed_size,
         f"stories in a feed, newest first; ?limit= reaches up to {MAX_FEED_SIZE}", None),
        ("KEEP_DAYS", "keep_days", _positive_int,
         "days a story is kept after it was last listed", None),
        ("KEEP_STORIES", "keep_stories", _positive_int,
         "stories kept per category at the most", None),
        ("REFRESH", "refresh", _boolean,
         "1/0: refresh every category in the background; 0: when a reader asks", None),
        ("WEBSUB_HUB", "websub_hub", http_url,
         "a WebSub hub URL to announce in feeds and notify of new stories", None),
        ("PUBLIC_URL", "public_url", http_url,
         "the bridge's public base URL, for self links (else: from the request)", None),
        ("TIMEOUT", "timeout", _timeout,
         "upstream time limits: TOTAL or CONNECT,TOTAL seconds", None),
        ("MIN_INTERVAL", "min_interval", _non_negative_float,
         "minimum seconds between two requests to the site", None),
        ("MAX_BYTES", "max_bytes", _positive_int, "largest upstream body read, in bytes", None),
        ("FULLTEXT", "fulltext", _boolean, "1/0: fetch each article's full text", None),
        ("FULLTEXT_CONCURRENCY", "fulltext_concurrency", _positive_int,
         "article pages fetched at once", None),
        ("FULLTEXT_BUDGET", "fulltext_budget", _positive_float,
         "seconds a round of full text may spend on article pages", None),
        ("REPAIR_PAGES", "repair_pages", _repair_pages,
         f"archive pages a repair of a gap reads at the most ({MAX_REPAIR_PAGES} at most)",
         None),
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
# Variables a platform sets that the servers read, not the settings.
PLATFORM_VARIABLES: dict[str, str] = {
    "PORT": "port to listen on (default 8000)",
    "WEB_CONCURRENCY": "gunicorn worker processes of the Procfile (default 2)",
}


def setting_descriptions() -> dict[str, str]:
    """Every variable the bridge reads, by its full name: for --help and the docs."""
    return {s.variable: s.description for s in SETTINGS} | PLATFORM_VARIABLES
