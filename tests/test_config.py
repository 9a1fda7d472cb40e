"""Settings and the category registry: defaults, overrides, and one clear line when wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from feedbridge import config
from feedbridge.categories import load_registry
from feedbridge.config import PREFIX, SETTINGS, Settings, Timeout
from feedbridge.errors import ConfigError

ROOT = Path(__file__).parent.parent


def test_defaults_serve_the_real_site() -> None:
    settings = Settings.from_env({})
    assert settings.upstream_url == "https://kcnawatch.org"
    assert settings.cache_ttl == 600
    assert (settings.db, settings.redis_url) == (Path("feedbridge.db"), None)
    assert settings.refresh is True
    assert (settings.feed_size, settings.keep_days, settings.keep_stories) == (50, 365, 5000)
    assert settings.timeout == Timeout(connect=5, total=15)
    assert settings.min_interval == 1.0 and settings.fulltext is True


def test_every_setting_is_read_and_described(tmp_path: Path) -> None:
    categories = tmp_path / "c.toml"
    categories.write_text("")
    env = {
        "FEEDBRIDGE_UPSTREAM_URL": "http://127.0.0.1:9000/",
        "FEEDBRIDGE_CACHE_TTL": "60",
        "FEEDBRIDGE_MIN_REFRESH": "30",
        "FEEDBRIDGE_CATEGORIES_FILE": str(categories),
        "FEEDBRIDGE_DB": str(tmp_path / "stories.db"),
        "FEEDBRIDGE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "FEEDBRIDGE_FEED_SIZE": "100",
        "FEEDBRIDGE_KEEP_DAYS": "30",
        "FEEDBRIDGE_KEEP_STORIES": "900",
        "FEEDBRIDGE_REFRESH": "0",
        "FEEDBRIDGE_WEBSUB_HUB": "https://hub.example.org/",
        "FEEDBRIDGE_REDIS_TLS_VERIFY": "0",
        "FEEDBRIDGE_PUBLIC_URL": "https://feeds.example.org/bridge",
        "FEEDBRIDGE_TIMEOUT": "2,8",
        "FEEDBRIDGE_MIN_INTERVAL": "0.5",
        "FEEDBRIDGE_MAX_BYTES": "1000",
        "FEEDBRIDGE_FULLTEXT": "off",
        "FEEDBRIDGE_FULLTEXT_CONCURRENCY": "3",
        "FEEDBRIDGE_FULLTEXT_BUDGET": "4.5",
        "FEEDBRIDGE_REPAIR_PAGES": "25",
        "FEEDBRIDGE_LOG_LEVEL": "debug",
        "FEEDBRIDGE_LOG_FORMAT": "JSON",
        "FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.1",
    }
    assert set(env) == {setting.variable for setting in SETTINGS}
    settings = Settings.from_env(env)
    assert settings == Settings(
        upstream_url="http://127.0.0.1:9000",
        cache_ttl=60,
        min_refresh=30,
        categories_file=categories,
        db=tmp_path / "stories.db",
        redis_url="redis://127.0.0.1:6379/0",
        feed_size=100,
        keep_days=30,
        keep_stories=900,
        refresh=False,
        websub_hub="https://hub.example.org",
        redis_tls_verify=False,
        public_url="https://feeds.example.org/bridge",
        timeout=Timeout(2, 8),
        min_interval=0.5,
        max_bytes=1000,
        fulltext=False,
        fulltext_concurrency=3,
        fulltext_budget=4.5,
        repair_pages=25,
        log_level="DEBUG",
        log_format="json",
        forwarded_allow_ips=("10.0.0.0/8", "192.0.2.1"),
    )
    assert Settings.from_env({"FEEDBRIDGE_TIMEOUT": "3"}).timeout == Timeout(3, 3)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("UPSTREAM_URL", "kcnawatch.org", "http:// or https://"),
        ("UPSTREAM_URL", "ftp://kcnawatch.org", "http:// or https://"),
        ("UPSTREAM_URL", "https://kcnawatch.org/?x=1", "query"),
        ("CACHE_TTL", "abc", "whole number"),
        ("CACHE_TTL", "0", "from 1 to"),
        ("CACHE_TTL", "1" + "0" * 400, "from 1 to 315360000"),
        ("CACHE_TTL", "\u0663", "whole number"),
        ("FEED_SIZE", "501", "from 1 to 500"),
        ("KEEP_DAYS", "0", "from 1 to"),
        ("KEEP_DAYS", "9" * 401, "from 1 to 36500"),
        ("KEEP_STORIES", "9" * 20, "from 1 to 1000000"),
        ("MIN_REFRESH", "0", "from 1 to 3600"),
        ("MIN_REFRESH", "3601", "from 1 to 3600"),
        ("KEEP_STORIES", "many", "whole number"),
        ("REFRESH", "sometimes", "1 or 0"),
        ("WEBSUB_HUB", "hub.example.org", "http:// or https://"),
        ("CATEGORIES_FILE", "/no/such/file.toml", "no such file"),
        ("REDIS_URL", "http://localhost", "redis://"),
        ("TIMEOUT", "1,2,3", "CONNECT,TOTAL"),
        ("TIMEOUT", "20,5", "within the total"),
        ("TIMEOUT", "-1", "from 0.1 to 600"),
        ("TIMEOUT", "1e308", "from 0.1 to 600"),
        ("TIMEOUT", "1,1e308", "from 0.1 to 600"),
        ("MIN_INTERVAL", "nan", "from 0 to 3600"),
        ("MIN_INTERVAL", "1e308", "from 0 to 3600"),
        ("MIN_INTERVAL", "inf", "from 0 to 3600"),
        ("MAX_BYTES", "1e6", "whole number"),
        ("FULLTEXT", "maybe", "1 or 0"),
        ("FULLTEXT_BUDGET", "0", "from 0.1 to"),
        ("FULLTEXT_BUDGET", "1e308", "from 0.1 to 3600"),
        ("FULLTEXT_CONCURRENCY", "1000", "from 1 to 16"),
        ("MAX_BYTES", "9" * 30, "whole number"),
        ("UPSTREAM_URL", "http://127.0.0.1:notaport", "port from 1 to 65535"),
        ("UPSTREAM_URL", "http://127.0.0.1:99999", "port from 1 to 65535"),
        ("UPSTREAM_URL", "http://127.0.0.1:0", "port must be from 1 to 65535"),
        ("UPSTREAM_URL", "http://[::1", "[IPv6]"),
        ("REDIS_URL", "redis://:secret@127.0.0.1:notaport/0", "port from 1"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=abc", "socket_timeout"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?db=x", "'db'"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?sockettimeout=1", "'sockettimeout' is no option"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?ssl_keyfile=k", "'ssl_keyfile' is no option"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?retry=1", "'retry' is no option"),
        ("REDIS_URL", "rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe", "none, optional"),
        ("REDIS_URL", "redis://127.0.0.1:6379/zero", "database number"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=1e308", "at most 60 s"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_connect_timeout=nan", "at most 60 s"),
        ("REPAIR_PAGES", "0", "from 1 to 100"),
        ("REPAIR_PAGES", "101", "from 1 to 100"),
        ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("LOG_FORMAT", "xml", "logfmt or json"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({PREFIX + name: value})
    message = str(error.value)
    assert message.startswith(PREFIX + name + ": ") and says in message
    assert "\n" not in message


@pytest.mark.slow
def test_gunicorn_entry_point_stops_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import feedbridge.wsgi"],
        env={"FEEDBRIDGE_CACHE_TTL": "abc", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4
    assert result.stderr == (
        "feedbridge: FEEDBRIDGE_CACHE_TTL: must be a whole number from 1 to 315360000 (got 'abc')\n"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "redis://:secret@[::1/0"),
        ("REDIS_URL", "redis://:p@ss@secret@127.0.0.1:x/0"),
        ("REDIS_URL", "redis://:secret@127.0.0.1:notaport/0"),
        ("REDIS_URL", "redis://user:secret@127.0.0.1/0?socket_timeout=abc"),
        ("REDIS_URL", "redis://127.0.0.1/0?password=secret&db=x"),
        ("REDIS_URL", "rediss://secret@127.0.0.1/0?ssl_cert_reqs=maybe"),
        ("UPSTREAM_URL", "http://user:secret@[::1/"),
        ("UPSTREAM_URL", "https://user:secret@example.org:99999"),
        ("WEBSUB_HUB", "https://user:secret@hub.example.org/?x=1"),
        ("PUBLIC_URL", "https://:secret@feeds.example.org:notaport"),
    ],
)
def test_a_bad_url_never_shows_its_secret(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({PREFIX + name: value})
    message = str(error.value)
    assert message.startswith(PREFIX + name + ": ") and "\n" not in message
    assert "secret" not in message and "ss@" not in message and "***" in message


def test_a_good_redis_url_is_taken_whole() -> None:
    url = "rediss://u:p@redis.example.org:6380/2?socket_timeout=2.5&ssl_cert_reqs=none"
    assert Settings.from_env({PREFIX + "REDIS_URL": url}).redis_url == url
    assert Settings.from_env({PREFIX + "REDIS_URL": "unix:///run/redis.sock?db=1"}).redis_url


@pytest.mark.parametrize(
    ("env", "port", "workers"),
    [({}, 8000, 2), ({"PORT": "5000", "WEB_CONCURRENCY": " 3 "}, 5000, 3)],
)
def test_the_platforms_port_and_workers(env: dict[str, str], port: int, workers: int) -> None:
    assert (config.port(env), config.web_concurrency(env)) == (port, workers)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("PORT", "99999", "from 1 to 65535"), ("PORT", "abc", "whole number"),
     ("WEB_CONCURRENCY", "0", "from 1 to 64"), ("WEB_CONCURRENCY", "abc", "whole number")],
)  # fmt: skip
def test_a_bad_port_or_worker_count_is_one_line(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        config.port({name: value}) if name == "PORT" else config.web_concurrency({name: value})
    message = str(error.value)
    assert message.startswith(f"{name}: ") and says in message and message.endswith(f"{value!r})")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"), [("PORT", "99999"), ("WEB_CONCURRENCY", "0"), ("PORT", "x")]
)
def test_the_server_with_a_bad_port_or_worker_count_stops_with_one_line(
    name: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "feedbridge.server"],
        env={name: value, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"feedbridge: {name}: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "name", [s.variable for s in SETTINGS if isinstance(s.parse, config.Number)]
)
def test_every_number_says_its_range_in_the_help(name: str) -> None:
    assert re.search(r"; -?[\d.]+ to [\d.]+\)$", config.setting_descriptions()[name])


# -- categories ---------------------------------------------------------------------------


def test_built_in_categories() -> None:
    registry = load_registry()
    assert list(registry) == [
        "all", "kcna-kp-en", "kcna-co-jp-en", "vok-en", "pyongyang-times", "naenara-en",
        "rodong-sinmun-en", "minju-choson-en",
    ]  # fmt: skip
    vok = registry["vok-en"]
    assert vok.label == "Voice of Korea (EN)"
    assert vok.feed_title == "KCNA Watch — Voice of Korea (EN)"
    assert len(vok.paths) == 3 and all(p.startswith("/newstream/") for p in vok.paths)
    assert registry["all"].paths == ("/",) and registry["all"].label is None


def test_user_file_adds_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        """
[categories.uriminzokkiri]
title = "Uriminzokkiri"
label = "Uriminzokkiri"
language = "ko"
fulltext = false
anchors = ["/newstream/1700000000-123456789/x/"]

