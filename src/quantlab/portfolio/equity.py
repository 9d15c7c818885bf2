"""Equity curves from fills and bars: replay a run's fills against the bars' closes.

Conventions (those of `Portfolio`, which does the replay in `Decimal`)
--------------------------------------------------------------------
* One currency at a time: the curve is in `currency`; it covers the symbols quoted in it
  (``split_symbol(symbol)[1] == currency``) and the cash of that currency. A buy pays
  ``price * quantity``, a sell receives it, a fee is paid in its ``fee_currency`` (null or
  empty: the quote currency), so a fee in another currency does not touch this curve.
* Timing: the bars are the union of the timestamps of the symbols quoted in `currency`. A
  fill at time ``t`` counts from the first bar at or after ``t`` (a fill stamped at a bar's
  timestamp is in that bar's equity); fills before the first bar count at the first bar, a
  fill after the last bar is an error (the curve could not show it). Fills are replayed in
  time order (ties keep their order in the frame).
* Marks: each symbol's latest close at or before the bar (forward filled across the other
  symbols' bars); before a symbol's first close its position is marked at its average cost,
  as `Portfolio.equity_by_currency` does.
* ``equity = starting_cash + cash + sum(quantity * mark)``; ``pnl = equity - starting_cash``,
  which is ``realized + unrealized - fees`` of `Portfolio.pnl_by_currency` when every fee is
  in `currency`. ``net_exposure = sum(quantity * mark)``, ``gross_exposure =
  sum(|quantity * mark|)``.
* Precision: the replay (cash, quantities, average costs) is exact in `Decimal`; the curve
  is Float64 (it feeds the statistics), i.e. each bar rounds ``cash`` once and each
  ``quantity * mark`` once: the error is a few ulps of the gross notional, far below 1e-9
  of the PnL unless the PnL itself is ~1e-7 of the notional.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from quantlab.core.enums import Side
from quantlab.core.errors import ValidationError
from quantlab.core.instruments import split_symbol
from quantlab.portfolio.accounting import ZERO, Portfolio, Position

__all__ = ["equity_curve", "positions_over_time", "round_trips"]

FloatArray = npt.NDArray[np.float64]
_FILL_COLUMNS = ("symbol", "side", "price", "quantity", "timestamp")


def _quote(symbol: str) -> str | None:
    try:
        return split_symbol(symbol)[1]
    except ValidationError:
        return None


def _dec(value: object) -> Decimal:
    if value is None:
        return ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def _check_fills(fills: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in _FILL_COLUMNS if c not in fills.columns]
    if missing:
        raise ValueError(f"fills: missing column(s) {missing}; has {fills.columns}")
    ts = fills.schema["timestamp"]
    if not isinstance(ts, pl.Datetime):
        raise ValueError(f"fills.timestamp: expected pl.Datetime (UTC), got {ts}")
    if fills.get_column("timestamp").null_count():
        raise ValueError("fills.timestamp: null value(s)")
    return fills.sort("timestamp", maintain_order=True)


def _fill_rows(fills: pl.DataFrame) -> Iterable[dict[str, object]]:
    """Fill rows in time order, with ``fee`` and ``fee_currency`` defaulted."""
    frame = _check_fills(fills)
    if "fee" not in frame.columns:
        frame = frame.with_columns(pl.lit(0).alias("fee"))
    if "fee_currency" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("fee_currency"))
    return frame.iter_rows(named=True)


def equity_curve(
    fills: pl.DataFrame,
    bars: pl.DataFrame,
    *,
    currency: str,
    starting_cash: Decimal | float = 0,
) -> pl.DataFrame:
    """The equity of `fills` marked to `bars`' closes, one row per bar, in `currency`.

    `fills` has ``symbol``, ``side`` (``buy``/``sell``), ``price``, ``quantity`` (positive),
    ``timestamp`` and optionally ``fee`` and ``fee_currency`` (a run's ``fills`` frame);
    `bars` has ``symbol``, ``timestamp`` and ``close``. Returns Float64 columns
    ``timestamp``, ``equity``, ``cash``, ``gross_exposure``, ``net_exposure``, ``pnl``; see
    the module docstring for the conventions. ``cash`` includes `starting_cash`.
    """
    replay = _replay(fills, bars, currency, starting_cash)
    cash, values = replay.cash, replay.values
    net = values.sum(axis=1)
    gross = np.abs(values).sum(axis=1)
    start = float(_dec(starting_cash))
    equity = cash + net
    return pl.DataFrame(
        {
            "timestamp": replay.timestamps,
            "equity": pl.Series(equity, dtype=pl.Float64),
            "cash": pl.Series(cash, dtype=pl.Float64),
            "gross_exposure": pl.Series(gross, dtype=pl.Float64),
            "net_exposure": pl.Series(net, dtype=pl.Float64),
            "pnl": pl.Series(equity - start, dtype=pl.Float64),
        }
    )


def positions_over_time(fills: pl.DataFrame, bars: pl.DataFrame, *, currency: str) -> pl.DataFrame:
    """Positions held at each bar, long format for `analytics.exposure`.

    Columns ``timestamp``, ``symbol``, ``quantity`` (signed), ``price`` (the mark) and
    ``notional`` (``quantity * price``, signed), one row per bar and symbol with a non-zero
    position; same bars, timing and marks as `equity_curve`.
    """
    replay = _replay(fills, bars, currency, 0)
    timestamps, values, quantities, marks = (
        replay.timestamps,
        replay.values,
        replay.quantities,
        replay.marks,
    )
    frames = []
    for j, symbol in enumerate(replay.symbols):
        held = quantities[:, j] != 0
        if not held.any():
            continue
        frames.append(
            pl.DataFrame(
                {
                    "timestamp": timestamps.filter(pl.Series(held)),
                    "symbol": pl.Series([symbol] * int(held.sum()), dtype=pl.String),
                    "quantity": pl.Series(quantities[held, j], dtype=pl.Float64),
                    "price": pl.Series(marks[held, j], dtype=pl.Float64),
                    "notional": pl.Series(values[held, j], dtype=pl.Float64),
                }
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "timestamp": timestamps.dtype,
                "symbol": pl.String,
                "quantity": pl.Float64,
                "price": pl.Float64,
                "notional": pl.Float64,
            }
        )
    return pl.concat(frames).sort(["timestamp", "symbol"])


def round_trips(fills: pl.DataFrame) -> pl.DataFrame:
    """Closed trades, for `analytics.hit_rate`: one row per fill that reduces a position.

    Average cost, as `Position`: a closing fill realizes ``closed_qty * (price - avg)`` (sign
    flipped for a short) less its share of its own fee, ``fee * closed_qty / quantity`` (a
    fill that crosses zero keeps the rest of its fee for the position it opens; fees of the
    opening fills are not charged to the trade). Fees in another currency than the symbol's
    quote are left out. Columns ``symbol``, ``closed_at``, ``quantity`` (closed, positive),
    ``pnl`` (Float64 of the exact `Decimal` value), in time order.
    """
    positions: dict[str, Position] = {}
    rows: list[tuple[str, object, float, float]] = []
    for row in _fill_rows(fills):
        symbol = str(row["symbol"])
        quote = _quote(symbol)
        position = positions.setdefault(symbol, Position(symbol, quote or ""))
        side = Side(str(row["side"]))
        qty, price, fee = _dec(row["quantity"]), _dec(row["price"]), _dec(row["fee"])
        fee_ccy = row["fee_currency"] or quote
        if fee_ccy != quote:
            fee = ZERO
        before = position.quantity
        realized = position.apply(side, qty, price, fee)
        closed = min(qty, abs(before)) if before and (before > 0) != (side is Side.BUY) else ZERO
        if closed:
            share = fee * closed / qty
            rows.append((symbol, row["timestamp"], float(closed), float(realized - share)))
    ts_dtype = fills.schema["timestamp"]
    return pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "closed_at": ts_dtype,
            "quantity": pl.Float64,
            "pnl": pl.Float64,
        },
        orient="row",
    )


# --------------------------------------------------------------------------- the replay


class _Replay(NamedTuple):
    timestamps: pl.Series  # the bars
    symbols: list[str]  # the columns of the matrices
    cash: FloatArray  # per bar, with the starting cash
    quantities: FloatArray  # bars x symbols
    marks: FloatArray  # bars x symbols
    values: FloatArray  # quantities * marks


def _replay(
    fills: pl.DataFrame, bars: pl.DataFrame, currency: str, starting_cash: Decimal | float
) -> _Replay:
    for column in ("symbol", "timestamp", "close"):
        if column not in bars.columns:
            raise ValueError(f"bars: missing column {column!r}; has {bars.columns}")
    quoted = sorted(
        s for s in bars.get_column("symbol").unique().to_list() if _quote(s) == currency
    )
    if not quoted:
        raise ValueError(f"bars: no symbol quoted in {currency!r}")
    mine = bars.filter(pl.col("symbol").is_in(quoted))
    wide = (
        mine.select("timestamp", "symbol", pl.col("close").cast(pl.Float64))
        .unique(["timestamp", "symbol"], keep="last", maintain_order=True)
        .pivot(on="symbol", index="timestamp", values="close")
        .sort("timestamp")
    )
    fills = _check_fills(fills)
    fill_symbols = sorted(
        s for s in fills.get_column("symbol").unique().to_list() if _quote(s) == currency
    )
    symbols = sorted(set(quoted) | set(fill_symbols))
    timestamps = wide.get_column("timestamp")
    n, m = len(timestamps), len(symbols)
    closes = np.full((n, m), np.nan)
    for j, symbol in enumerate(symbols):
        if symbol in wide.columns:
            closes[:, j] = wide.get_column(symbol).fill_null(strategy="forward").to_numpy()

    # exact replay, one state per fill: cash, quantities and average costs after it
    portfolio = Portfolio()
    cash_after: list[Decimal] = []
    qty_after: list[list[float]] = []
    avg_after: list[list[float]] = []
    fill_ts = fills.get_column("timestamp").cast(timestamps.dtype)
    for row in _fill_rows(fills):
        symbol = str(row["symbol"])
        quote = _quote(symbol)
        if quote is None:
            raise ValueError(f"fills: cannot tell the quote currency of {symbol!r}")
        fee_ccy = row["fee_currency"] or quote
        portfolio.apply(
            symbol,
            quote,
            Side(str(row["side"])),
            _dec(row["quantity"]),
            _dec(row["price"]),
            _dec(row["fee"]),
            str(fee_ccy),
        )
        cash_after.append(portfolio.cash.get(currency, ZERO))
        held = [portfolio.positions.get(s) for s in symbols]
        qty_after.append([float(p.quantity) if p else 0.0 for p in held])
        avg_after.append([float(p.avg_price) if p else 0.0 for p in held])

    # the fill k counts from bar `bar_of[k]`, the first bar at or after it
    bar_of = np.searchsorted(timestamps.to_numpy(), fill_ts.to_numpy(), side="left")
    if len(bar_of) and bar_of[-1] >= n:
        late = int(np.count_nonzero(bar_of >= n))
        raise ValueError(f"fills: {late} fill(s) after the last bar {timestamps[-1]}")
    last_fill = np.searchsorted(bar_of, np.arange(n), side="right") - 1  # -1: none yet
    applied = last_fill >= 0
    start = _dec(starting_cash)
    cash_values = np.array([float(start + c) for c in cash_after] or [0.0])
    cash = np.where(applied, cash_values[np.maximum(last_fill, 0)], float(start))
    quantities = np.zeros((n, m))
    avgs = np.zeros((n, m))
    if cash_after:
        quantities[applied] = np.asarray(qty_after)[last_fill[applied]]
        avgs[applied] = np.asarray(avg_after)[last_fill[applied]]
    marks = np.where(np.isnan(closes), avgs, closes)
    return _Replay(timestamps, symbols, cash, quantities, marks, quantities * marks)
