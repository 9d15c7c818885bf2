"""A live engine (one process, or one per role) and `quantlab dashboard` as subprocesses, for
end-to-end and browser tests and benchmarks.

`DashboardStack` owns a working folder, an environment without the developer's QUANTLAB_*
settings, and the subprocesses it starts, which `close()` always stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from quantlab.testing.net import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

LIVE_TOML = """\
[strategy]
name = "ema_cross"
id = "ema"
[features]
fast = 3
slow = 8
[[live.sources]]
type = "synthetic"
symbols = {symbols}
rate = {rate}
"""


# Appended to a configuration: the Redis bus, for a multi-process engine (`roles`).
REDIS_BUS_TOML = """\
[bus]
backend = "redis"
url = "{url}"
namespace = "{namespace}"
"""


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill: never leave a subprocess behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class DashboardStack:
    """Working folder, env and subprocesses of one engine + dashboard."""

    def __init__(self, tmp: Path, env_extra: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTLAB_")}
        self.env["QUANTLAB_STORAGE__STATE_DIR"] = str(tmp / "state")
        self.env["QUANTLAB_STORAGE__RUNS_DIR"] = str(tmp / "runs")
        self.env.update(env_extra or {})
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.port = free_port()

    def _spawn(
        self, args: list[str], log: str, env_extra: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = (self.tmp / log).open("wb")
        self.logs.append(out)
        proc = subprocess.Popen(  # noqa: S603 (our own interpreter and CLI)
            [sys.executable, "-m", "quantlab.cli", *args],
            cwd=self.tmp, env={**self.env, **(env_extra or {})}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def engine(self, *, symbols: int = 5, rate: int = 500, duration: int = 120) -> None:
        cfg = self.tmp / "live.toml"
        cfg.write_text(LIVE_TOML.format(symbols=symbols, rate=rate))
        self._spawn(["live", "-c", str(cfg), "--duration", str(duration), "-q"], "engine.log")

    def roles(
        self,
        config: str,
        roles: tuple[str, ...] = ("execution", "strategy", "ingest"),
        *,
        duration: int = 120,
    ) -> dict[str, subprocess.Popen[bytes]]:
        """A multi-process engine: one ``quantlab live --role R`` per role, started in the
        order given, on the configuration text `config` (its bus must be Redis). Each role's
        output goes to ``<role>.log``."""
        return {role: self.role(role, config, duration=duration) for role in roles}

    def role(
        self,
        role: str,
        config: str,
        *,
        duration: int = 120,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """One ``quantlab live --role R`` on its own copy of the configuration text `config`
        (``<role>.toml``), with `env_extra` added to its environment (``PYTHONPATH`` of
        another source tree: another code version). Its output goes to ``<role>.log``."""
        cfg = self.tmp / f"{role}.toml"
        cfg.write_text(config)
        args = ["live", "-c", str(cfg), "--role", role, "--duration", str(duration), "-q"]
        return self._spawn(args, f"{role}.log", env_extra)

    def log(self, name: str) -> str:
        """The tail of a subprocess's output (``engine``, ``dashboard`` or a role's)."""
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def wait_snapshot(self, timeout: float = 30) -> Path:
        path = self.tmp / "state" / "paper" / "monitor.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no snapshot: {(self.tmp / 'engine.log').read_text()[-2000:]}")
            time.sleep(0.2)
        return path

    def dashboard(self, timeout: float = 40) -> str:
        proc = self._spawn(["dashboard", "--port", str(self.port)], "dashboard.log")
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError((self.tmp / "dashboard.log").read_text()[-3000:])
            try:
                if httpx.get(f"{base}/liveness", timeout=2).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError((self.tmp / "dashboard.log").read_text()[-3000:])
            time.sleep(0.25)

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for f in self.logs:
            f.close()
