"""The simulated sources: `SyntheticSource` (seeded generator) and `ReplaySource` (recordings)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quantlab.adapters.sim.data import read_market
from quantlab.adapters.sim.replay import ReplaySource
from quantlab.adapters.sim.synthetic import SyntheticSource
from quantlab.core.clock import SimulatedClock
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError, DataError
from quantlab.core.schemas import SCHEMAS
from quantlab.ingest.items import Events, Heartbeat, SourceItem
from quantlab.ingest.ports import MarketDataSource
from quantlab.storage.lake import Lake

T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
BARS_FILE = "bundled:binance_btc_pairs_5m_2018-01.parquet"
TRADES_FILE = "bundled:binance_btcusdt_trades_2021-01-08.parquet"
QUOTES_FILE = "bundled:binance_btcusdt_quotes_2021-01-08.parquet"


async def collect(source: MarketDataSource) -> list[SourceItem]:
    return [item async for item in source.stream()]


def frames(items: list[SourceItem], kind: EventType) -> pl.DataFrame:
    parts = [i.frame for i in items if isinstance(i, Events) and i.kind is kind]
    return pl.concat(parts) if parts else pl.DataFrame(schema=SCHEMAS[kind])


def synthetic(**options: Any) -> SyntheticSource:
    options.setdefault("rate", None)
    options.setdefault("clock", SimulatedClock(T0))
    return SyntheticSource(**options)


# -- SyntheticSource -------------------------------------------------------------------------


async def test_synthetic_is_deterministic_for_a_seed() -> None:
    a = await collect(synthetic(symbols=5, seed=11, max_events=5_000))
    b = await collect(synthetic(symbols=5, seed=11, max_events=5_000))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        if isinstance(x, Events):
            assert isinstance(y, Events)
            assert x.kind is y.kind
            assert_frame_equal(x.frame, y.frame)
        else:
            assert x == y
    other = await collect(synthetic(symbols=5, seed=12, max_events=5_000))
    assert not frames(other, EventType.TRADE).equals(frames(a, EventType.TRADE))


async def test_synthetic_yields_quotes_trades_and_bars_in_their_schemas() -> None:
    src = synthetic(symbols=["BTC/USD", "ETH/USD", "SOL/USD"], seed=2, max_events=6_000)
    items = await collect(src)
    assert any(isinstance(i, Heartbeat) for i in items)
    quotes, trades = frames(items, EventType.QUOTE), frames(items, EventType.TRADE)
    bars = frames(items, EventType.BAR)
    for kind, frame in ((EventType.QUOTE, quotes), (EventType.TRADE, trades)):
        assert frame.schema == SCHEMAS[kind]
        assert set(frame["symbol"]) == {"BTC/USD", "ETH/USD", "SOL/USD"}
    assert bars.schema == SCHEMAS[EventType.BAR]
    # Quotes: positive and never crossed.
    assert (quotes["bid"] > 0).all()
    assert (quotes["bid"] < quotes["ask"]).all()
    assert (quotes["bid_size"] > 0).all()
    assert (quotes["ask_size"] > 0).all()
    # Trades: an aggressor side, a unique id, positive size; about the configured share.
    assert set(trades["aggressor"].unique()) == {int(Aggressor.BUYER), int(Aggressor.SELLER)}
    assert trades["trade_id"].n_unique() == trades.height
    assert trades["trade_id"].str.starts_with("synthetic-").all()
    assert (trades["size"] > 0).all()
    assert trades.height / 6_000 == pytest.approx(0.3, abs=0.03)
    # Time moves forward from the clock's now, on the nominal 1,000 events/s axis.
    stamps = pl.concat([quotes["timestamp"], trades["timestamp"]]).sort().cast(pl.Int64)
    assert stamps.n_unique() == 6_000
    assert int(stamps[0]) > T0  # type: ignore[arg-type]
    assert (int(stamps[-1]) - T0) / 1e9 == pytest.approx(6.0, rel=0.1)  # type: ignore[arg-type]


async def test_synthetic_trades_are_at_the_bid_or_the_ask_of_the_aggressor() -> None:
    """One chunk generated twice with the same seed, all quotes and all trades: the same
    events (time, symbol, mid, spread) seen as quotes and as trades."""
    common = {"symbols": 4, "seed": 5, "max_events": 3_000, "chunk": 3_000}
    quotes = frames(await collect(synthetic(trade_share=0.0, **common)), EventType.QUOTE)
    trades = frames(await collect(synthetic(trade_share=1.0, **common)), EventType.TRADE)
    assert quotes.height == trades.height == 3_000
    both = trades.join(quotes, on=["symbol", "timestamp"], how="inner", validate="1:1")
    assert both.height == 3_000
    at_ask = both["price"] == both["ask"]
    at_bid = both["price"] == both["bid"]
    assert (at_ask | at_bid).all()
    buyer = both["aggressor"] == int(Aggressor.BUYER)
    assert (at_ask == buyer).all()
    assert (at_bid == (both["aggressor"] == int(Aggressor.SELLER))).all()
    assert 0.4 < at_ask.mean() < 0.6  # type: ignore[operator]


async def test_synthetic_bars_aggregate_the_trades_of_their_interval() -> None:
    bar_s = 0.5
    items = await collect(
        synthetic(symbols=3, seed=9, max_events=20_000, bar_interval_s=bar_s, trade_share=0.4)
    )
    trades, bars = frames(items, EventType.TRADE), frames(items, EventType.BAR)
    bar_ns = int(bar_s * 1e9)
    expected = (
        trades.sort("timestamp")
        .with_columns(
            (pl.col("timestamp").cast(pl.Int64) // bar_ns * bar_ns)
            .cast(SCHEMAS[EventType.BAR]["timestamp"])
            .alias("bucket")
        )
        .group_by("symbol", "bucket", maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
        )
        .rename({"bucket": "timestamp"})
    )
    # A symbol's last interval is still open when the stream ends: no bar for it yet.
    last = expected.group_by("symbol").agg(pl.col("timestamp").max())
    expected = expected.join(last, on=["symbol", "timestamp"], how="anti")
    assert bars.height == expected.height > 3 * 15
    assert bars.select("symbol", "timestamp").is_duplicated().sum() == 0
    assert_frame_equal(
        bars.sort("symbol", "timestamp"),
        expected.select(bars.columns).sort("symbol", "timestamp"),
        rel_tol=1e-12,
    )
    assert (bars["low"] <= bars["open"]).all()
    assert (bars["high"] >= bars["close"]).all()


@pytest.mark.parametrize(("max_events", "chunk"), [(1_234, 100), (7, 1_000), (1, None)])
async def test_synthetic_stops_after_max_events(max_events: int, chunk: int | None) -> None:
    src = synthetic(symbols=2, seed=1, max_events=max_events, chunk=chunk)
    assert src.total_rows == max_events
    items = await collect(src)
    n = frames(items, EventType.QUOTE).height + frames(items, EventType.TRADE).height
    assert n == max_events
    assert isinstance(items[-1], Heartbeat)


async def test_synthetic_paces_to_the_rate_in_wall_time() -> None:
    rate = 2_000.0
    src = SyntheticSource(symbols=4, seed=3, rate=rate, max_events=2_000)
    t0 = time.monotonic()
    wall_start = time.time_ns()
    items = await collect(src)
    elapsed = time.monotonic() - t0
    assert elapsed == pytest.approx(1.0, rel=0.2)
    quotes, trades = frames(items, EventType.QUOTE), frames(items, EventType.TRADE)
    assert (quotes.height + trades.height) / elapsed == pytest.approx(rate, rel=0.2)
    # Event times follow the wall clock.
    stamps = pl.concat([quotes["timestamp"], trades["timestamp"]]).cast(pl.Int64)
    first, last = int(stamps.min()), int(stamps.max())  # type: ignore[arg-type]
    assert abs(first - wall_start) < 0.2e9
    assert (last - first) / 1e9 == pytest.approx(1.0, rel=0.2)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"symbols": []}, "synthetic.symbols"),
        ({"symbols": 0}, "synthetic.symbols"),
        ({"rate": 0.0}, "synthetic.rate"),
        ({"rate": -5.0}, "synthetic.rate"),
        ({"rate": float("nan")}, "synthetic.rate"),
        ({"trade_share": 1.5}, "synthetic.trade_share"),
        ({"trade_share": -0.1}, "synthetic.trade_share"),
        ({"chunk": 0}, "synthetic.chunk"),
        ({"bar_interval_s": 0.0}, "synthetic.bar_interval_s"),
        ({"bar_interval_s": -1.0}, "synthetic.bar_interval_s"),
    ],
)
def test_synthetic_rejects_invalid_arguments_naming_the_key(
    options: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        SyntheticSource(**options)
    assert err.value.key == key
    assert key in str(err.value)


# -- ReplaySource ----------------------------------------------------------------------------


def played(items: list[SourceItem]) -> pl.DataFrame:
    assert items, "nothing played"
    kinds = {i.kind for i in items if isinstance(i, Events)}
    assert len(kinds) == 1
    return pl.concat([i.frame for i in items if isinstance(i, Events)])


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (BARS_FILE, EventType.BAR),
        (TRADES_FILE, EventType.TRADE),
        (QUOTES_FILE, EventType.QUOTE),
        ("bundled:fxcm_gbpusd_1m_quotes_2012-02.parquet", EventType.QUOTE),
        ("bundled:binance_xrpeth_trades_2019-10.parquet", EventType.TRADE),
    ],
)
async def test_replay_plays_every_row_once_in_time_order(path: str, kind: EventType) -> None:
    source = ReplaySource([path], chunk_rows=997)
    assert source.kind is kind
    items = await collect(source)
    got = played(items)
    assert all(isinstance(i, Events) and i.kind is kind for i in items)
    assert max(i.frame.height for i in items if isinstance(i, Events)) <= 997
    recorded = read_market(path)[1]
    assert got.schema == SCHEMAS[kind]
    assert source.total_rows == got.height == recorded.height
    assert got["timestamp"].is_sorted()
    # Every recorded row exactly once (rows compared as multisets).
    count = pl.len().alias("n")
    assert_frame_equal(
        got.group_by(got.columns).agg(count).sort(got.columns),
        recorded.group_by(got.columns).agg(count).sort(got.columns),
    )


async def test_replay_of_several_bar_files_and_a_selection() -> None:
    source = ReplaySource(
        [BARS_FILE, "bundled:btc_perp_1m_2022-01.parquet"],
        symbols=["ETH/BTC", "BTC-PERP"],
        start="2018-01-20",
        end="2022-01-02",
    )
    got = played(await collect(source))
    assert source.symbols == ["BTC-PERP", "ETH/BTC"]
    assert got["timestamp"].is_sorted()
    lo, hi = dt.datetime(2018, 1, 20, tzinfo=dt.UTC), dt.datetime(2022, 1, 2, tzinfo=dt.UTC)
    assert got["timestamp"].is_between(lo, hi, closed="left").all()
    eth = read_market(BARS_FILE)[1].filter(
        pl.col("symbol") == "ETH/BTC",
        pl.col("timestamp") >= dt.datetime(2018, 1, 20, tzinfo=dt.UTC),
    )
    assert got.filter(pl.col("symbol") == "ETH/BTC").height == eth.height


async def test_replay_of_a_frame() -> None:
    quotes = read_market(QUOTES_FILE)[1]
    shuffled = quotes.sample(fraction=1.0, shuffle=True, seed=4)
    source = ReplaySource(frame=shuffled, chunk_rows=100)
    got = played(await collect(source))
    assert source.kind is EventType.QUOTE
    assert got["timestamp"].is_sorted()
    assert_frame_equal(got, quotes, check_row_order=False)


@pytest.mark.parametrize("speed", [40.0, 90.0])
async def test_replay_paces_the_recording_at_real_time_times_speed(speed: float) -> None:
    source = ReplaySource([QUOTES_FILE], speed=speed)
    stamps = source.data["timestamp"].cast(pl.Int64)
    span_s = (int(stamps.max()) - int(stamps.min())) / 1e9  # type: ignore[arg-type]
    assert span_s == pytest.approx(45.6, abs=0.1)
    arrivals: list[tuple[float, int]] = []
    t0 = time.monotonic()
    rows = 0
    async for item in source.stream():
        assert isinstance(item, Events)
        arrivals.append((time.monotonic() - t0, int(item.frame["timestamp"].cast(pl.Int64)[0])))
        rows += item.frame.height
    elapsed = time.monotonic() - t0
    assert rows == 451
    assert elapsed == pytest.approx(span_s / speed, rel=0.2)
    # Each chunk comes when its first event is due, not early and not much late.
    first_ns = arrivals[0][1]
    for wall, ts in arrivals:
        due = (ts - first_ns) / 1e9 / speed
        assert wall >= due - 0.01
        assert wall <= due + 0.15


async def test_replay_from_the_lake_plays_a_dataset_window(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    bars = read_market(BARS_FILE)[1].filter(
        pl.col("timestamp") < dt.datetime(2018, 1, 13, tzinfo=dt.UTC)
    )
    lake.write(bars, "bar")
    start = dt.datetime(2018, 1, 11, 6, tzinfo=dt.UTC)
    end = dt.datetime(2018, 1, 12, 18, tzinfo=dt.UTC)
    source = ReplaySource.from_lake(
        lake,
        "bar",
        symbols=["ETH/BTC", "ADA/BTC"],
        start=start,
        end=end,
        name="lake",
        chunk_rows=50,
    )
    assert source.name == "lake"
    assert source.kind is EventType.BAR
    got = played(await collect(source))
    want = bars.filter(
        pl.col("symbol").is_in(["ETH/BTC", "ADA/BTC"]),
        pl.col("timestamp") >= start,
        pl.col("timestamp") < end,
    )
    assert got["timestamp"].is_sorted()
    assert_frame_equal(got, want, check_row_order=False)


async def test_replay_from_the_lake_drops_the_quality_flags(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    quotes = read_market(QUOTES_FILE)[1]
    lake.append(quotes.with_columns(pl.lit(1, pl.UInt8).alias("flags")), "quote")
    source = ReplaySource.from_lake(lake, "quote")
    assert source.kind is EventType.QUOTE
    got = played(await collect(source))
    assert got.columns == list(SCHEMAS[EventType.QUOTE].names())
    assert_frame_equal(got, quotes, check_row_order=False)


@pytest.mark.parametrize("via", ["lake", "frame"])
async def test_replay_of_trades_in_the_trade_schema_keeps_the_aggressor(
    tmp_path: Path, via: str
) -> None:
    trades = read_market(TRADES_FILE)[1]
    assert set(trades["aggressor"].unique()) == {int(Aggressor.BUYER), int(Aggressor.SELLER)}
    if via == "lake":
        lake = Lake(tmp_path / "lake")
        lake.write(trades, "trade")
        source = ReplaySource.from_lake(lake, "trade")
    else:
        source = ReplaySource(frame=trades)
    got = played(await collect(source))
    assert_frame_equal(got, trades, check_row_order=False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ReplaySource(), "needs either paths or a frame"),
        (
            lambda: ReplaySource([TRADES_FILE], frame=pl.DataFrame({"a": [1]})),
            "needs either paths or a frame",
        ),
        (lambda: ReplaySource([TRADES_FILE], chunk_rows=0), "chunk_rows must be >= 1, got 0"),
        (lambda: ReplaySource([TRADES_FILE], speed=0.0), "speed must be > 0"),
        (lambda: ReplaySource([TRADES_FILE], speed=-2.0), "speed must be > 0"),
        (lambda: ReplaySource(["/no/such/file.parquet"]), "does not exist"),
        (lambda: ReplaySource(["bundled:nope.parquet"]), "no bundled data file 'nope.parquet'"),
        (lambda: ReplaySource([TRADES_FILE, QUOTES_FILE]), "replay files mix kinds"),
        (
            lambda: ReplaySource([BARS_FILE], symbols=["DOGE/BTC"]),
            r"symbols \['DOGE/BTC'\] are not in the data",
        ),
        (
            lambda: ReplaySource([BARS_FILE], start="2018-01-20", end="2018-01-10"),
            "must be before end",
        ),
        (lambda: ReplaySource([BARS_FILE], start="yesterday"), "start 'yesterday' is not an ISO"),
        (
            lambda: ReplaySource([TRADES_FILE], start="2030-01-01"),
            "no rows left after filtering",
        ),
        (
            lambda: ReplaySource(frame=pl.DataFrame({"symbol": ["X"], "a": [1]})),
            "cannot tell bars, trades or quotes",
        ),
    ],
)
def test_replay_rejects_bad_arguments_with_a_clear_message(call: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call()


def test_replay_from_an_empty_lake_says_so(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    with pytest.raises(DataError, match="has no 'bar' data"):
        ReplaySource.from_lake(lake, "bar")
    lake.write(read_market(TRADES_FILE)[1], "trade")
    with pytest.raises(DataError, match=r"no 'trade' data for symbols \['ETH/USDT'\]"):
        ReplaySource.from_lake(lake, "trade", symbols=["ETH/USDT"])


def test_replay_from_a_lake_window_without_rows_raises_a_data_error(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write(read_market(TRADES_FILE)[1], "trade")
    start = dt.datetime(2021, 1, 8, 12, tzinfo=dt.UTC)  # same day, after the recording ends
    with pytest.raises(DataError, match="no rows"):
        ReplaySource.from_lake(
            lake, "trade", start=start, end=start + dt.timedelta(hours=1), speed=1.0
        )
