"""A throwaway local ``redis-server`` for tests: no persistence, a free port, a temp dir.

    with RedisServer() as server:
        url = server.url   # redis://127.0.0.1:<port>/0

The server runs in the foreground as a child process and is terminated on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from quantlab.testing.net import free_port
from quantlab.testing.services import LocalServer, stop_process


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or None if it is not installed."""
    return shutil.which("redis-server")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(LocalServer):
    """Start ``redis-server`` on 127.0.0.1 and a free port; `stop` (or leaving ``with``) ends it."""

    def __init__(self, *, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._dir = tempfile.TemporaryDirectory(prefix="ql-redis-")
        workdir = Path(self._dir.name)
        log = (workdir / "redis.log").open("wb")
        self._proc = subprocess.Popen(  # noqa: S603 (fixed arguments, a local binary)
            [
                str(self.binary),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = (workdir / "redis.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{output}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 5)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
