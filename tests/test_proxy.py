"""Public URLs behind a proxy: forwarded headers trusted from FORWARDED_ALLOW_IPS only.

The last tests run the server from the Procfile and reach it from 127.0.0.2, a loopback
address that stands for a platform's router: not 127.0.0.1, so not trusted by default.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lxml.html
import pytest
from flask import Flask

from feedbridge.config import Settings
from feedbridge.errors import ConfigError
from feedbridge.proxy import ForwardedHeaders
from tests.conftest import FakeSite
from tests.feedspec import check_feed
from tests.servers import ROOT, ServerError, WebServer, free_port, wait_until
from tests.test_front_page import check_lists_every_feed

PUBLIC = "https://myfeeds.example.com/"
ROUTER = "127.0.0.2"  # a second loopback address: the platform's router
FORWARDED = {
    "Host": "myfeeds.example.com",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": "203.0.113.7",
}
FORMATS = ("rss", "atom", "json")


def test_forwarded_allow_ips_is_read_as_gunicorn_reads_it() -> None:
    assert Settings.from_env({}).forwarded_allow_ips == ("127.0.0.1", "::1")
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)
    settings = Settings.from_env({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.1"})
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.1")
    with pytest.raises(ConfigError, match=r"^FORWARDED_ALLOW_IPS: 'router' is no IP"):
        Settings.from_env({"FORWARDED_ALLOW_IPS": "router"})


@pytest.mark.parametrize(
    ("allowed", "peer", "trusted"),
    [
        (("127.0.0.1", "::1"), "127.0.0.1", True),
        (("127.0.0.1", "::1"), "::1", True),
        (("127.0.0.1", "::1"), "10.1.2.3", False),
        (("10.0.0.0/8",), "10.1.2.3", True),
        (("*",), "203.0.113.7", True),
        (("127.0.0.1",), "", False),
    ],
)
def test_trusted_peers(allowed: tuple[str, ...], peer: str, trusted: bool) -> None:
    assert ForwardedHeaders(lambda *_: [], allowed).trusts(peer) is trusted


def feed_links(app: Flask, peer: str, headers: dict[str, str]) -> str:
    client = app.test_client()
    environ = {"REMOTE_ADDR": peer}
    response = client.get("/feeds/vok-en.atom", headers=headers, environ_base=environ)
    assert response.status_code == 200, response.text
    root = check_feed(response.data, response.content_type)
    return root.find("{http://www.w3.org/2005/Atom}link[@rel='self']").get("href")


def test_a_router_is_believed_only_when_trusted(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    untrusted = feed_links(make_app(), "10.1.2.3", FORWARDED)
    assert untrusted == "http://myfeeds.example.com/feeds/vok-en.atom"
    trusted = make_app(forwarded_allow_ips=("*",))
    assert feed_links(trusted, "10.1.2.3", FORWARDED) == f"{PUBLIC}feeds/vok-en.atom"


def test_forwarded_host_only_from_a_trusted_peer(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    headers = {"X-Forwarded-Host": "elsewhere.example", "X-Forwarded-Proto": "https"}
    app = make_app(forwarded_allow_ips=("10.0.0.0/8",))
    assert feed_links(app, "10.9.9.9", headers) == "https://elsewhere.example/feeds/vok-en.atom"
    assert feed_links(app, "192.0.2.9", headers) == "http://localhost/feeds/vok-en.atom"


@pytest.mark.parametrize(("proto", "scheme"), [("https", "https"), ("HTTP", "http"), ("0", "http")])
def test_a_forwarded_scheme_is_http_or_https(
    make_app: Callable[..., Flask], proto: str, scheme: str
) -> None:
    headers = {"X-Forwarded-Proto": proto}
    link = feed_links(make_app(), "127.0.0.1", headers)
    assert link == f"{scheme}://localhost/feeds/vok-en.atom"


def test_public_url_wins_over_forwarded_headers(
    make_app: Callable[..., Flask], site: FakeSite
) -> None:
    app = make_app(forwarded_allow_ips=("*",), public_url="https://feeds.example.org/kcna")
    link = feed_links(app, "10.1.2.3", FORWARDED)
    assert link == "https://feeds.example.org/kcna/feeds/vok-en.atom"


# --- the server, as the Procfile runs it ------------------------------------------------


def get_from(
    source: str, server: WebServer, path: str, headers: dict[str, str]
) -> tuple[str, bytes]:
    """GET ``path`` with a connection from ``source``; the Content-Type and the body."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", server.port, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        return response.getheader("Content-Type", ""), body
    finally:
        connection.close()


