"""Security: every server quantlab starts listens on loopback only.

Checked by the sockets the processes actually hold (psutil), not by their arguments:

* ``quantlab dashboard`` with its default configuration (panel serve);
* a sweep's Dask `LocalCluster` (scheduler, its diagnostics dashboard, nannies, workers) and
  the Jupyter kernels its workers run notebooks on, watched while a sweep runs;
* ``quantlab live`` (a live engine: it should listen on nothing at all);
* the test services (`RedisServer`, `PostgresServer`, `ChromaServer`);
* the fake vendor servers (Alpaca data and trading, Binance and Coinbase market data and
  trading, Coinbase Advanced Trade, Polygon, the news feed).

Listening beyond loopback (0.0.0.0, ::, an interface address) counts as failed. That a
non-loopback address needs auth where quantlab owns the server (the dashboard) is checked in
``test_security_dashboard.py``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import psutil

from quantlab.config import load_settings
from quantlab.runs.sweep import sweep
from quantlab.testing.chroma_server import ChromaServer
from quantlab.testing.dashboard import DashboardStack, stop
from quantlab.testing.fakes.alpaca import FakeAlpaca
from quantlab.testing.fakes.alpaca_trading import FakeAlpacaTrading
from quantlab.testing.fakes.binance import FakeBinance
from quantlab.testing.fakes.ccxt_trading import FakeBinanceTrading, FakeCoinbaseTrading
from quantlab.testing.fakes.coinbase import FakeCoinbase
from quantlab.testing.fakes.coinbase_ccxt import FakeCoinbaseAdvancedTrade
from quantlab.testing.fakes.news import FakeNews
from quantlab.testing.fakes.polygon import FakePolygon
from quantlab.testing.notebooks import write_notebook
from quantlab.testing.postgres_server import PostgresServer
from quantlab.testing.redis_server import RedisServer
from quantlab.testing.reliability import record

Socket = tuple[int, str, str, int]  # pid, kind (tcp/udp), ip, port


def _sockets(pids: Iterable[int]) -> set[Socket]:
    """The listening TCP sockets and bound UDP sockets of `pids`."""
    out: set[Socket] = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections("inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            tcp = c.type == socket.SOCK_STREAM
            if (tcp and c.status == psutil.CONN_LISTEN) or (not tcp and c.laddr):
                out.add((pid, "tcp" if tcp else "udp", c.laddr.ip, c.laddr.port))
    return out


def _tree(pid: int) -> list[int]:
    try:
        return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _on_port(port: int) -> int:
    """The process listening on 127.0.0.1:`port` (or anywhere on it)."""
    for c in psutil.net_connections("inet"):
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
            return c.pid
    raise AssertionError(f"nothing listens on port {port}")


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return addr.is_loopback or (mapped is not None and mapped.is_loopback)


class Census:
    """Servers checked, their sockets, and the sockets beyond loopback."""

    def __init__(self) -> None:
        self.servers: dict[str, set[Socket]] = {}

    def add(self, server: str, sockets: set[Socket]) -> None:
        self.servers[server] = sockets

    @property
    def beyond(self) -> dict[str, list[Socket]]:
        return {
            name: [s for s in socks if not _loopback(s[2])]
            for name, socks in self.servers.items()
            if any(not _loopback(s[2]) for s in socks)
        }


def _fakes() -> list[tuple[str, AbstractAsyncContextManager[Any]]]:
    return [
        ("FakeAlpaca (data ws + REST)", FakeAlpaca()),
        ("FakeAlpacaTrading", FakeAlpacaTrading()),
        ("FakeBinance (ws + REST)", FakeBinance()),
        ("FakeBinanceTrading", FakeBinanceTrading()),
        ("FakeCoinbaseTrading", FakeCoinbaseTrading()),
        ("FakeCoinbase (ws + REST)", FakeCoinbase()),
        ("FakeCoinbaseAdvancedTrade", FakeCoinbaseAdvancedTrade()),
        ("FakePolygon (ws + REST)", FakePolygon()),
        ("FakeNews", FakeNews()),
    ]


async def _census_of_fakes(census: Census) -> None:
    me = os.getpid()
    for name, fake in _fakes():
        before = _sockets([me])
        async with fake:
            census.add(name, _sockets([me]) - before)


def _census_of_a_sweep(census: Census, tmp: Path) -> None:
    """A one-run sweep on a LocalCluster, its process tree watched while it runs."""
    me = os.getpid()
    before = _sockets([me])
    seen: set[Socket] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_sockets(_tree(me)))
            time.sleep(0.1)

    notebook = write_notebook(
        tmp / "idle.ipynb",
        "x = 1\nrun_id = None\nrun_dir = None",
        "import time\ntime.sleep(2.0)",
    )
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        settings = load_settings(storage={"runs_dir": str(tmp / "runs")})
        result = sweep([{"x": 1}], settings=settings, notebook=notebook, workers=1, progress=False)
    finally:
        done.set()
        watcher.join(timeout=5)
    assert result.ok, result.failed
    census.add("sweep: Dask LocalCluster, workers and notebook kernels", seen - before)


def _census_of_a_command(census: Census, name: str, tmp: Path, *args: str) -> None:
    """Run ``quantlab ARGS`` for a few seconds, watching its process tree."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTLAB_")}
    env["QUANTLAB_STORAGE__STATE_DIR"] = str(tmp / "state")
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantlab.cli", *args],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen: set[Socket] = set()
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(_sockets(_tree(proc.pid)))
            time.sleep(0.1)
    finally:
        stop(proc)
    assert proc.returncode == 0, f"quantlab {' '.join(args)} exited {proc.returncode}"
    census.add(name, seen)


