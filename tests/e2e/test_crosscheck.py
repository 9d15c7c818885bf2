"""End-to-end cross-check: the engine's backtest of the EMA crossover on real data equals an
independent computation of the same strategy in this test (same fills, same final PnL).

The engine runs through `Node` on real bundled bars (three BTC pairs, one week of January
2018, 5-minute bars) with strategy ``ema_cross``, ``execution.sizing = "fixed"``, IOC orders
and risk limits large enough that nothing is denied. The test recomputes everything from the
bar file alone, without quantlab's features, signals, execution, venue or portfolio code,
and asserts the same fills (timestamp, symbol, side, quantity, price, fee, liquidity; every
digit as stored) and the same PnL per currency, exactly in Decimal. The conventions:

* **EMA** (TA-Lib's, which quantlab's kernels follow): ``k = 2/(n+1)``, seeded at the n-th
  close of the symbol with the SMA of the first n closes, then ``ema = (x - ema)*k + ema``;
  computed with `talib.EMA` on the symbol's closes (float64, the same operations in the same
  order, so bit-identical; the test checks talib against that recursion too).
* **Signal**: on a symbol's bar with 1-based count n >= slow, the side is
  ``sign(ema_fast - ema_slow)`` (a tie carries the previous side forward); a signal is
  emitted at every bar whose side differs from the previous known side (none at the first).
  BUY for +1, SELL for -1; ``mid`` = the bar's close, ``spread = close * 5 bps``.
* **Order**: target position ``side * order_notional / mid`` base units (Decimal, 28 digits;
  a float becomes the shortest decimal of its repr); quantity = ``|target - exposure|``
  rounded *down* to the lot (1e-8), exposure = what has filled so far; no order if the
  difference does not point the signal's way (e.g. a SELL was canceled and the long is
  already above the new BUY target) or rounds to 0. Limit = ``mid ± spread/2`` rounded to
  the tick (1e-8) away from the touch (buys up, sells down).
* **Fill** (paper venue on bars, latency 0, no participation cap, no slippage): an order is
  matched only against the first bar of its symbol strictly after the signal (the next bar;
  an order decided on the last bar stays open). IOC: that bar only, the rest is canceled.
  A buy fills in full as a **taker at the bar's open** if ``open <= limit``, else as a
  **maker at the limit** if ``low <= limit``, else not at all (sells mirror it: ``open >=
  limit``, ``high >= limit``); compared in float, as the venue does. The taker price is the
  open's shortest repr, which need not be on the tick (``3.6370000000000006e-05``).
* **Fees**: in the quote currency, ``price * quantity * bps / 10000``; taker 7.5, maker 2.
* **PnL** per quote currency (BTC): average cost; a reducing fill realizes
  ``closed * (price - avg) * sign(position)``, one crossing zero opens the rest at its
  price; unrealized = ``position * (mark - avg)``, mark = the symbol's last close; total =
  realized + unrealized - fees; Decimal in the default 28-digit context, like the engine.
* **Batches**: the engine runs with its default 1,000-row batches, many decision times each.
  Before the signals of each time go out, the strategy engine lets what the earlier ones
  caused settle (`InProcessBus.settle`): an IOC order's fill or cancel is known before the
  next time's signals are sized, as it is live, where those times are 5 minutes apart.
  (Without that step the builder sized against the full quantity of an earlier IOC order
  still open, to be canceled, and the trades depended on the batch size; this test found it.)
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import quantlab
from quantlab.config import load_settings
from quantlab.engine import RunResult
from quantlab.engine.node import Node

talib = pytest.importorskip("talib")

DATA_FILE = "binance_btc_pairs_5m_2018-01.parquet"
SYMBOLS = ["ETH/BTC", "LTC/BTC", "XLM/BTC"]
END = dt.datetime(2018, 2, 1, tzinfo=dt.UTC)  # exclusive: the whole recording (from 2018-01-10)
FAST, SLOW = 12, 26
NOTIONAL = Decimal("1")  # BTC per position
SPREAD_BPS = 5.0
TICK = LOT = Decimal("0.00000001")
TAKER_BPS, MAKER_BPS = Decimal("7.5"), Decimal("2")

Pnl = dict[str, dict[str, Decimal]]  # currency -> realized, unrealized, fees, total
FillRow = tuple[dt.datetime, str, str, Decimal, Decimal, Decimal, str]


def dec(x: float) -> Decimal:
    """A float as the shortest decimal that round-trips (how the engine reads prices)."""
    return Decimal(repr(float(x)))


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    settings = load_settings(
        data={"paths": [f"bundled:{DATA_FILE}"], "symbols": SYMBOLS, "end": END.isoformat()},
        features={"fast": FAST, "slow": SLOW},
        strategy={"name": "ema_cross", "id": "ema_cross"},
        execution={
            "sizing": "fixed",
            "order_notional": str(NOTIONAL),
            "time_in_force": "ioc",
            "assumed_spread_bps": SPREAD_BPS,
            "tick_size": str(TICK),
            "lot_size": str(LOT),
            "maker_fee_bps": str(MAKER_BPS),
            "taker_fee_bps": str(TAKER_BPS),
        },
        risk={"max_position_notional": "1000", "max_order_notional": "1000"},
        ingest={"batch_size": 1000},  # the default: many decision times per batch
    )
    return Node(settings, run_dir=tmp_path_factory.mktemp("crosscheck")).run()


def _bars() -> pl.DataFrame:
    path = Path(quantlab.__file__).parent / "_data" / "market" / DATA_FILE
    return (
        pl.read_parquet(path)
        .filter(pl.col("symbol").is_in(SYMBOLS), pl.col("timestamp") < END)
        .sort("symbol", "timestamp", maintain_order=True)
    )


def _ema_by_hand(x: np.ndarray, n: int) -> np.ndarray:
    """TA-Lib's EMA written out: NaN warm-up, SMA seed at the n-th value, then the recursion."""
    out = np.full(len(x), np.nan)
    k = 2.0 / (n + 1.0)
    seed = 0.0
    for v in x[:n]:
        seed += v
    value = seed / n
    out[n - 1] = value
    for t in range(n, len(x)):
        value = (x[t] - value) * k + value
        out[t] = value
    return out


