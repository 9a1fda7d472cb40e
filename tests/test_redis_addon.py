"""A platform's Redis add-on as it comes: ``REDIS_URL``, often ``rediss://`` self-signed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from feedbridge.config import Settings, redis_client_options
from feedbridge.errors import ConfigError
from tests.conftest import FakeSite, start_redis
from tests.servers import RedisServer


def test_the_add_ons_redis_url_is_read_when_feedbridge_redis_url_is_not_set() -> None:
    assert Settings.from_env({"REDIS_URL": "rediss://h:6380"}).redis_url == "rediss://h:6380"
    both = {"REDIS_URL": "redis://add-on:6379", "FEEDBRIDGE_REDIS_URL": "redis://mine:6379"}
    assert Settings.from_env(both).redis_url == "redis://mine:6379"
    with pytest.raises(ConfigError, match=r"^REDIS_URL: must be a redis://"):
        Settings.from_env({"REDIS_URL": "http://add-on"})


def test_an_unchecked_certificate_is_asked_for_rediss_only() -> None:
    assert redis_client_options("rediss://h:6380", verify=False) == {"ssl_cert_reqs": "none"}
    assert redis_client_options("rediss://h:6380", verify=True) == {}
    assert redis_client_options("redis://h:6379", verify=False) == {}


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[RedisServer]:
    """redis-server speaking only TLS, with a self-signed certificate."""
    with start_redis(tls=True) as server:
        yield server


def served_from(make_app: Callable[..., Flask], env: dict[str, str]) -> dict[str, object]:
    """Serve a feed with the Redis settings of ``env``; what the store then says of itself."""
    settings = Settings.from_env(env)
    app = make_app(redis_url=settings.redis_url, redis_tls_verify=settings.redis_tls_verify)
    assert app.test_client().get("/feeds/vok-en.atom").status_code == 200
    return app.extensions["feedbridge"].store.describe()


@pytest.mark.slow
@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": "{url}", "FEEDBRIDGE_REDIS_TLS_VERIFY": "0"},
        {"REDIS_URL": "{url}?ssl_cert_reqs=none"},
        {"FEEDBRIDGE_REDIS_URL": "{url}", "FEEDBRIDGE_REDIS_TLS_VERIFY": "0"},
    ],
)
def test_a_self_signed_rediss_server_is_used_when_told_to_accept_it(
    tls_redis: RedisServer, make_app: Callable[..., Flask], site: FakeSite, env: dict[str, str]
) -> None:
    with redis.Redis.from_url(tls_redis.url, ssl_cert_reqs="none") as client:
        client.flushdb()
        described = served_from(make_app, {k: v.format(url=tls_redis.url) for k, v in env.items()})
        assert (described["backend"], described["state"]) == ("redis", "ok")
        assert client.keys("feedbridge:*")


@pytest.mark.slow
def test_a_self_signed_certificate_is_refused_by_default_and_says_so(
    tls_redis: RedisServer,
    make_app: Callable[..., Flask],
    site: FakeSite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    described = served_from(make_app, {"REDIS_URL": tls_redis.url})
    assert described["state"] == "degraded"
    assert "event=redis_unavailable" in caplog.text
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