def test_every_server_quantlab_starts_listens_on_loopback_only(
    tmp_path: Path,
    redis_server: RedisServer,
    postgres: PostgresServer,
    chroma_server: ChromaServer,
) -> None:
    """Counts servers with a socket beyond loopback.

    The check can fail: it reads the sockets the processes hold, so a server that bound
    0.0.0.0 (Dask's LocalCluster does for its dashboard unless told otherwise, see
    `quantlab.runs.sweep`) is counted whatever its arguments said; a server where no
    socket is found fails the test too (the check would have seen nothing)."""
    import asyncio

    census = Census()
    stack = DashboardStack(tmp_path / "dashboard")
    (tmp_path / "dashboard").mkdir()
    try:
        stack.dashboard()
        census.add("quantlab dashboard (panel serve)", _sockets(_tree(stack.procs[0].pid)))
    finally:
        stack.close()
    _census_of_a_sweep(census, tmp_path)
    _census_of_a_command(
        census, "quantlab live (engine: listens on nothing)", tmp_path / "live",
        "live", "--duration", "2", "-q",
    )  # fmt: skip
    for name, port in (
        ("RedisServer (redis-server)", redis_server.port),
        ("PostgresServer (postgres)", postgres.port),
        ("ChromaServer (chroma run)", chroma_server.port),
    ):
        census.add(name, _sockets(_tree(_on_port(port))))
    asyncio.run(_census_of_fakes(census))

    assert _loopback("::ffff:127.0.0.1")
    assert not _loopback("0.0.0.0")  # noqa: S104 (the check's own sanity)
    assert not _loopback("::")
    beyond = census.beyond
    sockets = sum(len(s) for s in census.servers.values())
    record(
        "security",
        "servers quantlab starts listen on loopback only (dashboard, Dask, services, fakes)",
        trials=len(census.servers),
        unit="servers",
        failed=len(beyond),
        failed_what="servers listening beyond loopback",
        detail=(
            f"{sockets} listening sockets: "
            + ", ".join(f"{name} {len(socks)}" for name, socks in census.servers.items())
            + f"; beyond loopback: {beyond or 'none'}"
        ),
    )
    assert beyond == {}, beyond
    silent = [n for n, s in census.servers.items() if not s and "listens on nothing" not in n]
    assert silent == [], f"no listening socket found for {silent}"
    engine = census.servers["quantlab live (engine: listens on nothing)"]
    assert engine == set(), f"the live engine listens: {engine}"
