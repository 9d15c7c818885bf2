"""`make test` finds the servers a killed test process left behind by their folders."""

from __future__ import annotations

import pytest

from quantlab.testing.redis_server import RedisServer, redis_server_binary
from quantlab.testing.services import leftovers

pytestmark = pytest.mark.integration


@pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")
def test_a_running_test_server_is_found_and_a_stopped_one_is_not() -> None:
    # Finding only (stopping would stop the servers of tests running beside this one).
    server = RedisServer().start()
    try:
        assert server._proc is not None
        pid = server._proc.pid
        found = dict(leftovers())
        assert pid in found
        assert "/ql-redis-" in found[pid]
    finally:
        server.stop()
    assert pid not in dict(leftovers())
