"""Feature computation speed: SMA(20), EMA(12), RSI(14), MACD(12,26,9).

Cases, each measured in the same run for quantlab, TA-Lib (its C functions looping over the
symbols' contiguous arrays) and pandas (groupby + rolling/ewm):

* many symbols: 100 symbols x 100,000 rows (``--quick``: 100 x 10,000), rows grouped by symbol;
* one long series: 1 symbol x 1,000,000 rows (``--quick``: 100,000);
* streaming: the update for one 1,000-row batch spread over 100 symbols, p50/p95.

Prices are a seeded geometric random walk. Every library keeps all its results. quantlab's
figure is the whole
`IndicatorSet.update(frame)` (symbol coding, the compiled kernels, building the output frame);
numba's one-time compilation happens before timing. Runs use the default allocator for all.
Prints a table and, as its last line, one JSON object with the figures and the ratios.

    python benchmarks/bench_features.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import talib
from _rows import row

from quantlab.core.symbols import SymbolCodes
from quantlab.features import Ema, IndicatorSet, Macd, Rsi, Sma


def prices(symbols: int, rows: int, seed: int = 11) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.001, (symbols, rows))
    close = 100 * np.exp(np.cumsum(steps, axis=1))
    ts = np.arange(rows, dtype=np.int64) * 60_000_000_000
    return pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:03d}" for i in range(symbols)], rows),
            "timestamp": pl.Series(np.tile(ts, symbols)).cast(pl.Datetime("ns", "UTC")),
            "close": close.reshape(-1),
        }
    )


def indicators() -> IndicatorSet:
    return IndicatorSet([Sma(20), Ema(12), Rsi(14), Macd(12, 26, 9)])


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_quantlab(frame: pl.DataFrame) -> None:
    indicators().update(frame)


def run_kernels(codes: np.ndarray, x: np.ndarray) -> None:
    cols = {"price": x}
    for ind in (Sma(20), Ema(12), Rsi(14), Macd(12, 26, 9)):
        ind.update(codes, cols)


def run_talib_frame(frame: pl.DataFrame) -> list[object]:
    parts = frame.partition_by("symbol", maintain_order=True)
    return run_talib([p["close"].to_numpy() for p in parts])


def run_talib(arrays: list[np.ndarray]) -> list[object]:
    # The results are kept, as a user computing features keeps them (and as quantlab does).
    return [
        (talib.SMA(x, 20), talib.EMA(x, 12), talib.RSI(x, 14), talib.MACD(x, 12, 26, 9))
        for x in arrays
    ]


def run_pandas(frame: pd.DataFrame) -> None:
    g = frame.groupby("symbol", sort=False)["close"]
    g.transform(lambda s: s.rolling(20).mean())
    g.transform(lambda s: s.ewm(span=12, adjust=False).mean())
    delta = g.diff()
    up = (
        delta.clip(lower=0)
        .groupby(frame["symbol"])
        .transform(lambda s: s.ewm(alpha=1 / 14, adjust=False).mean())
    )
    down = (
        (-delta.clip(upper=0))
        .groupby(frame["symbol"])
        .transform(lambda s: s.ewm(alpha=1 / 14, adjust=False).mean())
    )
    _ = 100 * up / (up + down)
    fast = g.transform(lambda s: s.ewm(span=12, adjust=False).mean())
    slow = g.transform(lambda s: s.ewm(span=26, adjust=False).mean())
    line = fast - slow
    line.groupby(frame["symbol"]).transform(lambda s: s.ewm(span=9, adjust=False).mean())


def case(frame: pl.DataFrame, repeat: int) -> dict[str, float]:
    arrays = [
        part["close"].to_numpy() for part in frame.partition_by("symbol", maintain_order=True)
    ]
    pdf = pd.DataFrame({"symbol": frame["symbol"].to_numpy(), "close": frame["close"].to_numpy()})
    codes = SymbolCodes().codes(frame["symbol"])
    x = frame["close"].to_numpy()
    kern = best(lambda: run_kernels(codes, x), repeat)
    ta = best(lambda: run_talib(arrays), repeat)
    ql = best(lambda: run_quantlab(frame), repeat)
    ta_frame = best(lambda: run_talib_frame(frame), repeat)
    pd_ = best(lambda: run_pandas(pdf), max(1, repeat // 2))
    return {
        "rows": frame.height,
        "arrays": {  # quantlab's kernels on coded arrays vs TA-Lib on per-symbol arrays
            "quantlab_s": round(kern, 4),
            "talib_s": round(ta, 4),
            "quantlab_vs_talib": round(kern / ta, 3),
        },
        "frame": {  # from a Polars frame to results, for both (TA-Lib: partition + loop)
            "quantlab_s": round(ql, 4),
            "talib_s": round(ta_frame, 4),
            "pandas_s": round(pd_, 4),
            "quantlab_vs_talib": round(ql / ta_frame, 3),
            "quantlab_vs_pandas": round(ql / pd_, 3),
        },
        "quantlab_rows_per_s": round(frame.height / ql),
    }


def streaming(symbols: int = 100, batches: int = 300) -> dict[str, float]:
    frame = prices(symbols, (batches + 50) * 1000 // symbols, seed=5).sort("timestamp", "symbol")
    ind = indicators()
    chunks = list(frame.iter_slices(1000))
    for chunk in chunks[:50]:  # warm-up: every indicator past its seeding
        ind.update(chunk)
    lat = []
    for chunk in chunks[50 : 50 + batches]:
        t = time.perf_counter()
        ind.update(chunk)
        lat.append(time.perf_counter() - t)
    arr = np.asarray(lat) * 1e3
    return {
        "batch_rows": 1000,
        "symbols": symbols,
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p95_ms": round(float(np.percentile(arr, 95)), 3),
    }


def main(quick: bool) -> dict[str, object]:
    run_quantlab(prices(2, 100))  # compile the kernels before timing
    many = prices(100, 10_000 if quick else 100_000)
    one = prices(1, 100_000 if quick else 1_000_000)
    return {
        "benchmark": "features",
        "quick": quick,
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "many_symbols": case(many, 3),
        "one_series": case(one, 3),
        "streaming": streaming(batches=100 if quick else 300),
        "targets": {"many_symbols_frame_vs_talib": 1.0, "streaming_p95_ms": 2.0},
    }


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline rows for `quantlab bench`: seconds against TA-Lib and pandas in the same run.
    The frame goal is relative (quantlab / TA-Lib <= the target ratio), so its target in
    seconds is that ratio times TA-Lib's time in this run."""
    goal = result["targets"]["many_symbols_frame_vs_talib"]
    rows = []
    for key, label in (("many_symbols", "100 symbols"), ("one_series", "1 symbol")):
        r = result[key]
        a, f = r["arrays"], r["frame"]
        case = f"{label}, {r['rows']:,} rows"
        target = round(goal * f["talib_s"], 4) if key == "many_symbols" else None
        rows += [
            row(f"{case}, frame", "s", f["quantlab_s"], better="lower", reference=f["talib_s"],
                reference_name="TA-Lib", target=target),
            row(f"{case}, frame", "s", f["quantlab_s"], better="lower", reference=f["pandas_s"],
                reference_name="pandas (groupby + rolling/ewm)"),
            row(f"{case}, arrays", "s", a["quantlab_s"], better="lower", reference=a["talib_s"],
                reference_name="TA-Lib"),
        ]  # fmt: skip
    s = result["streaming"]
    rows.append(
        row(f"streaming update, {s['batch_rows']:,} rows over {s['symbols']} symbols", "p95 ms",
            s["p95_ms"], better="lower", target=result["targets"]["streaming_p95_ms"])
    )  # fmt: skip
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run that finishes within a minute")
    out = main(ap.parse_args().quick)
    print(f"{'case':22s} {'rows':>10s} {'quantlab s':>11s} {'TA-Lib s':>9s} {'pandas s':>9s} "
          f"{'vs TA-Lib':>9s}")  # fmt: skip
    for key in ("many_symbols", "one_series"):
        r = out[key]
        a, f = r["arrays"], r["frame"]
        print(f"{key + ' arrays':22s} {r['rows']:>10,} {a['quantlab_s']:>11} {a['talib_s']:>9} "
              f"{'':>9} {a['quantlab_vs_talib']:>8}x")  # fmt: skip
        print(f"{key + ' frame':22s} {r['rows']:>10,} {f['quantlab_s']:>11} {f['talib_s']:>9} "
              f"{f['pandas_s']:>9} {f['quantlab_vs_talib']:>8}x")  # fmt: skip
    s = out["streaming"]
    print(f"streaming update of a 1,000-row batch over 100 symbols: p50 {s['p50_ms']} ms, "
          f"p95 {s['p95_ms']} ms")  # fmt: skip
    out["rows"] = table_rows(out)
    print(json.dumps(out))
