"""AlpacaDataSource (alpaca-py's StockDataStream / CryptoDataStream, and the raw websocket
transport) against the local fake of Alpaca's msgpack stream, alone and through Multiplexer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import msgspec
import polars as pl
import pytest

from quantlab.adapters.alpaca import AlpacaDataConfig, AlpacaDataSource
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import (
    MALFORMED_MSGPACK,
    OVERSIZED_FRAME,
    TRUNCATED_FRAME,
    UNKNOWN_MESSAGE,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Events,
    Heartbeat,
    SourceItem,
)
from quantlab.ingest.multiplexer import Backoff, Multiplexer
from quantlab.ingest.ports import MarketDataSource, SourceDisconnected
from quantlab.testing.fakes.alpaca import CRYPTO_PATH, STOCK_PATH, FakeAlpaca, pack

pytestmark = pytest.mark.filterwarnings(
    "ignore:websockets.legacy is deprecated:DeprecationWarning"  # alpaca-py 0.44 imports it
)

TRANSPORTS = ["alpaca-py", "websocket"]
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
FAST = Backoff(initial=0.01, maximum=0.05)


def trade(i: int, symbol: str = "AAPL", **extra: Any) -> dict[str, Any]:
    return {
        "T": "t",
        "S": symbol,
        "i": i,
        "x": "V",
        "p": 100.0 + i,
        "s": i,
        "t": T0 + i * 1000,
        **extra,
    }


def quote(i: int, symbol: str = "AAPL") -> dict[str, Any]:
    return {"T": "q", "S": symbol, "bp": 99.5, "bs": 3, "ap": 100.5, "as": 4, "t": T0 + i * 1000}


def bar(i: int, symbol: str = "AAPL") -> dict[str, Any]:
    return {
        "T": "b", "S": symbol, "o": 100.0, "h": 101.0, "l": 99.0, "c": 100.5, "v": 4200,
        "t": T0 + i * 60_000_000_000, "n": 12, "vw": 100.2,
    }  # fmt: skip


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca() as server:
        yield server


def source(
    fake: FakeAlpaca, transport: str = "alpaca-py", *, crypto: bool = False, **kw: Any
) -> AlpacaDataSource:
    config = AlpacaDataConfig(
        asset_class="crypto" if crypto else "equity",
        symbols=("BTC/USD",) if crypto else ("AAPL",),
        stream_url=fake.stream_url(CRYPTO_PATH if crypto else STOCK_PATH),
        transport=transport,  # type: ignore[arg-type]
        open_timeout_s=5.0,
    )
    return AlpacaDataSource(config, kw.pop("key", "test-key"), kw.pop("secret", "test-secret"))


def frames(items: list[SourceItem], kind: EventType) -> pl.DataFrame:
    parts = [i.frame for i in items if isinstance(i, Events) and i.kind == kind]
    return pl.concat(parts) if parts else pl.DataFrame()


def trade_ids(items: list[SourceItem]) -> list[int]:
    trades = frames(items, EventType.TRADE)
    return [int(x) for x in trades["trade_id"]] if trades.height else []


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def take(
    stream: AsyncIterator[SourceItem], until: Callable[[list[SourceItem]], bool]
) -> list[SourceItem]:
    items: list[SourceItem] = []
    async with asyncio.timeout(5):
        async for item in stream:
            items.append(item)
            if until(items):
                break
    await stream.aclose()  # type: ignore[attr-defined]
    return items


@contextlib.asynccontextmanager
async def running(mux: Multiplexer, items: list[SourceItem]) -> AsyncIterator[None]:
    async def sink(name: str, item: SourceItem) -> None:
        items.append(item)

    task = asyncio.create_task(mux.run(sink))
    try:
        yield
    finally:
        mux.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stock_trades_quotes_bars_arrive_as_events(fake: FakeAlpaca, transport: str) -> None:
    src = source(fake, transport)
    assert isinstance(src, MarketDataSource)
    assert (src.name, src.asset_class, src.total_rows) == ("alpaca-equity", "equity", None)
    assert "test-secret" not in repr(src)
    assert "test-key" not in repr(src)
    fake.push(trade(1), quote(2), bar(3))
    fake.push(trade(4))
    got = await take(src.stream(), lambda items: 4 in trade_ids(items))

    auth, subscribe = fake.sent_by_clients("auth"), fake.sent_by_clients("subscribe")
    assert auth == [{"action": "auth", "key": "test-key", "secret": "test-secret"}]
    assert [{k: v for k, v in s.items() if v} for s in subscribe] == [
        {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["AAPL"]}
    ]
    trades = frames(got, EventType.TRADE)
    assert trades["trade_id"].to_list() == ["1", "4"]
    assert trades["price"].to_list() == [101.0, 104.0]
    assert trades["size"].to_list() == [1.0, 4.0]
    assert trades["aggressor"].to_list() == [Aggressor.UNKNOWN] * 2
    assert trades["timestamp"][0] == dt.datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=dt.UTC)
    q = frames(got, EventType.QUOTE).row(0, named=True)
    assert (q["symbol"], q["bid"], q["ask"], q["bid_size"], q["ask_size"]) == (
        "AAPL", 99.5, 100.5, 3.0, 4.0,
    )  # fmt: skip
    b = frames(got, EventType.BAR).row(0, named=True)
    assert (b["open"], b["high"], b["low"], b["close"], b["volume"]) == (100, 101, 99, 100.5, 4200)
    assert b["timestamp"] == dt.datetime(2023, 11, 14, 22, 16, 20, tzinfo=dt.UTC)
    heartbeats = [i for i in got if isinstance(i, Heartbeat)]
    assert len(heartbeats) == (1 if transport == "websocket" else 0)  # the subscription ack


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_crypto_on_its_own_path(fake: FakeAlpaca, transport: str) -> None:
    src = source(fake, transport, crypto=True)
    assert (src.name, src.asset_class) == ("alpaca-crypto", "crypto")
    fake.push(trade(1, "BTC/USD", tks="B", t=T0 + 123), quote(2, "BTC/USD"), path=CRYPTO_PATH)
    got = await take(src.stream(), lambda items: bool(frames(items, EventType.QUOTE).height))
    assert fake.sent_by_clients("subscribe", CRYPTO_PATH)[0]["trades"] == ["BTC/USD"]
    trades = frames(got, EventType.TRADE)
    assert trades["symbol"].to_list() == ["BTC/USD"]
    ts = trades["timestamp"].cast(pl.Int64)[0]
    if transport == "websocket":  # our parser reads the taker side and keeps nanoseconds
        assert trades["aggressor"].to_list() == [Aggressor.BUYER]
        assert ts == T0 + 123
    else:  # alpaca-py's Trade model has no taker side, and its datetimes stop at microseconds
        assert trades["aggressor"].to_list() == [Aggressor.UNKNOWN]
        assert ts == T0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_failure_raises_source_disconnected(fake: FakeAlpaca, transport: str) -> None:
    src = source(fake, transport, secret="wrong")  # noqa: S106
    with pytest.raises(SourceDisconnected, match="auth failed"):
        await take(src.stream(), lambda items: True)
    assert fake.connections == 1  # alpaca-py's own reconnect loop was stopped


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unreachable_server_raises_source_disconnected(transport: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/v2/iex"
    config = AlpacaDataConfig(symbols=("AAPL",), stream_url=url, transport=transport)  # type: ignore[arg-type]
    with pytest.raises(SourceDisconnected, match=str(port)):
        await take(AlpacaDataSource(config, "k", "s").stream(), lambda items: True)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_disconnect_mid_stream_reconnects_and_resubscribes(
    fake: FakeAlpaca, transport: str
) -> None:
    """alpaca-py would reconnect by itself, after 1-30 s and unseen; the source stops it and
    raises SourceDisconnected, so the multiplexer counts the reconnect and applies its backoff."""
    fake.resend_last = 2  # like a venue resending a snapshot: duplicates ingestion must drop
    src = source(fake, transport)
    mux = Multiplexer([src], backoff=FAST, stale_after_s=None)
    items: list[SourceItem] = []
    fake.push(trade(1), trade(2))
    fake.push(trade(3))
    async with running(mux, items):
        await eventually(lambda: set(trade_ids(items)) == {1, 2, 3})
        fake.drop_connections()
        await eventually(
            lambda: fake.connections == 2 and len(fake.sent_by_clients("subscribe")) == 2
        )
        fake.push(trade(4), trade(5))
        fake.push(trade(6))
        await eventually(lambda: set(trade_ids(items)) >= {1, 2, 3, 4, 5, 6})
        stats = mux.stats[src.name]
        assert stats.reconnects == 1
        assert "SourceDisconnected" in stats.last_error
        assert len(fake.sent_by_clients("auth")) == 2  # re-authenticated
        first, second = fake.sent_by_clients("subscribe")
        assert second["trades"] == first["trades"] == ["AAPL"]  # and re-subscribed
        assert trade_ids(items) == [1, 2, 3, 2, 3, 4, 5, 6]  # 2, 3 resent after the reconnect
        fake.push(trade(7))  # the stream continues
        await eventually(lambda: 7 in trade_ids(items))
    assert fake.connections == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_silent_feed_is_reconnected_as_stale(fake: FakeAlpaca, transport: str) -> None:
    src = source(fake, transport)
    mux = Multiplexer([src], backoff=FAST, stale_after_s=0.3)
    items: list[SourceItem] = []
    fake.paused = True  # connected and subscribed, but nothing comes
    fake.push(trade(1))
    async with running(mux, items):
        await eventually(lambda: mux.stats[src.name].stale >= 1 and fake.connections >= 2)
        assert mux.stats[src.name].reconnects >= 1
        # the new connection's subscribe arrives a moment after it connects
        await eventually(lambda: len(fake.sent_by_clients("subscribe")) >= 2)
        fake.resume()
        await eventually(lambda: trade_ids(items) == [1])


async def test_bad_frames_are_counted_by_the_websocket_transport(fake: FakeAlpaca) -> None:
    src = source(fake, "websocket")
    mux = Multiplexer([src], backoff=FAST, stale_after_s=None)
    items: list[SourceItem] = []
    good = pack([trade(1)])
    fake.push_raw(b"\xc1\xc1")
    fake.push_raw(good[:-4])
    fake.push_raw(pack([{"T": "zz", "pad": "x" * (2 << 20)}]))  # a 2 MiB frame
    fake.push_raw(msgpack.packb({"T": "t"}))
    fake.push(trade(2, p="abc"), trade(3, "MSFT"), {"T": "zz"}, trade(4))
    async with running(mux, items):
        await eventually(lambda: trade_ids(items) == [4])
        stats = mux.stats[src.name]
        # a frame's rejects are yielded after its events: wait for all seven
        await eventually(lambda: sum(stats.rejects.values()) >= 7)
        assert dict(stats.rejects) == {
            MALFORMED_MSGPACK: 1,
            TRUNCATED_FRAME: 1,
            OVERSIZED_FRAME: 1,
            WRONG_TYPE: 2,
            UNKNOWN_SYMBOL: 1,
            UNKNOWN_MESSAGE: 1,
        }
        assert stats.reconnects == 0
        assert fake.connections == 1


async def test_alpaca_py_drops_bad_frames_without_disconnecting(fake: FakeAlpaca) -> None:
    """alpaca-py decodes frames itself and drops (and logs) what it cannot decode or cast: the
    stream survives, but the bad frames never reach us to be counted."""
    src = source(fake, "alpaca-py")
    mux = Multiplexer([src], backoff=FAST, stale_after_s=None)
    items: list[SourceItem] = []
    fake.push_raw(b"\xc1\xc1")
    fake.push_raw(pack([trade(1)])[:-4])
    fake.push_raw(pack([{"T": "zz", "pad": "x" * (2 << 20)}]))
    fake.push(trade(2, p="abc"))
    fake.push(trade(3, "MSFT"), {"T": "zz"}, trade(4))
    async with running(mux, items):
        await eventually(lambda: trade_ids(items) == [4])
        stats = mux.stats[src.name]
        assert stats.reconnects == 0
        assert fake.connections == 1
        assert dict(stats.rejects) == {}


def test_config_is_checked_at_start() -> None:
    with pytest.raises(ConfigError, match=r"alpaca\.symbols"):
        AlpacaDataConfig(asset_class="crypto", symbols=("BTCUSD",))
    with pytest.raises(ConfigError, match=r"alpaca\.symbols"):
        AlpacaDataConfig(asset_class="equity", symbols=("BTC/USD",))
    with pytest.raises(ConfigError, match=r"alpaca\.symbols"):
        AlpacaDataConfig(symbols=())
    with pytest.raises(ConfigError, match=r"alpaca\.channels"):
        AlpacaDataConfig(symbols=("AAPL",), channels=("orderbooks",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"alpaca\.transport"):
        AlpacaDataConfig(symbols=("AAPL",), transport="grpc")  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"symbols": ["AAPL"], "symbol": "AAPL"}, AlpacaDataConfig)
    cfg = msgspec.convert({"symbols": ["AAPL"], "stock_feed": "sip"}, AlpacaDataConfig)
    assert cfg.resolved_stream_url == "wss://stream.data.alpaca.markets/v2/sip"
    assert cfg.resolved_rest_url == "https://data.alpaca.markets"
    crypto = AlpacaDataConfig(asset_class="crypto", symbols=("BTC/USD", "ETH/USD"))
    assert crypto.resolved_stream_url == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
