"""What crawlers and browsers ask for by themselves: /robots.txt and /favicon.ico."""

from __future__ import annotations

import struct
from urllib.robotparser import RobotFileParser

from flask import Flask

OPERATOR_PAGES = {"/healthz", "/status", "/metrics"}


def test_robots_allow_the_feeds_and_the_front_page_only(app: Flask) -> None:
    response = app.test_client().get("/robots.txt")
    assert response.status_code == 200
    assert response.content_type == "text/plain; charset=utf-8"
    robots = RobotFileParser()
    robots.parse(response.text.splitlines())
    pages = {rule.rule for rule in app.url_map.iter_rules()} - {"/static/<path:filename>"}
    assert pages >= OPERATOR_PAGES
    for page in pages:
        url = f"http://localhost{page.replace('<name>', 'vok-en.atom')}"
        assert robots.can_fetch("AnyBot", url) is (page not in OPERATOR_PAGES), page


def test_the_favicon_is_an_icon_kept_for_a_day(app: Flask) -> None:
    with app.test_client().get("/favicon.ico") as response:  # a file from disk: closed after
        data = response.data
    assert response.status_code == 200
    assert response.content_type in ("image/vnd.microsoft.icon", "image/x-icon")
    reserved, kind, count = struct.unpack("<HHH", data[:6])
    assert (reserved, kind, count) == (0, 1, 1)
    assert data[22:30] == b"\x89PNG\r\n\x1a\n"  # one 32x32 PNG image
    assert response.headers["Cache-Control"] == "public, max-age=86400"
