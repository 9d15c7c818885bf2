"""Labelled feature windows, purged walk-forward splits and fold metrics (numpy/polars only).

A labelled row is a feature window (`quantlab.signals.windows`) whose symbol has a full window
of history and a forward outcome: the log return from the row's price to the price `horizon`
rows later *of the same symbol*. That outcome is known only at the later row's timestamp, so a
row's label spans ``(t, label_end]``. Rows are kept in time order (several symbols interleave).

`walk_forward_splits` cuts the rows into an initial training block and `n_splits` test folds;
each fold trains on everything before it (an expanding window) minus the rows whose label
window reaches into the fold (*purging*: their outcome overlaps the fold's prices) and minus an
*embargo* of `embargo` further time steps. De Prado places the embargo after a fold, against
training rows that follow it; in walk-forward every training row precedes its fold, so here it
is a gap: a training row's label must resolve at least `embargo` steps before the fold's first
timestamp. Fold boundaries never split a timestamp, so rows of other symbols at the same time
are on the same side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from quantlab.core.errors import DataError
from quantlab.signals.windows import window_array

TARGETS: tuple[str, ...] = ("direction", "return")


@dataclass(frozen=True)
class LabeledWindows:
    """Rows with a full window and a forward outcome, in time order.

    Attributes
    ----------
    windows : (n, W, C) float32 feature windows.
    returns : (n,) float64 forward log return over `horizon` rows of the row's symbol.
    timestamps : (n,) int64 ns UTC of the row.
    label_end : (n,) int64 ns UTC of the row `horizon` rows later (when the outcome is known).
    symbols : (n,) the row's symbol.
    """

    windows: np.ndarray
    returns: np.ndarray
    timestamps: np.ndarray
    label_end: np.ndarray
    symbols: np.ndarray
    window: int
    horizon: int

    def __len__(self) -> int:
        return len(self.returns)

    def labels(self, target: str) -> np.ndarray:
        """float32 training labels: 1.0 for an up move (`direction`), or the return itself."""
        if target == "direction":
            return (self.returns > 0).astype(np.float32)
        if target == "return":
            return self.returns.astype(np.float32)
        raise DataError(f"unknown target {target!r}; expected one of {list(TARGETS)}")

    def take(self, rows: np.ndarray) -> LabeledWindows:
        """The subset at positions `rows` (kept in the given order)."""
        return LabeledWindows(
            self.windows[rows], self.returns[rows], self.timestamps[rows],
            self.label_end[rows], self.symbols[rows], self.window, self.horizon,
        )  # fmt: skip


def _ns(column: pl.Series) -> np.ndarray:
    if not isinstance(column.dtype, pl.Datetime):
        raise DataError(f"timestamps must be a Datetime column, got {column.dtype}")
    physical = column.dt.cast_time_unit("ns").to_physical().fill_null(0)
    return physical.to_numpy().astype(np.int64)


def label_windows(features: pl.DataFrame, *, window: int, horizon: int) -> LabeledWindows:
    """Windows and forward log returns of every row of `features` that has both.

    Parameters
    ----------
    features
        A feature frame (`quantlab.features.compute`): ``symbol, timestamp, price`` and the
        columns `quantlab.signals.windows.CHANNELS` are built from; sorted by time here if it
        is not already (stable, so each symbol keeps its order).
    window
        Rows per window.
    horizon
        Rows of the same symbol between a row and its outcome.
    """
    if horizon < 1:
        raise DataError(f"the label horizon must be >= 1 row, got {horizon}")
    for col in ("symbol", "timestamp", "price"):
        if col not in features.columns:
            raise DataError(f"labelled windows need column {col!r} (have {features.columns})")
    if not features["timestamp"].is_sorted():
        features = features.sort("timestamp", maintain_order=True)
    windows, full = window_array(features, window)
    fwd = features.select(
        (pl.col("price").shift(-horizon).over("symbol") / pl.col("price")).log().alias("ret"),
        pl.col("timestamp").shift(-horizon).over("symbol").alias("end"),
    )
    ret = fwd["ret"].cast(pl.Float64).fill_nan(None).to_numpy()
    ends = fwd["end"]
    keep = full & ~np.isnan(ret) & ends.is_not_null().to_numpy()
    rows = np.flatnonzero(keep)
    return LabeledWindows(
        windows=np.ascontiguousarray(windows[rows]),
        returns=ret[rows].astype(np.float64),
        timestamps=_ns(features["timestamp"])[rows],
        label_end=_ns(ends)[rows],
        symbols=features["symbol"].to_numpy()[rows],
        window=window,
        horizon=horizon,
    )


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: positions of its training and test rows.

    `purged` counts the rows before the fold dropped because their label window reaches the
    fold; `embargoed` those dropped by the embargo alone.
    """

    index: int
    train: np.ndarray
    test: np.ndarray
    test_start: int
    test_end: int
    purged: int
    embargoed: int


def _as_times(times: int | np.ndarray | pl.Series) -> np.ndarray:
    if isinstance(times, int | np.integer):
        if times < 0:
            raise DataError(f"the number of rows must be >= 0, got {times}")
        return np.arange(int(times), dtype=np.int64)
    if isinstance(times, pl.Series):
        return _ns(times) if isinstance(times.dtype, pl.Datetime) else times.to_numpy()
    arr = np.asarray(times)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"times must be a row count, datetimes or integers, got {arr.dtype}")
    return arr.astype(np.int64)


