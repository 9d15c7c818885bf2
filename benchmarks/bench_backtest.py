"""Backtest speed: one EMA crossover on 1,000,000 bars, quantlab's engine against backtrader.

The bars are a seeded random walk in the schema of `quantlab.core.schemas.BAR_SCHEMA` (one
symbol, 1-minute bars). Both frameworks run the same strategy in the same process, and the
run fails unless their trades are equal: the same number of fills, on the same bars, the same
sides, each at its bar's open (backtrader's reported price to 1e-12 relative: its averaging
arithmetic can be one ulp off), the same quantities (to 1e-6 relative: quantlab rounds down
to its 1e-8 lot). The convention both are configured to follow:

* **Indicators**: EMA(fast) and EMA(slow) of the close, ``k = 2/(n+1)``, seeded at the n-th bar
  with the SMA of the first n closes (TA-Lib's convention, which quantlab's `Ema` kernel and
  backtrader's ``bt.indicators.EMA`` both follow; the arithmetic differs in the last bits,
  which could only matter at an exact tie, and the trade check would catch it).
  quantlab has no SMA crossover strategy, so the crossover is of EMAs in both.
* **Signal**: from the bar where the slow EMA exists (1-based bar count n >= slow), the side
  is ``sign(ema_fast - ema_slow)`` (a tie keeps the previous side); a trade is decided on every
  bar whose side differs from the previous bar's (none on the first). quantlab's built-in
  ``ema_cross`` strategy.
* **Position**: always-in after the first crossing, long or short: the target is
  ``side * NOTIONAL / close`` units of the decision bar (quantlab's ``execution.sizing =
  "fixed"``, ``order_notional = NOTIONAL``; backtrader's ``order_target_size``), so an entry
  opens the position and every later crossing reverses it.
* **Fill**: at the **next bar's open**, in full, no fees, no slippage. backtrader: a market
  order (its default fills at the next bar's open). quantlab: an IOC limit at ``close ±
  spread/2`` filled by the paper venue on the next bar as a taker at the open when the open is
  inside the limit; the walk opens every bar at the previous close, so it always is. Fees 0,
  risk limits far above the positions (nothing is denied), throttle off.

Timing: quantlab is `Node(settings, bars=frame).run()` (the full engine: bus, features, the
strategy, order builder, risk checks, paper venue, orders and fills in SQLite, settlement);
backtrader is ``Cerebro`` with a ``PandasData`` feed built from the same bars, ``run()``
(preload, runonce, no observers). Both are timed from construction to the end of the run on
bars already in memory, after a small warm-up run of each (imports, numba's cache).

Target: quantlab >= 20x backtrader's bars/s. Prints a table and, as its last line, one JSON
object.

    python benchmarks/bench_backtest.py [--quick] [--out FILE]

Needs backtrader (``pip install backtrader``; the dev extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import platform
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _rows import row

from quantlab.config import load_settings
from quantlab.core.schemas import BAR_SCHEMA
from quantlab.engine import Node
from quantlab.features.library import Count, Ema
from quantlab.features.spec import FeatureSpec, register_spec

try:
    import backtrader as bt
except ImportError:  # pragma: no cover - a message, not a traceback
    sys.exit(
        "bench_backtest.py needs backtrader as the reference: "
        "`.venv/bin/pip install backtrader` (or install the dev extra)"
    )

SYMBOL = "SYN/USD"
FAST, SLOW = 10, 30
NOTIONAL = 100.0  # quote currency per position: about one unit at the walk's start price
START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
TARGET_RATIO = 20.0


def feature_spec(fast: int, slow: int) -> FeatureSpec:
    """Only what the strategy reads: the two EMAs and the bar count (the default spec computes
    nine indicators; backtrader computes two)."""
    return register_spec(
        FeatureSpec(
            name=f"bench_ema_cross_{fast}_{slow}",
            version="1",
            indicators=((Ema, {"n": fast}), (Ema, {"n": slow}), (Count, {"name": "n"})),
            description="the EMAs of bench_backtest.py's crossover and the bar count",
        )
    )


def random_walk(n: int, seed: int = 7) -> pl.DataFrame:
    """`n` 1-minute bars of a geometric random walk; every bar opens at the previous close."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 5e-4, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.abs(rng.normal(0.0, 2e-4, (2, n)))
    high = np.maximum(open_, close) * (1.0 + wick[0])
    low = np.minimum(open_, close) * (1.0 - wick[1])
    volume = rng.gamma(2.0, 50.0, n)
    frame = pl.DataFrame(
        {
            "symbol": pl.Series([SYMBOL] * n, dtype=pl.String),
            "timestamp": pl.datetime_range(
                START, START + dt.timedelta(minutes=n - 1), "1m", time_zone="UTC", eager=True
            ),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
    return frame.cast(dict(BAR_SCHEMA))


# -- quantlab ----------------------------------------------------------------------------------
def ema_cross_settings(fast: int, slow: int, **sections: Any) -> Any:
    """quantlab's settings for the crossover above (fixed notional, IOC at the next open, no
    fees, risk limits out of the way), with `sections` (``data``, ``ingest``...) added."""
    return load_settings(
        **sections,
        features={"spec": feature_spec(fast, slow).name, "fast": fast, "slow": slow},
        strategy={"name": "ema_cross", "id": "ema_cross"},
        execution={
            "sizing": "fixed",
            "order_notional": str(NOTIONAL),
            "time_in_force": "ioc",
            "maker_fee_bps": "0",
            "taker_fee_bps": "0",
        },
        risk={
            "max_position_notional": "1e12",
            "max_order_notional": "1e12",
            "orders_per_s": None,
            "max_errors": None,
        },
    )


def run_quantlab(
    frame: pl.DataFrame, folder: Path, fast: int, slow: int
) -> tuple[float, pl.DataFrame, dict[str, float]]:
    """Seconds for the run, its fills as (bar index, side, price, quantity), and the seconds
    its busiest stages spent (the engine's own per-consumer latency record)."""
    settings = ema_cross_settings(fast, slow, data={"symbols": [SYMBOL]})
    t = time.perf_counter()
    result = Node(settings, bars=frame, run_dir=folder).run()
    seconds = time.perf_counter() - t
    index = frame.select(pl.col("timestamp").cast(pl.Datetime("us", "UTC"))).with_row_index("bar")
    fills = (
        result.fills.join(result.orders.select("order_id", "side"), on="order_id", how="left")
        if "side" not in result.fills.columns
        else result.fills
    )
    fills = (
        fills.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
        .join(index, on="timestamp", how="left")
        .select(
            pl.col("bar").cast(pl.Int64),
            pl.col("side").cast(pl.String).str.to_lowercase(),
            pl.col("price").cast(pl.Float64),
            pl.col("quantity").cast(pl.Float64),
        )
        .sort("bar")
    )
    consumers = result.summary.latency.get("consumers", {})
    stages = {name: c["count"] * c["mean_ms"] / 1e3 for name, c in consumers.items()}
    top = dict(sorted(stages.items(), key=lambda kv: -kv[1])[:8])
    return seconds, fills, {name: round(v, 3) for name, v in top.items()}


# -- backtrader --------------------------------------------------------------------------------
class EmaCrossBt(bt.Strategy):
    params = (("fast", FAST), ("slow", SLOW), ("notional", NOTIONAL))

    def __init__(self) -> None:
        self.fast = bt.indicators.EMA(self.data.close, period=self.p.fast)
        self.slow = bt.indicators.EMA(self.data.close, period=self.p.slow)
        self.side = 0  # 0: not yet known
        self.fills: list[tuple[int, str, float, float]] = []

    def next(self) -> None:  # called from the bar where the slow EMA exists (n >= slow)
        diff = self.fast[0] - self.slow[0]
        side = self.side if diff == 0 else (1 if diff > 0 else -1)
        if self.side != 0 and side != self.side:
            self.order_target_size(target=side * self.p.notional / self.data.close[0])
        self.side = side

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed:
            self.fills.append(
                (
                    len(self.data) - 1,  # the bar it filled on (notified before its next())
                    "buy" if order.isbuy() else "sell",
                    order.executed.price,
                    abs(order.executed.size),
                )
            )


def run_backtrader(bars: Any, fast: int, slow: int) -> tuple[float, pl.DataFrame]:
    """Seconds for the run (pandas frame of the bars given), and its fills."""
    t = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    cerebro.adddata(bt.feeds.PandasData(dataname=bars, openinterest=None))
    cerebro.addstrategy(EmaCrossBt, fast=fast, slow=slow)
    cerebro.broker.setcash(1e15)
    cerebro.broker.setcommission(commission=0.0)
    (strategy,) = cerebro.run()
    seconds = time.perf_counter() - t
    fills = pl.DataFrame(
        strategy.fills,
        schema={"bar": pl.Int64, "side": pl.String, "price": pl.Float64, "quantity": pl.Float64},
        orient="row",
    )
    return seconds, fills


def to_pandas(frame: pl.DataFrame) -> Any:
    """The bars as backtrader's `PandasData` reads them: a naive-UTC DatetimeIndex."""
    import pandas as pd  # backtrader's feed needs it; built from numpy (no pyarrow needed)

    index = pd.DatetimeIndex(
        frame["timestamp"].dt.replace_time_zone(None).cast(pl.Datetime("ns")).to_numpy()
    )
    columns = ("open", "high", "low", "close", "volume")
    return pd.DataFrame({c: frame[c].to_numpy() for c in columns}, index=index)


def compare(ql: pl.DataFrame, ref: pl.DataFrame, opens: np.ndarray) -> dict[str, Any]:
    """Equal trades: the same number of fills, on the same bars, the same sides, each at its
    bar's open, quantities equal to 1e-6 relative (quantlab rounds down to its 1e-8 lot).

    quantlab's fill price must be the open exactly; backtrader's within 1e-12 relative: it
    reports ``price * size / size`` (its execution-averaging arithmetic), which can be one ulp
    off the open it filled at."""
    out: dict[str, Any] = {"quantlab_fills": ql.height, "backtrader_fills": ref.height}
    same = ql.height == ref.height
    if same:
        bars = ql["bar"].to_numpy()
        same = (
            ql["bar"].to_list() == ref["bar"].to_list()
            and ql["side"].to_list() == ref["side"].to_list()
            and bool(np.array_equal(ql["price"].to_numpy(), opens[bars]))
            and bool(np.allclose(ref["price"].to_numpy(), opens[bars], rtol=1e-12, atol=0))
            and bool(np.allclose(ql["quantity"].to_numpy(), ref["quantity"].to_numpy(), rtol=1e-6))
        )
    if not same:
        both = ql.join(ref, on="bar", how="full", suffix="_bt")
        bad = both.filter(
            pl.col("bar").is_null()
            | pl.col("bar_bt").is_null()
            | (pl.col("side") != pl.col("side_bt"))
            | ((pl.col("price") - pl.col("price_bt")).abs() > 1e-12 * pl.col("price").abs())
            | ((pl.col("quantity") - pl.col("quantity_bt")).abs() > 1e-6 * pl.col("quantity"))
        )
        out["first_differences"] = bad.head(5).to_dicts()
    out["equal"] = same
    return out


def main(quick: bool, fast: int = FAST, slow: int = SLOW) -> dict[str, Any]:
    n = 100_000 if quick else 1_000_000
    frame = random_walk(n)
    pdf = to_pandas(frame)
    with tempfile.TemporaryDirectory() as tmp:
        warm = random_walk(3_000, seed=1)
        run_quantlab(warm, Path(tmp) / "warm", fast, slow)
        run_backtrader(to_pandas(warm), fast, slow)
        ql_s, ql_fills, ql_stages = run_quantlab(frame, Path(tmp) / "run", fast, slow)
    bt_s, bt_fills = run_backtrader(pdf, fast, slow)
    trades = compare(ql_fills, bt_fills, frame["open"].to_numpy())
    ql_rate, bt_rate = n / ql_s, n / bt_s
    return {
        "benchmark": "backtest",
        "quick": quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "bars": n,
        "strategy": f"ema_cross fast={fast} slow={slow}, next-open fills, no fees",
        "quantlab": {"seconds": round(ql_s, 3), "bars_per_s": round(ql_rate, 1)},
        "backtrader": {
            "version": bt.__version__,
            "seconds": round(bt_s, 3),
            "bars_per_s": round(bt_rate, 1),
        },
        "quantlab_stage_seconds": ql_stages,
        "trades": trades,
        "ratios": {"bars_per_s_vs_backtrader": round(ql_rate / bt_rate, 2)},
        "targets": {"bars_per_s_vs_backtrader": TARGET_RATIO},
    }


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: bars/s of the whole backtest against backtrader,
    and the speed-up against its target."""
    ql, ref = result["quantlab"], result["backtrader"]
    case = f"EMA-crossover backtest, {result['bars']:,} bars"
    return [
        row(case, "bars/s", ql["bars_per_s"], better="higher", reference=ref["bars_per_s"],
            reference_name=f"backtrader {ref['version']}"),
        row(f"{case}: speed-up over backtrader", "×", result["ratios"]["bars_per_s_vs_backtrader"],
            better="higher", target=result["targets"]["bars_per_s_vs_backtrader"]),
    ]  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    ap.add_argument("--out", type=Path, default=None, help="also write the output to this file")
    ap.add_argument("--fast", type=int, default=FAST, help=f"fast EMA window (default {FAST})")
    ap.add_argument("--slow", type=int, default=SLOW, help=f"slow EMA window (default {SLOW})")
    args = ap.parse_args()
    if not 1 < args.fast < args.slow:
        ap.error("need 1 < --fast < --slow")
    buf = io.StringIO()
    out = main(args.quick, args.fast, args.slow)
    with redirect_stdout(buf):
        for name in ("quantlab", "backtrader"):
            r = out[name]
            print(f"{name:12s} {out['bars']:>10,} bars  {r['seconds']:>9.3f} s  "
                  f"{r['bars_per_s']:>14,.0f} bars/s")  # fmt: skip
        t = out["trades"]
        print(f"fills: quantlab {t['quantlab_fills']:,}, backtrader {t['backtrader_fills']:,}, "
              f"equal: {t['equal']}")  # fmt: skip
        print(f"speed-up {out['ratios']['bars_per_s_vs_backtrader']}x "
              f"(target {TARGET_RATIO:g}x)")  # fmt: skip
        out["rows"] = table_rows(out)
        print(json.dumps(out))
    text = buf.getvalue()
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if not out["trades"]["equal"]:
        sys.exit("the trades differ: the comparison is void (see 'first_differences')")
