"""Real servers for tests and the benchmark: redis-server, and the app as the Procfile runs it.

Every server listens on 127.0.0.1 on a free port, is waited for with a bounded wait,
and is stopped by whoever started it (``stop()``, or the ``with`` block's end).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 20.0  # seconds a server gets to answer


class ServerError(RuntimeError):
    """A server did not start; the message says which and shows its output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerError(f"{what} not ready within {timeout:g}s")
        time.sleep(0.05)


class _Process:
    """A child process whose output goes to a file, shown when it fails to start."""

    name = "process"

    def __init__(self, argv: list[str], *, env: Mapping[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def _await(self, ready: Callable[[], bool]) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited at start:\n{self.output()}")
            return ready()

        try:
            wait_until(up, self.name)
        except ServerError:
            self.stop()
            raise

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()

    def __enter__(self) -> _Process:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class RedisServer(_Process):
    """``redis-server`` on a free loopback port, in memory only.

    With ``tls``, it speaks only TLS, with a self-signed certificate made for it (as a
    platform's Redis add-on does): ``url`` is then ``rediss://``.
    """

    name = "redis-server"

    def __init__(self, port: int | None = None, *, tls: bool = False) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.port = port or free_port()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="redis-")
        self._tls = tls
        listen = ["--port", str(self.port)]
        if tls:
            listen = ["--port", "0", "--tls-port", str(self.port), *self._certificate()]
        super().__init__(
            [
                executable, *listen, "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self._dir.name,
            ]
        )  # fmt: skip
        self._await(self._answers)

    def _certificate(self) -> list[str]:
        """A throwaway self-signed certificate and key (openssl), as redis-server options."""
        cert, key = Path(self._dir.name, "cert.pem"), Path(self._dir.name, "key.pem")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=redis.example", "-keyout", str(key), "-out", str(cert),
            ],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return [
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                if not self._tls:
                    return _pongs(raw)
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                with context.wrap_socket(raw) as wrapped:
                    return _pongs(wrapped)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        super().stop(sig)
        self._dir.cleanup()


def _pongs(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(16).startswith(b"+PONG")


class Dripper:
    """A site on 127.0.0.1 that answers every request with ``response``: its first
    ``fast`` bytes at once, then one byte every ``interval`` seconds.

    A connection is dropped after ``limit`` seconds, when the client goes away, or at
    ``stop()``; every wait is bounded by those.
    """

    def __init__(
        self, response: bytes, *, fast: int = 0, interval: float = 1.0, limit: float = 30.0
    ) -> None:
        self.response, self.fast, self.interval, self.limit = response, fast, interval, limit
        self.connections = 0
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        with self._listener:
            while not self._stopped.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                self.connections += 1
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.limit
        with conn:
            try:
                conn.settimeout(self.interval + 1)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                conn.sendall(self.response[: self.fast])
                for offset in range(self.fast, len(self.response)):
                    if self._stopped.wait(self.interval) or time.monotonic() > deadline:
                        return
                    conn.sendall(self.response[offset : offset + 1])
            except OSError:
                return  # the client went away

    def stop(self) -> None:
        self._stopped.set()
        self._acceptor.join(5)

    def __enter__(self) -> Dripper:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def procfile_argv(port: int) -> list[str]:
    """The Procfile's web command, on 127.0.0.1:``port`` (the Procfile's server listens on
    every address, on $PORT)."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    argv = shlex.split(line.removeprefix("web:"))
    assert argv[:3] == ["exec", "python", "-m"], argv
    # The python of this interpreter, whose environment has feedbridge's dependencies.
    return [sys.executable, *argv[2:], "--host", "127.0.0.1", "--port", str(port)]


class WebServer(_Process):
    """A server of the app on 127.0.0.1, with ``env`` added: as the Procfile runs it, or
    as ``argv(port)`` says (bench/qualify.py's candidates).

    ``boot_s`` is how long it took from start to its first answer to ``/healthz``.
    """

    name = "server"

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workers: int = 2,
        argv: Callable[[int], list[str]] = procfile_argv,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBRIDGE_")}
        self._dir = tempfile.TemporaryDirectory(prefix="server-")
        full_env = {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "WEB_CONCURRENCY": str(workers),
            "FEEDBRIDGE_DB": str(Path(self._dir.name) / "feedbridge.db"),
            **env,
        }
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server makes its own
        started = time.monotonic()
        super().__init__(argv(self.port), env=full_env)
        self._await(self._answers)
        self.boot_s = time.monotonic() - started

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        super().stop(sig)
        self._dir.cleanup()

    def workers(self) -> list[int]:
        """The pids of the server's workers (children of its master)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]
