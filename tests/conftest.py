"""Shared fixtures: real market data shipped with the package, and a clean environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantlab.testing.chroma_server import ChromaServer
from quantlab.testing.dashboard import DashboardStack
from quantlab.testing.postgres_server import PostgresServer
from quantlab.testing.redis_server import RedisServer, redis_server_binary

DATA = Path(__file__).resolve().parents[1] / "src" / "quantlab" / "_data" / "market"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(autouse=True)
def _no_quantlab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's QUANTLAB_* settings (the reliability report's file,
    which is not a setting, is kept)."""
    import os

    from quantlab.testing.reliability import ENV

    for key in list(os.environ):
        if key.startswith("QUANTLAB_") and key != ENV:
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _own_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Live runs keep their order book and breaker state in `storage.state_dir`, which
    outlives a run: each test gets its own (subprocesses inherit it through the env)."""
    monkeypatch.setenv("QUANTLAB_STORAGE__STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (one per test worker); `.database()` makes
    a fresh database and returns its URL."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server on 127.0.0.1 (one per test worker), stopped at the end."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    """A throwaway ``chroma run`` server on 127.0.0.1 (one per test worker), stopped at the end."""
    with ChromaServer() as server:
        yield server


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DashboardStack]:
    """Engine (one process or one per role) and dashboard subprocesses, always stopped."""
    s = DashboardStack(tmp_path)
    try:
        yield s
    finally:
        s.close()
