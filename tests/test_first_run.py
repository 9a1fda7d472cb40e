"""What a new user meets on a first run: commands that touch only what they need, a
typo in a setting named, failures that say what they are, pages that tell the truth."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from werkzeug.test import Client

from feedbridge import logs
from feedbridge.cli import main
from feedbridge.config import SETTINGS, Settings, site_address
from feedbridge.errors import ConfigError
from feedbridge.redis_store import namespace
from feedbridge.server import AccessLog
from feedbridge.sqlite_store import SQLiteStore
from tests.conftest import FakeSite
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS:
        monkeypatch.delenv(setting.variable, raising=False)
    monkeypatch.delenv("PORT", raising=False)


@pytest.mark.usefixtures("clean_env")
def test_categories_touches_no_store_and_follows_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "7102")
    result = CliRunner().invoke(main, ["categories"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:7102/feeds/all.atom" in result.output
    assert list(tmp_path.iterdir()) == []  # no feedbridge.db


def test_a_command_closes_the_store_it_opened(
    site: FakeSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite removes the write-ahead log when the last connection closes."""
    db = tmp_path / "store.db"
    monkeypatch.setenv("FEEDBRIDGE_DB", str(db))
    monkeypatch.setenv("FEEDBRIDGE_UPSTREAM_URL", site.url)
    monkeypatch.setenv("FEEDBRIDGE_MIN_INTERVAL", "0")
    monkeypatch.setenv("FEEDBRIDGE_FULLTEXT", "0")
    result = CliRunner().invoke(main, ["refresh", "all"])
    assert result.exit_code == 0, result.output
    assert db.exists()
    assert not Path(f"{db}-wal").exists()


@pytest.mark.slow
def test_check_keeps_its_failure_through_a_closed_pipe(tmp_path: Path) -> None:
    """`feedbridge check | head -1`: the reader is gone before the first line."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")},
        "FEEDBRIDGE_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
        "FEEDBRIDGE_DB": str(tmp_path / "check.db"),
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_TIMEOUT": "2",
    }
    check = subprocess.Popen(
        [sys.executable, "-m", "feedbridge", "check"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert check.stdout is not None and check.stderr is not None
    check.stdout.close()
    with check.stderr:
        assert check.wait(timeout=120) == 1, check.stderr.read()


def test_an_unknown_setting_is_named_with_the_closest_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="feedbridge.config"):
        Settings.from_env({"FEEDBRIDGE_CACHETTL": "5", "FEEDBRIDGE_CACHE_TTL": "60"})
    [line] = caplog.messages
    assert line.startswith("FEEDBRIDGE_CACHETTL: ")
    assert "FEEDBRIDGE_CACHE_TTL" in line


def test_the_access_lines_json_has_numbers(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    with caplog.at_level(logging.INFO, logger="feedbridge.access"):
        Client(AccessLog(app)).get("/healthz")
    line = json.loads(logs.Formatter("json").format(caplog.records[-1]))
    assert (line["status"], line["bytes"]) == (200, 2)


def test_a_failure_says_which_while_backing_off_and_on_the_front_page(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(upstream_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    client = app.test_client()
    first = client.get("/feeds/vok-en.atom")
    again = client.get("/feeds/vok-en.atom")
    assert first.status_code in (502, 503), first.text
    assert "the site cannot be reached" in first.text
    assert again.status_code == 503
    assert "the site cannot be reached" in again.text
    assert "127.0.0.1" not in again.text
    page = client.get("/").text
    assert "No headlines yet: the site cannot be reached." in page


def test_the_footer_tells_the_truth(make_app: Callable[..., Flask]) -> None:
    page = make_app(keep_days=30).test_client().get("/").text
    assert "background" in page
    assert "30 days" in page
    assert "when a feed is asked for" not in page


def test_the_store_holds_one_site_whatever_its_spelling(
    site: FakeSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "one-site.db"
    SQLiteStore(db, site=site.url).close()
    spelling = site.url.replace("http://", "HTTP://") + "/"
    SQLiteStore(db, site=spelling).close()
    with pytest.raises(ConfigError, match=r"^FEEDBRIDGE_UPSTREAM_URL: .*FEEDBRIDGE_DB"):
        SQLiteStore(db, site="https://kcnawatch.org")
    monkeypatch.setenv("FEEDBRIDGE_DB", str(db))
    monkeypatch.setenv("FEEDBRIDGE_UPSTREAM_URL", "https://elsewhere.example")
    result = CliRunner().invoke(main, ["refresh"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_redis_keys_of_one_address_are_one_namespace() -> None:
    """The default site's keys stay where every deployment has them."""
    assert namespace("https://kcnawatch.org") == "feedbridge:0e6a34f5538a:"
    assert namespace("HTTPS://KCNAWatch.org:443/") == namespace("https://kcnawatch.org")
    assert namespace("http://kcnawatch.org") != namespace("https://kcnawatch.org")
    assert site_address("http://[::1]:80/a/") == "http://[::1]/a"
    assert site_address("http://host:8080") == "http://host:8080"
