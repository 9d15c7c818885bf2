"""Research helpers for the pattern memory: "have we seen this market situation before, and
what came next?"

`build_pattern_memory` files a history of feature windows in a Chroma-backed `PatternMemory`
exactly as the strategy's pattern expert does live (quantlab's own embeddings: Chroma never
loads or downloads an embedding model); `similar_situations` looks up the neighbours of one
window; `pattern_paths` lays out what the prices did around them; `evaluate_pattern_expert`
scores the expert's advice against the realized forward returns.

No look-ahead: every query is asked at the query row's own time, and the memory uses only
patterns whose window ended before then and whose outcome was known by then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from quantlab.adapters.sim.data import parse_time
from quantlab.core.errors import DataError
from quantlab.signals.models.dataset import information_coefficient
from quantlab.signals.patterns import Embedder, PatternMemory
from quantlab.signals.windows import CHANNELS, window_array
from quantlab.storage.vectors import ChromaVectorStore, make_client

__all__ = [
    "PatternEvaluation",
    "Situation",
    "build_pattern_memory",
    "embed_windows",
    "evaluate_pattern_expert",
    "pattern_paths",
    "similar_situations",
]

_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,60}[A-Za-z0-9]$")


def _check_features(features: pl.DataFrame, what: str) -> pl.DataFrame:
    missing = [c for c in ("symbol", "timestamp", "price", "n") if c not in features.columns]
    if missing:
        raise DataError(
            f"{what} needs a feature frame (compute_features) with {missing} (has "
            f"{features.columns})"
        )
    if not features["timestamp"].is_sorted():
        features = features.sort("timestamp", maintain_order=True)
    return features


def _ns(features: pl.DataFrame) -> np.ndarray:
    return features["timestamp"].dt.cast_time_unit("ns").to_physical().to_numpy().astype(np.int64)


def embed_windows(
    features: pl.DataFrame, *, window: int = 64, dim: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's feature window embedded as the pattern memory embeds it.

    Returns
    -------
    (np.ndarray, np.ndarray)
        ``(rows, dim)`` float32 unit vectors (zero for rows without a full window or with a
        flat one) and the boolean mask of rows with a full `window` of history.

    Examples
    --------
    >>> vectors, full = embed_windows(compute_features(bars), window=64)
    >>> np.allclose(np.linalg.norm(vectors[full], axis=1), 1, atol=1e-5)  # doctest: +SKIP
    True
    """
    features = _check_features(features, "embed_windows")
    if not isinstance(window, int) or window < 2:
        raise DataError(f"window must be an integer >= 2, got {window!r}")
    embedder = Embedder(window, len(CHANNELS), dim)
    windows, full = window_array(features, window)
    vectors = np.zeros((features.height, dim), np.float32)
    if full.any():
        vectors[full] = embedder.embed(windows[full])
    return vectors, full


def build_pattern_memory(
    features: pl.DataFrame,
    *,
    window: int = 64,
    horizon: int = 12,
    dim: int = 512,
    k: int = 10,
    store_every: int = 4,
    path: str | Path | None = None,
    collection: str = "research-patterns",
    search: Literal["auto", "chroma", "simhash"] = "simhash",
) -> PatternMemory:
    """File every `store_every`-th full window of `features` in a fresh pattern memory.

    Parameters
    ----------
    features
        A feature frame (`compute_features`) in time order.
    window, horizon, dim, k
        Rows per pattern, rows until its outcome, embedding dimension, neighbours per query.
    store_every
        File every this many bars of a symbol (consecutive windows share all but one row);
        must divide `horizon`, as in the strategy's pattern expert.
    path
        A folder for an on-disk Chroma store (e.g. ``research_dir("chroma")``); default: in
        memory (ephemeral).
    collection
        The Chroma collection; an existing collection of that name is replaced.
    search
        How queries search: ``"simhash"`` (in process, exact time filters), ``"chroma"``
        (Chroma's HNSW index) or ``"auto"`` (by size).

    Returns
    -------
    PatternMemory
        ``.size`` patterns stored, ``.predict(vectors, now_ns)``, ``.metrics()``; its Chroma
        collection is ``.store.collection``.

    Examples
    --------
    >>> memory = build_pattern_memory(compute_features(bars), store_every=4)
    >>> memory.size > 0
    True
    """
    features = _check_features(features, "build_pattern_memory")
    if not isinstance(store_every, int) or store_every < 1 or horizon % store_every:
        raise DataError(
            f"store_every must be a positive integer dividing the horizon ({horizon}), "
            f"got {store_every!r}"
        )
    if not _COLLECTION.match(collection):
        raise DataError(
            f"collection must be 3-62 characters of [A-Za-z0-9._-], starting and ending with a "
            f"letter or digit, got {collection!r}"
        )
    client = make_client(path=path) if path is not None else make_client()
    if collection in [c.name for c in client.list_collections()]:
        client.delete_collection(collection)
    store = ChromaVectorStore(client, collection, dim)
    memory = PatternMemory(
        store, strategy_id="research", dim=dim, window=window, horizon=horizon, k=k,
        search=search,
    )  # fmt: skip
    vectors, full = embed_windows(features, window=window, dim=dim)
    n = features["n"].to_numpy().astype(np.int64)
    keep = full & (n % store_every == 0)
    rows = np.flatnonzero(keep)
    memory.observe(
        features["symbol"].gather(rows).to_list(),
        _ns(features)[rows],
        n[rows],
        features["price"].to_numpy()[rows],
        vectors[rows],
    )
    return memory