def site_env(site: FakeSite, **more: str) -> dict[str, str]:
    """The fake site, and the test's own store (tests/conftest.py): a store holds one
    site, and the working directory's would be every test's."""
    return {
        "FEEDBRIDGE_DB": os.environ["FEEDBRIDGE_DB"],
        "FEEDBRIDGE_UPSTREAM_URL": site.url,
        "FEEDBRIDGE_MIN_INTERVAL": "0",
        "FEEDBRIDGE_FULLTEXT": "0",
        **more,
    }


@pytest.mark.slow
def test_behind_a_router_every_link_is_https(site: FakeSite) -> None:
    with WebServer(site_env(site, FORWARDED_ALLOW_IPS="*"), workers=1) as server:
        for fmt in FORMATS:
            url = f"{PUBLIC}feeds/vok-en.{fmt}"
            content_type, body = get_from(ROUTER, server, f"/feeds/vok-en.{fmt}", FORWARDED)
            check_feed(body, content_type, self_url=url)
            assert b"http://myfeeds" not in body.replace(b"\\/", b"/")
        content_type, body = get_from(ROUTER, server, "/feeds.opml", FORWARDED)
        outlines = check_feed(body, content_type).iter("outline")  # type: ignore[union-attr]
        urls = {outline.get("xmlUrl") for outline in outlines} - {None}
        assert f"{PUBLIC}feeds/vok-en.atom" in urls
        assert all(url.startswith(PUBLIC) for url in urls)
        _, body = get_from(ROUTER, server, "/", FORWARDED)
        check_lists_every_feed(lxml.html.fromstring(body), PUBLIC)
        # The access log names the reader, not the router.
        line = "event=access client=203.0.113.7 method=GET path=/feeds.opml"
        wait_until(lambda: line in server.output(), "the access line")


@pytest.mark.slow
def test_without_the_setting_a_router_is_not_believed(site: FakeSite) -> None:
    with WebServer(site_env(site), workers=1) as server:
        _, body = get_from(ROUTER, server, "/feeds/vok-en.json", FORWARDED)
        assert json.loads(body)["feed_url"] == "http://myfeeds.example.com/feeds/vok-en.json"
        headers = {**FORWARDED, "X-Forwarded-Host": "elsewhere.example"}
        _, body = get_from(ROUTER, server, "/feeds.opml", headers)
        assert b"elsewhere.example" not in body


@pytest.mark.slow
def test_procfile_line_under_a_shell_is_the_server(site: FakeSite, tmp_path: Path) -> None:
    """A platform runs the line with ``sh -c`` and signals that one process: it is the
    server's master, which stops its workers and exits 0."""
    command = (ROOT / "Procfile").read_text().strip().removeprefix("web:")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")},
        **site_env(site),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "log").open("wb")
    shell = subprocess.Popen(
        [shutil.which("sh") or "/bin/sh", "-c", command], env=env, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _answers(port, shell), "the Procfile's line", timeout=60)
        argv = Path(f"/proc/{shell.pid}/cmdline").read_text().split("\0")
        assert Path(argv[0]).name.startswith("python") and argv[1:3] == [
            "-m",
            "feedbridge.server",
        ], argv
        shell.send_signal(signal.SIGTERM)  # to that process only, not its group
        assert shell.wait(timeout=30) == 0
        assert not Path(f"/proc/{shell.pid}").exists()
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait(timeout=10)
        log.close()


def _answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise ServerError(f"exited with {process.returncode}")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize(("allowed", "scheme"), [("*", "https"), (None, "http")])
def test_feedbridge_serve_reads_forwarded_allow_ips_as_gunicorn_does(
    site: FakeSite, tmp_path: Path, allowed: str | None, scheme: str
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")},
        **site_env(site),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("FORWARDED_ALLOW_IPS", None)
    if allowed is not None:
        env["FORWARDED_ALLOW_IPS"] = allowed
    log = tmp_path / "log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "feedbridge", "serve", "--port", str(port)], env=env,
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_until(lambda: _answers(port, serve), "feedbridge serve", timeout=60)
        connection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=30, source_address=(ROUTER, 0)
        )
        connection.request("GET", "/feeds/vok-en.json", headers=FORWARDED)
        feed = json.loads(connection.getresponse().read())
        connection.close()
        assert feed["feed_url"] == f"{scheme}://myfeeds.example.com/feeds/vok-en.json"
        client = "203.0.113.7" if allowed else ROUTER
        line = f"event=access client={client} method=GET path=/feeds/vok-en.json status=200"
        wait_until(lambda: line in log.read_text(), "the access line")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
