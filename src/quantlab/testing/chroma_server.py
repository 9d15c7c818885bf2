"""A throwaway ``chroma run`` server for tests and benchmarks: 127.0.0.1, a free port, a temp dir.

    with ChromaServer() as server:
        url = server.url   # http://127.0.0.1:<port>  (patterns.url)

The server runs as a child process (the ``chroma`` script of this Python's environment) and is
terminated, then killed if it lingers, on exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from quantlab.testing.net import free_port
from quantlab.testing.services import LocalServer, stop_process


def chroma_binary() -> Path | None:
    """The ``chroma`` command next to this Python, or None if chromadb's CLI is missing."""
    found = Path(sys.executable).with_name("chroma")
    return found if found.exists() else None


def heartbeat(url: str) -> bool:
    """True if a Chroma server answers its v2 heartbeat at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as resp:  # noqa: S310
            return "nanosecond heartbeat" in json.loads(resp.read())
    except OSError:
        return False


class ChromaServer(LocalServer):
    """Start ``chroma run`` on 127.0.0.1 and a free port; `stop` (or leaving ``with``) ends it."""

    def __init__(self, *, port: int | None = None) -> None:
        binary = chroma_binary()
        if binary is None:
            raise RuntimeError(f"no chroma command next to {sys.executable}")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ChromaServer:
        self._dir = tempfile.TemporaryDirectory(prefix="ql-chroma-")
        root = Path(self._dir.name)
        log = (root / "server.log").open("wb")
        self._proc = subprocess.Popen(  # noqa: S603 (fixed arguments, our environment's CLI)
            [
                str(self.binary),
                "run",
                "--path",
                str(root / "data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not heartbeat(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = (root / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"chroma run not ready at {self.url}:\n{output}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 15)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