def walk_forward_splits(
    times: int | np.ndarray | pl.Series,
    n_splits: int,
    horizon: int,
    embargo: int = 0,
    *,
    label_end: np.ndarray | None = None,
) -> list[Fold]:
    """Expanding-window walk-forward folds with purging and an embargo.

    Parameters
    ----------
    times
        The rows' times in non-decreasing order (datetimes or integer ns), or a row count
        ``n`` for a single evenly spaced series (row i at time i).
    n_splits
        Test folds; the rows are cut into ``n_splits + 1`` equal blocks, the first of which
        only ever trains.
    horizon
        Rows until a row's outcome is known. Without `label_end`, row i's label ends at row
        ``i + horizon``'s time: right for one symbol; pass `label_end` for several.
    embargo
        Time steps (distinct timestamps) between the last resolved training label and the
        fold's first timestamp.
    label_end
        Per row, the time its label resolves (`LabeledWindows.label_end`).

    Examples
    --------
    >>> [(len(f.train), len(f.test)) for f in walk_forward_splits(100, 3, horizon=5)]
    [(20, 25), (45, 25), (70, 25)]
    """
    t = _as_times(times)
    n = len(t)
    if n_splits < 1:
        raise DataError(f"walk-forward needs n_splits >= 1, got {n_splits}")
    if horizon < 0 or embargo < 0:
        raise DataError(f"horizon and embargo must be >= 0, got {horizon} and {embargo}")
    if n and np.any(np.diff(t) < 0):
        bad = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise DataError(f"times must be in non-decreasing order; row {bad} goes back in time")
    if label_end is None:
        if isinstance(times, int | np.integer):
            ends = t + horizon
        else:
            ends = t[np.minimum(np.arange(n) + horizon, max(n - 1, 0))]
    else:
        ends = np.asarray(label_end, dtype=np.int64)
        if ends.shape != t.shape:
            raise DataError(f"label_end has shape {ends.shape}, times have {t.shape}")
        if np.any(ends < t):
            raise DataError("label_end must not be before the row's own time")
    steps = np.unique(t)
    # Block edges, snapped back to the first row of their timestamp.
    raw_edges = np.linspace(0, n, n_splits + 2).round().astype(np.int64)
    inner = [int(np.searchsorted(t, t[e], "left")) if e < n else n for e in raw_edges[1:-1]]
    edges = [0, *inner, n]
    folds: list[Fold] = []
    for k in range(n_splits):
        a, b = edges[k + 1], edges[k + 2]
        if b <= a or a == 0:
            raise DataError(
                f"{n} rows ({len(steps)} timestamps) are too few for {n_splits} walk-forward "
                f"folds: fold {k} would be empty or have no training block"
            )
        start = int(t[a])
        step_a = int(np.searchsorted(steps, start, "left"))
        cutoff = int(steps[max(step_a - embargo, 0)])
        before = np.arange(a, dtype=np.int64)
        overlaps = ends[:a] >= start  # label window (t, end] reaches the fold's first price
        gated = ends[:a] >= cutoff
        train = before[~gated]
        if len(train) == 0:
            raise DataError(
                f"fold {k} has no training rows left after purging (horizon={horizon}, "
                f"embargo={embargo}); use fewer folds, a shorter horizon or more data"
            )
        folds.append(
            Fold(
                index=k,
                train=train,
                test=np.arange(a, b, dtype=np.int64),
                test_start=start,
                test_end=int(t[b - 1]),
                purged=int(overlaps.sum()),
                embargoed=int((gated & ~overlaps).sum()),
            )
        )
    return folds


def information_coefficient(prediction: np.ndarray, realized: np.ndarray) -> float:
    """Spearman rank correlation of predictions and realized returns (0.0 if either is flat)."""
    if len(prediction) < 2:
        return 0.0
    ranks = pl.DataFrame({"p": prediction, "r": realized}).select(
        pl.col("p").rank("average"), pl.col("r").rank("average")
    )
    p, r = ranks["p"].to_numpy(), ranks["r"].to_numpy()
    if p.std() == 0 or r.std() == 0:
        return 0.0
    return float(np.corrcoef(p, r)[0, 1])


def score(target: str, prediction: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    """Fold metrics of `prediction` against the realized forward log returns.

    ``direction`` (a probability of an up move): ``accuracy``, ``log_loss``, ``up_rate`` (the
    share of up moves, accuracy's naive baseline is ``max(up_rate, 1 - up_rate)``) and ``ic``.
    ``return``: ``mse``, ``mse_zero`` (of always predicting 0), ``accuracy`` of the sign, ``ic``.
    """
    pred = np.asarray(prediction, dtype=np.float64)
    real = np.asarray(realized, dtype=np.float64)
    if pred.shape != real.shape or pred.ndim != 1 or len(pred) == 0:
        raise DataError(
            f"score needs two equal non-empty 1-d arrays, got {pred.shape}, {real.shape}"
        )
    up = real > 0
    ic = information_coefficient(pred, real)
    if target == "direction":
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        return {
            "accuracy": float(np.mean((pred > 0.5) == up)),
            "log_loss": float(-np.mean(np.where(up, np.log(p), np.log1p(-p)))),
            "up_rate": float(np.mean(up)),
            "ic": ic,
        }
    if target == "return":
        return {
            "mse": float(np.mean((pred - real) ** 2)),
            "mse_zero": float(np.mean(real**2)),
            "accuracy": float(np.mean((pred > 0) == up)),
            "ic": ic,
        }
    raise DataError(f"unknown target {target!r}; expected one of {list(TARGETS)}")