[categories.vok-en]
title = "VOK"
label = "Voice of Korea (EN)"
anchors = ["/newstream/1730538240-666693401/y/"]
""",
        encoding="utf-8",
    )
    registry = load_registry(path)
    assert registry["uriminzokkiri"].language == "ko"
    assert registry["uriminzokkiri"].fulltext is False
    assert registry["vok-en"].title == "VOK"
    assert registry["vok-en"].paths == ("/newstream/1730538240-666693401/y/",)
    assert "kcna-kp-en" in registry


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[categories.x\ntitle = 1", "line 1"),
        ("title = 'x'", "[categories.<slug>]"),
        ("[categories.Bad_Slug]\ntitle='x'\nlabel='y'\nanchors=['/a/']", "lowercase"),
        ("[categories.x]\nlabel='y'\nanchors=['/a/']", "'title'"),
        ("[categories.x]\ntitle='x'\nanchors=['/a/']", "'label'"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=[]", "'anchors'"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=['https://evil.example/a/']", "path"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=['//evil.example/a/']", "path"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=['/a/../../b/']", "path"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=['/a/']\ncolour='red'", "'colour'"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nanchors=['/a/']\nfulltext='yes'", "fulltext"),
        ("[categories.x]\ntitle='x'\nlabel='y'\nlisting='/'", "either"),
    ],
)
def test_a_malformed_categories_file_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_registry(path)
    message = str(error.value)
    assert message.startswith(f"FEEDBRIDGE_CATEGORIES_FILE: {path}")
    assert says in message and "\n" not in message


def test_a_websub_hub_needs_the_public_url_to_announce() -> None:
    with pytest.raises(ConfigError, match=r"^FEEDBRIDGE_WEBSUB_HUB: needs FEEDBRIDGE_PUBLIC_URL"):
        Settings.from_env({"FEEDBRIDGE_WEBSUB_HUB": "https://hub.example.org/"})