def _signals(bars: pl.DataFrame) -> pl.DataFrame:
    """Crossing bars: symbol, timestamp, side (+1/-1), close, and the next bar's values."""
    frames = []
    for _, g in bars.group_by("symbol", maintain_order=True):
        close = g["close"].to_numpy().astype(np.float64)
        fast = talib.EMA(close, timeperiod=FAST)
        slow = talib.EMA(close, timeperiod=SLOW)
        frames.append(g.with_columns(fast=fast, slow=slow, n=pl.int_range(1, g.height + 1)))
    diff = pl.col("fast") - pl.col("slow")
    marked = (
        pl.concat(frames)
        .with_columns(
            side=pl.when((pl.col("n") >= SLOW) & (diff != 0)).then(diff.sign()).otherwise(None)
        )
        .with_columns(side=pl.col("side").forward_fill().over("symbol"))
        .with_columns(
            prev=pl.col("side").shift(1).over("symbol"),
            next_ts=pl.col("timestamp").shift(-1).over("symbol"),
            next_open=pl.col("open").shift(-1).over("symbol"),
            next_high=pl.col("high").shift(-1).over("symbol"),
            next_low=pl.col("low").shift(-1).over("symbol"),
        )
    )
    crossed = pl.col("side").is_not_null() & (pl.col("side") != pl.col("prev"))
    return marked.filter(pl.col("prev").is_not_null() & crossed).sort("timestamp", "symbol")


@dataclass
class Expected:
    signals: int = 0
    orders: int = 0
    skipped: int = 0  # at target: the difference does not point the signal's way
    canceled: int = 0  # IOC, the next bar never reached the limit
    open_at_end: int = 0  # decided on the symbol's last bar
    fills: list[FillRow] = field(default_factory=list)
    pnl: Pnl = field(default_factory=dict)


