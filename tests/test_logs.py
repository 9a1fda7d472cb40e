"""One log form for the app, the server and the access log: logfmt or JSON, UTC times."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from feedbridge.logs import Formatter
from feedbridge.text import logfmt, parse_logfmt
from tests.conftest import FakeSite
from tests.servers import WebServer, wait_until

UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def record(message: str, *, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord(
        "feedbridge.upstream",
        logging.INFO,
        __file__,
        1,
        message,
        None,
        exc_info,  # type: ignore[arg-type]
    )


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(), min_size=1))
def test_a_logfmt_line_reads_back(fields: dict[str, str]) -> None:
    assert parse_logfmt(logfmt(**fields)) == fields


@pytest.mark.parametrize("text", ["Booting worker with pid: 7", "x=1 and more", "", "a=1  b=2"])
def test_other_text_is_no_logfmt(text: str) -> None:
    assert parse_logfmt(text) is None


def test_an_event_gives_its_fields_after_time_level_and_logger() -> None:
    line = Formatter().format(record(logfmt(event="fetch", path="/x y")))
    fields = parse_logfmt(line)
    assert fields is not None and UTC_TIME.fullmatch(fields.pop("time"))
    assert fields == {
        "level": "info", "logger": "feedbridge.upstream", "event": "fetch", "path": "/x y",
    }  # fmt: skip


def test_other_text_is_the_message_without_colours() -> None:
    fields = parse_logfmt(Formatter().format(record('\x1b[32m"GET / HTTP/1.1" 200\x1b[0m')))
    assert fields is not None and fields["msg"] == '"GET / HTTP/1.1" 200'


def test_json_lines_hold_the_same_fields_and_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        line = Formatter("json").format(record("event=oops", exc_info=sys.exc_info()))
    fields = json.loads(line)
    assert UTC_TIME.fullmatch(fields["time"]) and fields["event"] == "oops"
    assert "RuntimeError: boom" in fields["error"] and "\n" not in line


@pytest.mark.slow
@pytest.mark.parametrize("form", ["logfmt", "json"])
def test_server_app_and_access_lines_share_one_form(site: FakeSite, form: str) -> None:
    env = {
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
        "FEEDBRIDGE_LOG_FORMAT": form,
    }
    with WebServer(env, workers=1) as server:
        assert requests.get(f"{server.url}/feeds/vok-en.atom", timeout=30).status_code == 200
        wait_until(lambda: "/feeds/vok-en.atom" in server.output(), "the access line")
        output = server.output()
    lines = output.splitlines()
    read = json.loads if form == "json" else parse_logfmt
    records = [read(line) for line in lines]
    assert all(records), lines
    assert all(UTC_TIME.fullmatch(r["time"]) for r in records)
    loggers = {r["logger"] for r in records}
    assert {"_granian", "feedbridge.access", "feedbridge.upstream"} <= loggers, lines
    assert "\x1b" not in output
