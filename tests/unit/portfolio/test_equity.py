"""Equity curves replayed from fills: by hand, against `Portfolio` (hypothesis), and on a run."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core.enums import Side
from quantlab.core.instruments import to_decimal
from quantlab.engine import RunResult
from quantlab.portfolio import Portfolio, analytics
from quantlab.portfolio.equity import equity_curve, positions_over_time, round_trips

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, max_examples=60)
T0 = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)
REL = 1e-9


def bars(closes: dict[str, list[float]], step: dt.timedelta = MIN) -> pl.DataFrame:
    rows = [
        {"symbol": s, "timestamp": T0 + i * step, "close": c}
        for s, cs in closes.items()
        for i, c in enumerate(cs)
    ]
    return pl.DataFrame(
        rows,
        schema={"symbol": pl.String, "timestamp": pl.Datetime("us", "UTC"), "close": pl.Float64},
    ).sort("timestamp", "symbol")


def fills(
    rows: list[tuple[str, str, str, str, str, dt.datetime]], fee_ccy: str | None = None
) -> pl.DataFrame:
    dec = pl.Decimal(38, 18)
    return pl.DataFrame(
        [
            {
                "symbol": s,
                "side": side,
                "price": Decimal(p),
                "quantity": Decimal(q),
                "fee": Decimal(f),
                "fee_currency": fee_ccy,
                "timestamp": t,
            }
            for s, side, q, p, f, t in rows
        ],
        schema={
            "symbol": pl.String,
            "side": pl.String,
            "price": dec,
            "quantity": dec,
            "fee": dec,
            "fee_currency": pl.String,
            "timestamp": pl.Datetime("us", "UTC"),
        },
    )


# --------------------------------------------------------------------------- by hand


def test_hand_example_timing_cash_and_exposure() -> None:
    b = bars({"A/USD": [10, 11, 12, 9], "B/USD": [100, 100, 101, 102], "C/EUR": [1, 1, 1, 1]})
    f = fills(
        [
            ("A/USD", "buy", "2", "10", "0.1", T0 + 30 * dt.timedelta(seconds=1)),  # -> bar 1
            ("B/USD", "sell", "1", "100", "0.2", T0 + 2 * MIN),  # at bar 2 exactly -> bar 2
            ("C/EUR", "buy", "5", "1", "0.01", T0),  # another currency: not in this curve
        ]
    )
    curve = equity_curve(f, b, currency="USD", starting_cash=1000)
    assert curve.columns == ["timestamp", "equity", "cash", "gross_exposure", "net_exposure", "pnl"]
    assert curve["timestamp"].to_list() == [T0 + i * MIN for i in range(4)]
    assert curve["cash"].to_list() == [1000, 979.9, 1079.7, 1079.7]
    assert curve["net_exposure"].to_list() == [0, 22, 24 - 101, 18 - 102]
    assert curve["gross_exposure"].to_list() == [0, 22, 24 + 101, 18 + 102]
    np.testing.assert_allclose(curve["pnl"], [0, 1.9, 2.7, -4.3], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve["equity"], curve["cash"] + curve["net_exposure"])
    assert curve.schema["equity"] == pl.Float64


def test_fees_in_another_currency_and_unmarked_positions() -> None:
    b = bars({"A/USD": [10, 10, 10]})
    # a fee paid in BNB is not USD cash; D/USD has no bar: marked at its average cost
    f = fills([("A/USD", "buy", "1", "10", "3", T0)], fee_ccy="BNB")
    f = pl.concat([f, fills([("D/USD", "buy", "2", "5", "0", T0 + MIN)])])
    curve = equity_curve(f, b, currency="USD")
    assert curve["cash"].to_list() == [-10, -20, -20]
    assert curve["net_exposure"].to_list() == [10, 20, 20]
    assert curve["pnl"].to_list() == [0, 0, 0]


def test_fills_before_the_first_bar_count_there_and_after_the_last_are_an_error() -> None:
    b = bars({"A/USD": [10, 11]})
    early = fills([("A/USD", "buy", "1", "9", "0", T0 - MIN)])
    assert equity_curve(early, b, currency="USD")["pnl"].to_list() == [1, 2]
    late = fills([("A/USD", "buy", "1", "9", "0", T0 + 5 * MIN)])
    with pytest.raises(ValueError, match="after the last bar"):
        equity_curve(late, b, currency="USD")
    with pytest.raises(ValueError, match="no symbol quoted in 'EUR'"):
        equity_curve(early, b, currency="EUR")


def test_round_trips_by_hand() -> None:
    f = fills(
        [
            ("A/USD", "buy", "2", "10", "0.2", T0),
            ("A/USD", "sell", "1", "12", "0.12", T0 + MIN),  # 1 * (12 - 10) - 0.12
            ("A/USD", "sell", "3", "11", "0.33", T0 + 2 * MIN),  # 1 * 1 - 0.33 / 3; short 2 @ 11
            ("B/USD", "sell", "1", "5", "0", T0 + 2 * MIN),  # opens: no trade
            ("A/USD", "buy", "2", "9", "0", T0 + 3 * MIN),  # 2 * (11 - 9)
        ]
    )
    trips = round_trips(f)
    assert trips.columns == ["symbol", "closed_at", "quantity", "pnl"]
    assert trips["symbol"].to_list() == ["A/USD"] * 3
    assert trips["closed_at"].to_list() == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert trips["quantity"].to_list() == [1, 1, 2]
    np.testing.assert_allclose(trips["pnl"], [1.88, 0.89, 4.0], rtol=1e-15)
    assert analytics.hit_rate(trips) == 1.0
    assert round_trips(f.head(0)).height == 0


def test_positions_over_time_feed_exposure() -> None:
    b = bars({"A/USD": [10, 11, 12], "B/USD": [100, 100, 101]})
    f = fills(
        [
            ("A/USD", "buy", "2", "10", "0", T0 + MIN),
            ("B/USD", "sell", "1", "100", "0", T0 + 2 * MIN),
        ]
    )
    pos = positions_over_time(f, b, currency="USD")
    assert pos.columns == ["timestamp", "symbol", "quantity", "price", "notional"]
    assert pos.select("symbol", "quantity", "price").rows() == [
        ("A/USD", 2, 11),
        ("A/USD", 2, 12),
        ("B/USD", -1, 101),
    ]
    curve = equity_curve(f, b, currency="USD", starting_cash=1000)
    by_bar = curve.join(
        pos.group_by("timestamp").agg(pl.col("notional").sum()), on="timestamp", how="left"
    )
    np.testing.assert_array_equal(by_bar["notional"].fill_null(0), by_bar["net_exposure"])
    exp = analytics.exposure(pos, curve)
    assert exp.time_in_market == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- vs Portfolio

prices = st.decimals(min_value="0.5", max_value="500", places=4)
quantities = st.decimals(min_value="0.001", max_value="50", places=3)
fees = st.decimals(min_value="0", max_value="1", places=5)
fill_rows = st.lists(
    st.tuples(
        st.sampled_from(["X/USD", "Y/USD"]),
        st.sampled_from(["buy", "sell"]),
        quantities,
        prices,
        fees,
        st.integers(0, 8),  # bar index (minute); the last bar has none after it
        st.integers(0, 59),  # seconds into it
    ),
    min_size=1,
    max_size=25,
)
closes = st.lists(st.floats(0.5, 500, allow_nan=False), min_size=10, max_size=10)


@DETERMINISTIC
@given(rows=fill_rows, x=closes, y=closes, start=st.sampled_from([0, 1000, 12345.678]))
def test_matches_portfolio_on_random_fills(
    rows: list[tuple[str, str, Decimal, Decimal, Decimal, int, int]],
    x: list[float],
    y: list[float],
    start: float,
) -> None:
    b = bars({"X/USD": x, "Y/USD": y})
    stamped = sorted(
        (
            (s, side, str(q), str(p), str(f), T0 + i * MIN + dt.timedelta(seconds=sec))
            for s, side, q, p, f, i, sec in rows
        ),
        key=lambda r: r[5],
    )
    f = fills(stamped)
    curve = equity_curve(f, b, currency="USD", starting_cash=start)

    # replay bar by bar in Decimal with Portfolio: the same timing, the cash exactly
    portfolio, k = Portfolio(), 0
    for i in range(len(x)):
        t = T0 + i * MIN
        while k < len(stamped) and stamped[k][5] <= t:
            s, side, q, p, fee, _ = stamped[k]
            portfolio.apply(s, "USD", Side(side), Decimal(q), Decimal(p), Decimal(fee))
            k += 1
        portfolio.marks = {"X/USD": to_decimal(x[i]), "Y/USD": to_decimal(y[i])}
        cash = portfolio.cash.get("USD", Decimal(0)) + to_decimal(start)
        assert curve["cash"][i] == float(cash)  # one rounding of the exact cash
        scale = float(
            sum(abs(p.quantity) * portfolio.marks[p.symbol] for p in portfolio.positions.values())
        )
        pnl = portfolio.pnl_by_currency().get("USD", {}).get("total", Decimal(0))
        assert abs(curve["pnl"][i] - float(pnl)) <= REL * abs(float(pnl)) + 1e-12 * (
            scale + abs(start) + 1
        )
    assert k == len(stamped)
    np.testing.assert_allclose(
        curve["equity"], curve["cash"] + curve["net_exposure"], rtol=1e-15, atol=1e-12 * (start + 1)
    )
    assert (curve["gross_exposure"] >= curve["net_exposure"].abs() - 1e-9).all()


# --------------------------------------------------------------------------- a real run


def test_real_run_final_pnl_matches_settlement(
    eth_backtest: tuple[RunResult, pl.DataFrame],
) -> None:
    result, b = eth_backtest
    assert result.fills.height > 10
    curve = equity_curve(result.fills, b, currency="BTC", starting_cash=1)
    total = float(result.summary.pnl["BTC"]["total"])
    assert curve["pnl"][-1] == pytest.approx(total, rel=REL)
    assert curve["equity"][-1] == pytest.approx(1 + total, rel=REL)
    assert curve.height == b.height  # one symbol: one row per bar

    pos = positions_over_time(result.fills, b, currency="BTC")
    last = pos.filter(pl.col("timestamp") == curve["timestamp"][-1])
    expected = result.positions.filter(pl.col("quantity") != 0)
    assert last["symbol"].to_list() == expected["symbol"].to_list()
    np.testing.assert_allclose(last["quantity"], expected["quantity"].cast(pl.Float64), rtol=1e-15)
    np.testing.assert_allclose(last["price"], expected["mark"].cast(pl.Float64), rtol=1e-15)

    trips = round_trips(result.fills)
    assert trips.height > 0
    assert 0 <= analytics.hit_rate(trips) <= 1
    # realized PnL less the closing fills' fees: the trades' sum is at least realized - all fees
    realized = float(result.summary.pnl["BTC"]["realized"])
    fees_paid = float(result.summary.pnl["BTC"]["fees"])
    assert realized - fees_paid <= trips["pnl"].sum() <= realized + 1e-12