def _expected(bars: pl.DataFrame) -> Expected:
    """What the module doc's rules give, signal by signal in time order."""
    out = Expected()
    position: dict[str, Decimal] = {}
    for row in _signals(bars).iter_rows(named=True):
        out.signals += 1
        symbol, sign, close = row["symbol"], int(row["side"]), row["close"]
        mid = dec(close)
        delta = sign * NOTIONAL / mid - position.get(symbol, Decimal(0))
        quantity = (abs(delta) / LOT).to_integral_value(ROUND_FLOOR) * LOT
        if delta * sign <= 0 or quantity <= 0:
            out.skipped += 1
            continue
        half = dec(close * SPREAD_BPS / 1e4) / 2
        raw = mid + half if sign > 0 else mid - half
        limit = (raw / TICK).to_integral_value(ROUND_CEILING if sign > 0 else ROUND_FLOOR) * TICK
        out.orders += 1
        if row["next_ts"] is None:
            out.open_at_end += 1
            continue
        o, lo, hi, lim = row["next_open"], row["next_low"], row["next_high"], float(limit)
        if (o <= lim) if sign > 0 else (o >= lim):
            price, rate, liquidity = dec(o), TAKER_BPS / 10_000, "taker"
        elif (lo <= lim) if sign > 0 else (hi >= lim):
            price, rate, liquidity = limit, MAKER_BPS / 10_000, "maker"
        else:
            out.canceled += 1
            continue
        position[symbol] = position.get(symbol, Decimal(0)) + sign * quantity
        side = "buy" if sign > 0 else "sell"
        fee = price * quantity * rate
        out.fills.append((row["next_ts"], symbol, side, quantity, price, fee, liquidity))
    out.fills.sort()
    marks = dict(bars.group_by("symbol").agg(pl.col("close").last()).iter_rows())
    out.pnl = _pnl(out.fills, {s: dec(m) for s, m in marks.items()})
    return out


def _pnl(fills: list[FillRow], marks: dict[str, Decimal]) -> Pnl:
    """Average-cost PnL per quote currency (the module doc's conventions)."""
    zero = Decimal(0)
    books: dict[str, list[Decimal]] = {}  # symbol -> [quantity, avg, realized, fees]
    for _, symbol, side, qty, price, fee, _ in fills:
        signed = qty if side == "buy" else -qty
        book = books.setdefault(symbol, [zero, zero, zero, zero])
        q, avg = book[0], book[1]
        if q == 0 or (q > 0) == (signed > 0):
            book[1] = (abs(q) * avg + qty * price) / abs(q + signed)
        else:
            book[2] += min(qty, abs(q)) * (price - avg) * (1 if q > 0 else -1)
            if q + signed == 0:
                book[1] = zero
            elif (q + signed > 0) != (q > 0):
                book[1] = price
        book[0] = q + signed
        book[3] += fee
    out: Pnl = {}
    for symbol, (q, avg, realized, fees) in books.items():
        unrealized = q * (marks[symbol] - avg) if q else zero
        row = out.setdefault(
            symbol.split("/")[1],
            {"realized": zero, "unrealized": zero, "fees": zero, "total": zero},
        )
        row["realized"] += realized
        row["unrealized"] += unrealized
        row["fees"] += fees
        row["total"] += realized + unrealized - fees
    return out


def _stored_fills(result: RunResult) -> list[FillRow]:
    """The engine's fills as stored (SQLite keeps every digit; `result.fills` has 18)."""
    with sqlite3.connect(result.run_dir / "quantlab.db") as conn:
        rows = conn.execute(
            "SELECT f.timestamp, o.symbol, o.side, f.quantity, f.price, f.fee, f.liquidity "
            "FROM fills f JOIN orders o ON o.id = f.order_id"
        ).fetchall()
    return sorted(
        (
            dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC),
            symbol,
            side,
            Decimal(q),
            Decimal(p),
            Decimal(fee),
            liquidity,
        )
        for ts, symbol, side, q, p, fee, liquidity in rows
    )


def test_talib_ema_is_the_documented_recursion() -> None:
    bars = _bars().filter(pl.col("symbol") == SYMBOLS[0])
    close = bars["close"].to_numpy().astype(np.float64)
    for n in (FAST, SLOW):
        assert np.array_equal(
            talib.EMA(close, timeperiod=n), _ema_by_hand(close, n), equal_nan=True
        )


def test_engine_matches_independent_computation(result: RunResult) -> None:
    s = result.summary
    assert s.handler_errors == 0
    assert s.dead_letters == 0
    assert s.denied == {}
    bars = _bars()
    assert s.events == bars.height
    want = _expected(bars)
    # the run exercises every branch of the rules
    assert len(want.fills) > 100
    assert want.skipped > 0
    assert want.canceled > 0
    assert {f[-1] for f in want.fills} == {"taker", "maker"}

    assert s.signals == want.signals
    assert s.orders == want.orders
    statuses = dict(result.orders["status"].value_counts().iter_rows())
    assert statuses == {
        k: v
        for k, v in {
            "filled": len(want.fills),
            "canceled": want.canceled,
            "accepted": want.open_at_end,
        }.items()
        if v
    }

    got = _stored_fills(result)
    assert len(got) == len(want.fills) == s.fills
    for engine_fill, expected_fill in zip(got, want.fills, strict=True):
        assert engine_fill == expected_fill
    assert result.pnl == want.pnl
