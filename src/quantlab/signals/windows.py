"""Feature windows: a symbol's recent feature history as a fixed-shape, scale-free array.

The pattern memory embeds these windows and the ONNX models read them, so research and
production see exactly the same inputs. A window is ``(W, C)``: the last `W` rows of a symbol
(oldest first) over the `C` channels of `CHANNELS`, each free of the price's scale, so ADA/BTC
at 5e-5 and BTC at 4.6e4 give comparable windows:

====  ==================  ===============================================
 c    channel             value
====  ==================  ===============================================
 0    ``log_price``       log(price / price at the window's last row)
 1    ``ema_fast_gap``    log(ema_12 / price)
 2    ``ema_slow_gap``    log(ema_26 / price)
 3    ``sma_gap``         log(sma_20 / price)
 4    ``rsi``             rsi_14 / 100 - 0.5
 5    ``macd_hist``       macd_hist / price
 6    ``bb_pos``          (price - bb_lower_20) / (bb_upper_20 - bb_lower_20) - 0.5
 7    ``atr``             atr_14 / price
====  ==================  ===============================================

Indicator values still warming up (null) count as 0. `WindowBuffer` carries the last ``W - 1``
rows of every symbol between batches, so a window that spans two batches is the same as the
one computed over the whole history (tested).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quantlab.core.errors import DataError

CHANNELS: tuple[str, ...] = (
    "log_price",
    "ema_fast_gap",
    "ema_slow_gap",
    "sma_gap",
    "rsi",
    "macd_hist",
    "bb_pos",
    "atr",
)
REQUIRED: tuple[str, ...] = (
    "symbol",
    "price",
    "ema_12",
    "ema_26",
    "sma_20",
    "rsi_14",
    "macd_hist",
    "bb_upper_20",
    "bb_lower_20",
    "atr_14",
)


def channel_frame(features: pl.DataFrame) -> np.ndarray:
    """The per-row channels of `features` as a float64 ``(rows, C)`` array.

    Channel 0 holds log(price) here; `WindowBuffer.windows` makes it relative to each
    window's last row.
    """
    missing = [c for c in REQUIRED if c not in features.columns]
    if missing:
        raise DataError(f"feature windows need columns {missing} (have {features.columns})")
    price = pl.col("price")
    width = pl.col("bb_upper_20") - pl.col("bb_lower_20")
    exprs = [
        price.log(),
        (pl.col("ema_12") / price).log(),
        (pl.col("ema_26") / price).log(),
        (pl.col("sma_20") / price).log(),
        pl.col("rsi_14") / 100.0 - 0.5,
        pl.col("macd_hist") / price,
        pl.when(width > 0).then((price - pl.col("bb_lower_20")) / width - 0.5).otherwise(0.0),
        pl.col("atr_14") / price,
    ]
    out = features.select(
        [
            e.cast(pl.Float64).fill_nan(None).fill_null(0.0).alias(c)
            for e, c in zip(exprs, CHANNELS, strict=True)
        ]
    ).to_numpy()
    return np.ascontiguousarray(out, dtype=np.float64)


class WindowBuffer:
    """Per-symbol windows over a stream of feature batches.

    ``windows(frame)`` returns, for every row of `frame`, its window ``(rows, W, C)`` float32
    and a boolean mask of rows whose symbol has at least `W` rows of history (rows without a
    full window are zero-padded at the front and marked False).
    """

    def __init__(self, window: int = 64) -> None:
        if window < 2:
            raise DataError(f"a feature window needs at least 2 rows, got {window}")
        self.window = window
        self.channels = len(CHANNELS)
        self._tail: dict[str, np.ndarray] = {}  # symbol -> last (<= W-1, C) raw channel rows
        self._seen: dict[str, int] = {}

    def windows(self, features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        w, c = self.window, self.channels
        n = features.height
        out = np.zeros((n, w, c), dtype=np.float32)
        full = np.zeros(n, dtype=bool)
        if n == 0:
            return out, full
        raw = channel_frame(features)
        groups = (
            features.select("symbol")
            .with_row_index("__row")
            .group_by("symbol", maintain_order=True)
            .agg(pl.col("__row"))
        )
        for symbol, row_list in groups.iter_rows():
            rows = np.asarray(row_list, dtype=np.int64)
            tail = self._tail.get(symbol)
            hist = raw[rows] if tail is None else np.concatenate([tail, raw[rows]])
            k = len(hist)
            # Pad the front so every row has W slots; rows with < W real ones are marked.
            padded = np.concatenate([np.zeros((w - 1, c)), hist]) if k else hist
            view = np.lib.stride_tricks.sliding_window_view(padded, w, axis=0)  # (k, C, W)
            mine = view[k - len(rows) :].transpose(0, 2, 1)  # this batch's rows, (r, W, C)
            block = mine.copy()
            block[:, :, 0] -= block[:, -1:, 0]  # log price relative to the window's last row
            seen = self._seen.get(symbol, 0)
            have = seen + np.arange(1, len(rows) + 1)
            short = have < w
            if short.any():  # zero the padding slots (the log-price shift touched them)
                for j in np.flatnonzero(short):
                    block[j, : w - int(have[j])] = 0.0
            out[rows] = block
            full[rows] = ~short
            self._tail[symbol] = hist[-(w - 1) :].copy()
            self._seen[symbol] = seen + len(rows)
        return out, full

    def reset(self) -> None:
        self._tail.clear()
        self._seen.clear()


def window_array(features: pl.DataFrame, window: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a whole history at once (research): ``WindowBuffer(window).windows(df)``."""
    return WindowBuffer(window).windows(features)