@dataclass(frozen=True)
class Situation:
    """A query window and its nearest past patterns (`similar_situations`).

    Attributes
    ----------
    symbol, timestamp : the query row.
    advice : similarity-weighted mean sign of the neighbours' outcomes, in [-1, 1].
    confidence : agreement x closeness x coverage, in [0, 1].
    neighbours : ``rank, symbol, timestamp, similarity, outcome`` (forward log return over
        the memory's horizon), best first.
    """

    symbol: str
    timestamp: Any
    advice: float
    confidence: float
    neighbours: pl.DataFrame = field(repr=False)


def _row_at(features: pl.DataFrame, symbol: str, at: Any) -> int:
    mine = features.with_row_index("__row").filter(pl.col("symbol") == symbol)
    if mine.is_empty():
        raise DataError(
            f"symbol {symbol!r} is not in the features; have "
            f"{sorted(features['symbol'].unique().to_list())}"
        )
    if at is not None:
        mine = mine.filter(pl.col("timestamp") <= at)
        if mine.is_empty():
            raise DataError(f"no row of {symbol!r} at or before {at!r}")
    return int(mine["__row"][-1])


def similar_situations(
    memory: PatternMemory,
    features: pl.DataFrame,
    symbol: str,
    at: Any = None,
    *,
    search: Literal["auto", "chroma", "simhash"] | None = None,
) -> Situation:
    """The memory's nearest past patterns to `symbol`'s window ending at `at` (default: its
    last row), asked at that row's time (no look-ahead).

    `at` is a datetime or an ISO string (UTC). `search` overrides the memory's search path
    for this query: ``"chroma"`` asks Chroma's HNSW index, ``"simhash"`` the in-process
    index (a query older than the newest stored outcome always takes the in-process index,
    which filters by time exactly).

    Examples
    --------
    >>> situation = similar_situations(memory, features, "ETH/BTC")
    >>> situation.neighbours.columns
    ['rank', 'symbol', 'timestamp', 'similarity', 'outcome']
    """
    features = _check_features(features, "similar_situations")
    row = _row_at(features, symbol, None if at is None else parse_time(at, "at"))
    mine = features.head(row + 1).filter(pl.col("symbol") == symbol)
    window = memory.embedder.window
    if mine.height < window:
        raise DataError(f"{symbol!r} has {mine.height} rows up to {at!r}, a pattern needs {window}")
    vectors, _ = embed_windows(mine.tail(window), window=window, dim=memory.dim)
    now = int(_ns(mine)[-1])
    if search not in (None, "auto", "chroma", "simhash"):
        raise DataError(f"search must be 'auto', 'chroma' or 'simhash', got {search!r}")
    saved = memory.search
    memory.search = search or saved
    try:
        prediction = memory.predict(vectors[-1:], now)
    finally:
        memory.search = saved
    found = prediction.neighbours[0]
    neighbours = pl.DataFrame(
        {
            "rank": list(range(1, len(found) + 1)),
            "symbol": [nb.symbol for nb in found],
            "timestamp": [nb.ts for nb in found],
            "similarity": [nb.similarity for nb in found],
            "outcome": [nb.outcome for nb in found],
        },
        schema={
            "rank": pl.Int64,
            "symbol": pl.String,
            "timestamp": pl.Int64,
            "similarity": pl.Float64,
            "outcome": pl.Float64,
        },
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ns", "UTC")))
    return Situation(
        symbol=symbol,
        timestamp=mine["timestamp"][-1],
        advice=float(prediction.advice[0]),
        confidence=float(prediction.confidence[0]),
        neighbours=neighbours,
    )


def pattern_paths(
    features: pl.DataFrame, situation: Situation, *, before: int = 64, after: int = 12
) -> pl.DataFrame:
    """The price paths around the query and each neighbour: ``label, offset, log_price``.

    ``offset`` counts the symbol's bars from the pattern's last row (0), from ``-before + 1``
    to `after`; ``log_price`` is the log price relative to that row, so paths of different
    symbols and price levels overlay. The query has no path after 0 (that is the future).

    Examples
    --------
    >>> paths = pattern_paths(features, situation, before=64, after=12)
    >>> paths.filter(pl.col("offset") == 0)["log_price"].abs().max()
    0.0
    """
    features = _check_features(features, "pattern_paths")
    if before < 1 or after < 0:
        raise DataError(f"need before >= 1 and after >= 0, got before={before}, after={after}")
    targets = [("query", situation.symbol, situation.timestamp, 0)] + [
        (f"#{r} {s}", s, t, after)
        for r, s, t in situation.neighbours.select("rank", "symbol", "timestamp").iter_rows()
    ]
    frames = []
    for label, symbol, ts, ahead in targets:
        mine = features.filter(pl.col("symbol") == symbol).with_row_index("__i")
        hit = mine.filter(pl.col("timestamp") == ts)
        if hit.is_empty():
            raise DataError(f"no row of {symbol!r} at {ts!r} in the features")
        i = int(hit["__i"][0])
        lo, hi = max(0, i - before + 1), min(mine.height - 1, i + ahead)
        part = mine.slice(lo, hi - lo + 1)
        base = float(np.log(mine["price"][i]))
        frames.append(
            part.select(
                pl.lit(label).alias("label"),
                (pl.col("__i").cast(pl.Int64) - i).alias("offset"),
                (pl.col("price").log() - base).alias("log_price"),
            )
        )
    return pl.concat(frames)


@dataclass(frozen=True)
class PatternEvaluation:
    """The pattern expert's advice against what happened (`evaluate_pattern_expert`).

    Attributes
    ----------
    rows : ``symbol, timestamp, advice, confidence, score`` (advice x confidence: what the
        expert emits), ``neighbours`` and ``realized`` (forward log return over the horizon).
    stats : ``queries``, ``coverage`` (share with a non-zero score), ``hit_rate`` (sign of
        the score equals the sign of the realized return, where both are non-zero), ``ic``
        (Spearman), ``corr`` (Pearson), ``mean_when_long`` and ``mean_when_short`` (mean
        realized return where the score is > 0 / < 0).
    """

    rows: pl.DataFrame
    stats: dict[str, float]


def evaluate_pattern_expert(
    memory: PatternMemory,
    features: pl.DataFrame,
    *,
    every: int = 12,
    start: Any = None,
) -> PatternEvaluation:
    """Ask the memory at every `every`-th bar of each symbol, at that bar's own time, and
    compare the expert's score with the forward return that followed.

    Because each query only sees patterns that ended before it and whose outcome was known
    by then, a memory built from the whole history gives a walk-forward evaluation.

    Parameters
    ----------
    memory
        From `build_pattern_memory` over (at least the history before) `features`.
    features
        The feature frame the queries come from.
    every
        Query every this many bars of a symbol (>= 1).
    start
        Query only rows at or after this time (an ISO string is UTC; earlier rows still feed
        the memory).

    Examples
    --------
    >>> evaluation = evaluate_pattern_expert(memory, features, every=12)
    >>> sorted(evaluation.stats)[:3]
    ['corr', 'coverage', 'hit_rate']
    """
    features = _check_features(features, "evaluate_pattern_expert")
    if not isinstance(every, int) or every < 1:
        raise DataError(f"every must be a positive integer, got {every!r}")
    h = memory.horizon
    vectors, full = embed_windows(features, window=memory.embedder.window, dim=memory.dim)
    fwd = features.select(
        (pl.col("price").shift(-h) / pl.col("price")).log().over("symbol").alias("realized")
    )["realized"]
    realized = fwd.cast(pl.Float64).fill_null(np.nan).to_numpy()
    n = features["n"].to_numpy()
    keep = full & (n % every == 0) & np.isfinite(realized)
    if start is not None:
        keep &= (features["timestamp"] >= parse_time(start, "start")).to_numpy()
    rows = np.flatnonzero(keep)
    if not len(rows):
        raise DataError("no row to evaluate: none has a full window, an outcome and n % every == 0")
    prediction = memory.predict(vectors[rows], _ns(features)[rows])
    score = np.clip(prediction.advice * prediction.confidence, -1.0, 1.0)
    real = realized[rows]
    out = pl.DataFrame(
        {
            "symbol": features["symbol"].gather(rows),
            "timestamp": features["timestamp"].gather(rows),
            "advice": prediction.advice,
            "confidence": prediction.confidence,
            "score": score,
            "neighbours": [len(nb) for nb in prediction.neighbours],
            "realized": real,
        }
    )
    active = score != 0
    decided = active & (real != 0)
    hit = (
        float(np.mean(np.sign(score[decided]) == np.sign(real[decided])))
        if decided.any()
        else float("nan")
    )
    corr = (
        float(np.corrcoef(score[active], real[active])[0, 1])
        if active.sum() > 2 and np.std(score[active]) > 0
        else float("nan")
    )
    stats = {
        "queries": float(len(rows)),
        "coverage": float(np.mean(active)),
        "hit_rate": hit,
        "ic": information_coefficient(score[active], real[active])
        if active.sum() > 2
        else float("nan"),
        "corr": corr,
        "mean_when_long": float(np.mean(real[score > 0])) if (score > 0).any() else float("nan"),
        "mean_when_short": float(np.mean(real[score < 0])) if (score < 0).any() else float("nan"),
    }
    return PatternEvaluation(out, stats)
