"""The servers the tests start (`RedisServer`, `PostgresServer`, `ChromaServer`): each runs
from a temp folder with a known prefix, and each fixture stops its own server, failed test or
not. A test process killed outright (a timeout, SIGKILL) cannot, so ``make test`` runs this
module after pytest, whatever pytest's exit status, to stop what was left:

    python -m quantlab.testing.services --stop-leftovers
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from types import TracebackType
from typing import Self

PREFIXES = ("/ql-redis-", "/ql-pg-", "/ql-chroma-")


class LocalServer:
    """What the throwaway servers share: ``with server:`` starts it and always stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a server's process, wait, SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def leftovers() -> list[tuple[int, str]]:
    """(pid, command line) of every running process started from a test server's folder (in
    its command line, or as its working directory: redis-server rewrites its title)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(prefix in cmdline or prefix in cwd + "/" for prefix in PREFIXES):
            found.append((int(entry), f"{cmdline} (in {cwd})"))
    return found


def stop_leftovers(timeout: float = 10.0) -> list[tuple[int, str]]:
    """SIGTERM every leftover server, SIGKILL those still there after `timeout` seconds."""
    procs = leftovers()
    for pid, _ in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    remaining = {pid for pid, _ in procs}
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if os.path.exists(f"/proc/{pid}")}
        time.sleep(0.1)
    for pid in remaining:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop-leftovers", action="store_true", help="stop leftover servers")
    args = parser.parse_args()
    procs = stop_leftovers() if args.stop_leftovers else leftovers()
    verb = "stopped" if args.stop_leftovers else "running"
    for pid, cmdline in procs:
        print(f"{verb} leftover test server {pid}: {cmdline[:120]}")


if __name__ == "__main__":
    main()
