"""Feature windows: streaming equals the whole history, scale-free, warm-up marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core.errors import DataError
from quantlab.features import compute
from quantlab.signals.windows import CHANNELS, WindowBuffer, channel_frame, window_array


@pytest.fixture(scope="module")
def features(data_dir: Path) -> pl.DataFrame:
    bars = pl.read_parquet(data_dir / "binance_btc_pairs_5m_2018-01.parquet")
    return compute(
        bars.filter(pl.col("timestamp") < pl.col("timestamp").min() + pl.duration(days=2))
    )


def test_shape_and_warm_up(features: pl.DataFrame) -> None:
    windows, full = window_array(features, 16)
    assert windows.shape == (features.height, 16, len(CHANNELS))
    assert windows.dtype == np.float32
    n = features["n"].to_numpy()
    np.testing.assert_array_equal(full, n >= 16)
    # the log-price channel is relative to the window's last row
    assert np.all(windows[full][:, -1, 0] == 0.0)
    # a row with 5 rows of history has zeros in its 11 padding slots
    row = int(np.flatnonzero(n == 5)[0])
    assert not windows[row, :11].any()
    assert windows[row, 11:].any()


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 2_000), min_size=1, max_size=6))
def test_streaming_equals_whole_history(features: pl.DataFrame, cuts: list[int]) -> None:
    whole, whole_full = window_array(features, 32)
    buffer = WindowBuffer(32)
    parts, masks, start = [], [], 0
    for cut in [*sorted(set(cuts)), features.height]:
        if cut <= start:
            continue
        w, m = buffer.windows(features[start:cut])
        parts.append(w)
        masks.append(m)
        start = cut
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(np.concatenate(masks), whole_full)


def test_scale_free(data_dir: Path) -> None:
    bars = pl.read_parquet(data_dir / "btc_perp_1m_2022-01.parquet").head(3_000)
    scaled = bars.with_columns([pl.col(c) * 1000.0 for c in ("open", "high", "low", "close")])
    a, _ = window_array(compute(bars), 32)
    b, _ = window_array(compute(scaled), 32)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_columns_named() -> None:
    with pytest.raises(DataError, match="rsi_14"):
        channel_frame(pl.DataFrame({"symbol": ["X"], "price": [1.0]}))
    with pytest.raises(DataError, match="at least 2"):
        WindowBuffer(1)
