"""A throwaway redis-server for the Redis bus tests, and buses on a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quantlab.adapters.redis import RedisStreamsBus
from quantlab.testing.redis_server import RedisServer

MakeRedisBus = Callable[..., RedisStreamsBus]


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def make_bus(redis_server: RedisServer, namespace: str) -> AsyncIterator[MakeRedisBus]:
    """Like `make_bus` of the in-process suite: buses (sharing this test's namespace) that are
    closed when the test ends."""
    made: list[RedisStreamsBus] = []

    def make(**kwargs: Any) -> RedisStreamsBus:
        kwargs.setdefault("namespace", namespace)
        bus = RedisStreamsBus(redis_server.url, **kwargs)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()
