"""Fixtures: the local fakes of binance and coinbase, started per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quantlab.testing.fakes.binance import FakeBinance
from quantlab.testing.fakes.coinbase_ccxt import FakeCoinbaseAdvancedTrade


@pytest.fixture
async def binance() -> AsyncIterator[FakeBinance]:
    async with FakeBinance(ping_interval_s=None) as fake:
        yield fake


@pytest.fixture
async def coinbase() -> AsyncIterator[FakeCoinbaseAdvancedTrade]:
    async with FakeCoinbaseAdvancedTrade(heartbeat_interval_s=None) as fake:
        yield fake
