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
from typing import TypeVar
from urllib.parse import urlsplit

from feedbridge.errors import ConfigError

PREFIX = "FEEDBRIDGE_"
MAX_FEED_SIZE = 500  # stories a feed or a ?limit= selection may hold
# Read by gunicorn itself, and in the same way by every other server of the app.
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"
LOG_FORMATS = ("logfmt", "json")
T = TypeVar("T")


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
    log_level: str = "INFO"
    log_format: str = "logfmt"
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: ``os.environ``); unset means default."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, parse: Callable[[str], T], default: T, prefix: str = PREFIX) -> T:
            raw = env.get(prefix + name, "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{prefix}{name}: {exc} (got {raw!r})") from None

        settings = cls(
            upstream_url=get("UPSTREAM_URL", http_url, defaults.upstream_url),
            cache_ttl=get("CACHE_TTL", _positive_int, defaults.cache_ttl),
            categories_file=get("CATEGORIES_FILE", _existing_file, None),
            db=get("DB", lambda raw: Path(raw).expanduser(), defaults.db),
            # A Redis add-on sets REDIS_URL; FEEDBRIDGE_REDIS_URL, when set, wins.
            redis_url=get("REDIS_URL", _redis_url, get("REDIS_URL", _redis_url, None, "")),
            redis_tls_verify=get("REDIS_TLS_VERIFY", _boolean, defaults.redis_tls_verify),
            feed_size=get("FEED_SIZE", _feed_size, defaults.feed_size),
            keep_days=get("KEEP_DAYS", _positive_int, defaults.keep_days),
            keep_stories=get("KEEP_STORIES", _positive_int, defaults.keep_stories),
            refresh=get("REFRESH", _boolean, defaults.refresh),
            websub_hub=get("WEBSUB_HUB", http_url, None),
            public_url=get("PUBLIC_URL", http_url, None),
            timeout=get("TIMEOUT", _timeout, defaults.timeout),
            min_interval=get("MIN_INTERVAL", _non_negative_float, defaults.min_interval),
            max_bytes=get("MAX_BYTES", _positive_int, defaults.max_bytes),
            fulltext=get("FULLTEXT", _boolean, defaults.fulltext),
            fulltext_concurrency=get(
                "FULLTEXT_CONCURRENCY", _positive_int, defaults.fulltext_concurrency
            ),
            fulltext_budget=get("FULLTEXT_BUDGET", _positive_float, defaults.fulltext_budget),
            log_level=get("LOG_LEVEL", _log_level, defaults.log_level),
            log_format=get("LOG_FORMAT", _log_format, defaults.log_format),
            forwarded_allow_ips=get(
                FORWARDED_ALLOW_IPS, _addresses, defaults.forwarded_allow_ips, ""
            ),
        )
        if settings.websub_hub and not settings.public_url:
            raise ConfigError(
                f"{PREFIX}WEBSUB_HUB: needs {PREFIX}PUBLIC_URL, the feeds' URL to tell the hub"
            )
        return settings


# What each setting means, for the README and every command's --help.
DESCRIPTIONS: dict[str, str] = {
    "UPSTREAM_URL": "base URL of the site; every fetched URL is built on it "
    "(default https://kcnawatch.org)",
    "CACHE_TTL": "seconds between two refreshes of a category's listing (default 600)",
    "CATEGORIES_FILE": "a TOML file of categories that add to or replace the built-in ones",
    "DB": "the SQLite file that keeps every story seen (default feedbridge.db)",
    "REDIS_URL": "redis:// or rediss:// URL of a store shared by several machines, instead "
    "of DB (default: REDIS_URL, else none)",
    "REDIS_TLS_VERIFY": "1/0: check the certificate of a rediss:// server (default 1)",
    "FEED_SIZE": "stories in a feed, newest first; ?limit= reaches up to 500 (default 50)",
    "KEEP_DAYS": "days a story is kept after it was last listed (default 365)",
    "KEEP_STORIES": "stories kept per category at the most (default 5000)",
    "REFRESH": "1/0: refresh every category in the background (default 1); 0: on request",
    "WEBSUB_HUB": "a WebSub hub URL to announce in feeds and notify of new stories",
    "PUBLIC_URL": "the bridge's public base URL, for self links (default: from the request)",
    "TIMEOUT": "upstream time limits: TOTAL or CONNECT,TOTAL seconds (default 5,15)",
    "MIN_INTERVAL": "minimum seconds between two requests to the site (default 1)",
    "MAX_BYTES": "largest upstream body read, in bytes (default 5242880)",
    "FULLTEXT": "1/0: fetch each article's full text (default 1)",
    "FULLTEXT_CONCURRENCY": "article pages fetched at once (default 2)",
    "FULLTEXT_BUDGET": "seconds a refresh may spend on article pages (default 10)",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "LOG_FORMAT": "logfmt or json: the form of every log line (default logfmt)",
}
# Variables a platform sets, read under their own names.
PLATFORM_DESCRIPTIONS: dict[str, str] = {
    "PORT": "port to listen on (default 8000)",
    "WEB_CONCURRENCY": "gunicorn worker processes of the Procfile (default 2)",
    "REDIS_URL": f"a Redis add-on's URL, used when {PREFIX}REDIS_URL is not set",
    FORWARDED_ALLOW_IPS: "addresses or networks whose X-Forwarded-Proto, -Host and -For "
    "are trusted, or * for any (default 127.0.0.1,::1)",
}


def setting_descriptions() -> dict[str, str]:
    """Every variable the bridge reads, by its full name: for --help and the docs."""
    return {PREFIX + name: text for name, text in DESCRIPTIONS.items()} | PLATFORM_DESCRIPTIONS


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
