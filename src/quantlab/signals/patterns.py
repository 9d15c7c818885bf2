"""The pattern memory: "what happened after windows that looked like this one?"

Every feature window (`quantlab.signals.windows`) is embedded into a unit vector and, once its
outcome is known, filed with that outcome. A prediction looks up the k most similar past
windows and turns their outcomes into advice.

**Embedding** (`Embedder`). Each channel of a ``(W, C)`` window is z-scored within the window
(population std; a channel whose std is below ``max(1e-12, 1e-6·|mean|)`` is flat and becomes
zeros), the result is flattened time-major to ``W·C`` values, projected to `dim` by a fixed
Gaussian matrix drawn from `EMBED_SEED` when ``W·C != dim`` (every process draws the same
matrix), and L2-normalised. The vector is therefore deterministic and free of the price's scale
(the channels already are, and the z-score also removes each channel's level and spread), so
cosine similarity compares shapes. A window holding a non-finite value, or whose channels are
all flat, embeds to the zero vector, which the memory neither stores nor queries.

**Outcomes** (`PatternMemory.observe`). A row is filed as pending; it resolves when the row of
the same symbol `horizon` rows later (``n + horizon``) has been observed, in the same call or a
later one: ``outcome = log(price_later / price)``. Only resolved patterns are stored, under the
id ``strategy:{strategy_id}:pattern:{ts_ns}:{symbol}`` with metadata ``symbol``, ``ts`` (epoch
seconds, what Chroma filters on), ``ts_ns``, ``outcome`` and ``known_ns`` (the time of the
outcome row: when the outcome became known).

**No look-ahead.** A neighbour is usable at ``now`` only if its window ended before now
(``ts_ns < now``) and its outcome was known by then (``known_ns <= now``). Calling `predict`
before `observe` for a batch makes the second condition automatic; if a caller observes rows
*later* than a query's ``now`` first, those queries are answered from the in-process index,
which checks both conditions exactly (counted in ``metrics()["search_path_rows"]["guard"]``).
Chroma is asked with ``where ts < floor(now / 1 s)`` whenever that can exclude a stored pattern
(it is left out when provably a no-op: it costs Chroma O(N) per query, see
`quantlab.storage.vectors`), and every result is checked again on return.

**Search.** `SimHashIndex` keeps every stored vector in process with a 512-bit SimHash
signature (random hyperplanes, seeded). A query ranks the allowed rows by Hamming distance
(a compiled popcount scan, 64 bytes per row), keeps the closest `candidates` and re-ranks them
by exact cosine. Hyperplane *tables* (b bits per table, L tables) were measured first and
rejected: overlapping market windows have top-10 cosines of only ~0.65-0.8, so tables reached
0.98 recall only when ~18 % of the memory fell into the probed buckets (see
``benchmarks/measure_pattern_search.py``). ``search="chroma"`` asks Chroma's HNSW index instead;
``"auto"`` uses the in-process index below `AUTO_CHROMA_FROM` (200k) stored patterns. Measured
on held-out real windows at 100k patterns (two runs): SimHash 0.7 ms per query (6-7 ms per 10)
at recall@10 0.996, Chroma (ef_search 128) 1.6-2.2 ms (12 ms per 10) at 0.995; the scan grows
linearly with N and HNSW more slowly, so the batch-of-10 latencies meet near 200k
(extrapolated, not measured). The in-process path is also reproducible: two Chroma collections
built from the same inserts in the same order answered 3 to 9 of 1,000 queries differently.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
import numpy as np
from numba import njit

from quantlab.core.errors import DataError, StorageError
from quantlab.signals.windows import CHANNELS

EMBED_SEED = 0x5EED_0001
"""Seed of the embedding's random projection (used only when ``W·C != dim``)."""
SIMHASH_SEED = 0x5EED_0002
"""Seed of the SimHash hyperplanes."""
STD_ABS_FLOOR = 1e-12
STD_REL_FLOOR = 1e-6
AUTO_CHROMA_FROM = 200_000
"""``search="auto"`` queries Chroma from this many stored patterns on (see the module)."""

_NS = 1_000_000_000
_NO_TIME = np.iinfo(np.int64).max

SearchPath = Literal["auto", "chroma", "simhash"]


class Neighbour(msgspec.Struct, frozen=True):
    """A stored pattern returned by a query. `ts` is the window's end, epoch nanoseconds UTC;
    `similarity` is the cosine similarity to the query."""

    id: str
    symbol: str
    ts: int
    outcome: float
    similarity: float


@dataclass(frozen=True)
class Prediction:
    """Per query row: `advice` in [-1, 1], `confidence` in [0, 1] and the neighbours used."""

    advice: np.ndarray
    confidence: np.ndarray
    neighbours: list[list[Neighbour]]


@runtime_checkable
class VectorStore(Protocol):
    """Where patterns persist (port). `ChromaVectorStore` implements it.

    Metadata values are str, int or float; ``ts`` is int epoch seconds and `query` returns only
    entries with ``ts < before_ts``.
    """

    def upsert(
        self, ids: list[str], vectors: np.ndarray, metadatas: list[dict[str, str | int | float]]
    ) -> None: ...

    def query(
        self, vectors: np.ndarray, k: int, *, before_ts: int | None = None
    ) -> list[list[Neighbour]]: ...

    def get_all(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]: ...

    def delete_before(self, ts: int) -> int: ...

    def count(self) -> int: ...


# --- compiled kernels -----------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _zscore_kernel(windows, out, abs_floor, rel_floor):  # type: ignore[no-untyped-def]
    n, w, c = windows.shape
    mean = np.empty(c)
    inv = np.empty(c)
    for i in range(n):
        win = windows[i]
        mean[:] = 0.0
        for t in range(w):  # row-major passes: contiguous reads
            for ch in range(c):
                mean[ch] += win[t, ch]
        mean /= w
        inv[:] = 0.0
        for t in range(w):
            for ch in range(c):
                d = win[t, ch] - mean[ch]
                inv[ch] += d * d
        live = 0
        for ch in range(c):
            std = math.sqrt(inv[ch] / w)
            if not math.isfinite(std):
                live = -1
                break
            if std <= max(abs_floor, rel_floor * abs(mean[ch])):
                inv[ch] = 0.0  # a flat channel contributes zeros
            else:
                inv[ch] = 1.0 / std
                live += 1
        row = out[i]
        if live <= 0:  # all flat, or a non-finite value somewhere: the zero vector
            row[:] = 0.0
            continue
        scale = 1.0 / math.sqrt(live * w)  # each live channel's z-scores have sum of squares w
        for t in range(w):
            for ch in range(c):
                row[t * c + ch] = (win[t, ch] - mean[ch]) * (inv[ch] * scale)


_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True, inline="always")
def _popcount(x):  # type: ignore[no-untyped-def]
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dot(a, b):  # type: ignore[no-untyped-def]
    s = np.float32(0.0)
    for j in range(a.shape[0]):
        s += a[j] * b[j]
    return s


@njit(cache=True, nogil=True)
def _sign_kernel(vectors, planes, out):  # type: ignore[no-untyped-def]
    # out[i, w] bit b = (vectors[i] . planes[64 w + b] > 0): one fixed summation order, so a
    # vector gets the same signature whatever batch it comes in (BLAS does not promise that)
    for i in range(vectors.shape[0]):
        for w in range(out.shape[1]):
            word = np.uint64(0)
            for b in range(64):
                if _dot(vectors[i], planes[w * 64 + b]) > 0:
                    word |= np.uint64(1) << np.uint64(b)
            out[i, w] = word


_BLOCK = 16  # queries scanned together: each stored signature is read once per block


@njit(cache=True, nogil=True)
def _project_kernel(flat, projection, out):  # type: ignore[no-untyped-def]
    # out = normalise(flat @ projection.T) in a fixed order (BLAS may sum differently for
    # different batch shapes; an embedding must not depend on its batch)
    for i in range(flat.shape[0]):
        total = 0.0
        for j in range(projection.shape[0]):
            v = _dot(flat[i], projection[j])
            out[i, j] = v
            total += v * v
        scale = 1.0 / math.sqrt(total) if total > 0 else 0.0
        for j in range(projection.shape[0]):
            out[i, j] *= scale


@njit(cache=True, nogil=True)
def _search_kernel(qsig, qvec, sigs, vecs, ts, known, before, now, n_cand, out_idx, out_sim):  # type: ignore[no-untyped-def]
    n, words = sigs.shape
    nq = qsig.shape[0]
    k = out_idx.shape[1]
    top = words * 64
    dist = np.empty((_BLOCK, n), np.int16)
    hist = np.zeros((_BLOCK, top + 1), np.int64)
    cand = np.empty(min(n_cand, n), np.int64)
    for q0 in range(0, nq, _BLOCK):
        nb = min(_BLOCK, nq - q0)
        hist[:] = 0
        for i in range(n):  # Hamming distance of every allowed row (-1: filtered out)
            sig = sigs[i]
            for b in range(nb):
                q = q0 + b
                if ts[i] < before[q] and known[i] <= now[q]:
                    d = 0
                    for wd in range(words):
                        d += _popcount(qsig[q, wd] ^ sig[wd])
                    dist[b, i] = d
                    hist[b, d] += 1
                else:
                    dist[b, i] = -1
        for b in range(nb):
            q = q0 + b
            # the `n_cand` closest allowed rows (all if fewer), ties by insertion order
            allowed = 0
            for d in range(top + 1):
                allowed += hist[b, d]
            limit = min(n_cand, allowed)
            thr = top
            cum = 0
            for d in range(top + 1):
                if cum + hist[b, d] >= limit:
                    thr = d
                    break
                cum += hist[b, d]
            at_thr = limit - cum
            m = 0
            for i in range(n):
                d = dist[b, i]
                if d < 0 or d > thr:
                    continue
                if d == thr:
                    if at_thr == 0:
                        continue
                    at_thr -= 1
                cand[m] = i
                m += 1
            # exact re-rank: top k by (similarity desc, insertion order asc)
            for j in range(k):
                out_idx[q, j] = -1
                out_sim[q, j] = -2.0
            for j in range(m):
                i = cand[j]
                s = _dot(qvec[q], vecs[i])
                last = k - 1
                if s < out_sim[q, last] or (s == out_sim[q, last] and out_idx[q, last] >= 0):
                    continue
                pos = last
                while pos > 0 and (
                    s > out_sim[q, pos - 1]
                    or (s == out_sim[q, pos - 1] and i < out_idx[q, pos - 1])
                ):
                    out_sim[q, pos] = out_sim[q, pos - 1]
                    out_idx[q, pos] = out_idx[q, pos - 1]
                    pos -= 1
                out_sim[q, pos] = s
                out_idx[q, pos] = i


# --- embedding --------------------------------------------------------------------------------


class Embedder:
    """Feature windows ``(n, W, C)`` -> unit vectors ``(n, dim)`` float32 (see the module).

    Examples
    --------
    >>> emb = Embedder(window=64, channels=8, dim=512)
    >>> vectors = emb.embed(windows[full])  # doctest: +SKIP
    """

    def __init__(self, window: int = 64, channels: int = 8, dim: int = 512) -> None:
        if window < 2 or channels < 1 or dim < 1:
            raise DataError(
                f"Embedder needs window >= 2, channels >= 1, dim >= 1, "
                f"got window={window}, channels={channels}, dim={dim}"
            )
        self.window, self.channels, self.dim = window, channels, dim
        flat = window * channels
        self._projection: np.ndarray | None = None
        if flat != dim:
            rng = np.random.default_rng(EMBED_SEED)  # (dim, W·C): one row per output
            self._projection = rng.standard_normal((dim, flat), np.float32)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embed `windows` ``(n, W, C)``; returns ``(n, dim)`` float32, each row unit or zero."""
        arr = np.asarray(windows)
        expected = (self.window, self.channels)
        if arr.ndim != 3 or arr.shape[1:] != expected:
            raise DataError(
                f"Embedder expects windows of shape (n, {self.window}, {self.channels}), "
                f"got {arr.shape}"
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        flat = np.empty((arr.shape[0], self.window * self.channels), np.float32)
        _zscore_kernel(arr, flat, STD_ABS_FLOOR, STD_REL_FLOOR)
        if self._projection is None:
            return flat
        out = np.empty((len(flat), self.dim), np.float32)
        _project_kernel(flat, self._projection, out)
        return out


# --- in-process index -----------------------------------------------------------------------


class SimHashIndex:
    """Stored patterns in process: SimHash Hamming ranking + exact cosine re-rank.

    Parameters
    ----------
    dim
        Vector dimension.
    bits
        Signature length (a multiple of 64).
    candidates
        How many Hamming-closest rows are re-ranked exactly per query; with fewer allowed rows
        than this the search is exact.
    """

    def __init__(
        self, dim: int, *, bits: int = 512, candidates: int = 500, seed: int = SIMHASH_SEED
    ) -> None:
        if dim < 1 or bits < 64 or bits % 64 or candidates < 1:
            raise DataError(
                f"SimHashIndex needs dim >= 1, bits a positive multiple of 64 and candidates "
                f">= 1, got dim={dim}, bits={bits}, candidates={candidates}"
            )
        self.dim, self.bits, self.candidates = dim, bits, candidates
        rng = np.random.default_rng(seed)
        self._planes = np.ascontiguousarray(rng.standard_normal((bits, dim), np.float32))
        self.clear()

    def clear(self) -> None:
        """Forget every row (the hyperplanes stay)."""
        dim = self.dim
        self._n = 0
        self._vecs = np.empty((0, dim), np.float32)
        self._sigs = np.empty((0, self.bits // 64), np.uint64)
        self._ts = np.empty(0, np.int64)
        self._known = np.empty(0, np.int64)
        self._outcome = np.empty(0, np.float64)
        self._ids: list[str] = []
        self._symbols: list[str] = []
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return self._n

    def signatures(self, vectors: np.ndarray) -> np.ndarray:
        """The packed ``(n, bits/64)`` uint64 signatures of `vectors`."""
        v = np.ascontiguousarray(vectors, np.float32)
        out = np.empty((len(v), self.bits // 64), np.uint64)
        _sign_kernel(v, self._planes, out)
        return out

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        ts_ns: np.ndarray,
        symbols: Sequence[str],
        outcomes: np.ndarray,
        known_ns: np.ndarray | None = None,
    ) -> None:
        """Insert or replace (same id) patterns; vectors are normalised, zero rows rejected."""
        vecs = _unit_rows(vectors, self.dim, "SimHashIndex.add")
        m = len(vecs)
        ts = np.asarray(ts_ns, np.int64).reshape(-1)
        known = ts if known_ns is None else np.asarray(known_ns, np.int64).reshape(-1)
        out = np.asarray(outcomes, np.float64).reshape(-1)
        if not (len(ids) == len(symbols) == len(ts) == len(known) == len(out) == m):
            raise DataError(
                f"SimHashIndex.add needs one id, symbol, ts, known time and outcome per vector "
                f"({m}), got {len(ids)}, {len(symbols)}, {len(ts)}, {len(known)}, {len(out)}"
            )
        last = {id_: j for j, id_ in enumerate(ids)}
        if len(last) < m:  # an id repeated within the call: its last row wins
            keep = np.array(sorted(last.values()), np.int64)
            ids, symbols = [ids[j] for j in keep], [symbols[j] for j in keep]
            vecs, ts, known, out = vecs[keep], ts[keep], known[keep], out[keep]
        rows = np.empty(len(ids), np.int64)
        fresh: list[int] = []
        for j, id_ in enumerate(ids):
            at = self._row.get(id_)
            if at is None:  # new ids go to the end, in order; known ones are replaced
                at = self._n + len(fresh)
                self._row[id_] = at
                fresh.append(j)
            rows[j] = at
        self._reserve(self._n + len(fresh))
        self._ids.extend(ids[j] for j in fresh)
        self._symbols.extend(symbols[j] for j in fresh)
        self._n += len(fresh)
        for j, at in enumerate(rows.tolist()):
            self._symbols[at] = symbols[j]
        self._vecs[rows], self._sigs[rows] = vecs, self.signatures(vecs)
        self._ts[rows], self._known[rows], self._outcome[rows] = ts, known, out

    def query(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        before_ns: int | np.ndarray | None = None,
        known_by_ns: int | np.ndarray | None = None,
    ) -> list[list[Neighbour]]:
        """The `k` most similar rows with ``ts < before_ns`` and ``known <= known_by_ns`` (per
        query row or one value for all), best first."""
        if k < 1:
            raise DataError(f"query k must be >= 1, got {k}")
        q = np.asarray(vectors, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"SimHashIndex.query expects (n, {self.dim}) vectors, got {q.shape}")
        nq = len(q)
        if nq == 0 or self._n == 0:
            return [[] for _ in range(nq)]
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.ascontiguousarray(np.divide(q, norm, out=np.zeros_like(q), where=norm > 0))
        before = _per_row(before_ns, nq, _NO_TIME)
        known_by = _per_row(known_by_ns, nq, _NO_TIME - 1)
        idx = np.empty((nq, k), np.int64)
        sim = np.empty((nq, k), np.float32)
        n = self._n
        _search_kernel(
            self.signatures(q), q, self._sigs[:n], self._vecs[:n], self._ts[:n], self._known[:n],
            before, known_by, self.candidates, idx, sim,
        )  # fmt: skip
        result: list[list[Neighbour]] = []
        for r in range(nq):
            row: list[Neighbour] = []
            if norm[r, 0] > 0:
                for i, s in zip(idx[r].tolist(), sim[r].tolist(), strict=True):
                    if i < 0:
                        break
                    row.append(
                        Neighbour(self._ids[i], self._symbols[i], int(self._ts[i]),
                                  float(self._outcome[i]), float(s))
                    )  # fmt: skip
            result.append(row)
        return result

    def known_ns(self, id_: str) -> int | None:
        """When the outcome of pattern `id_` became known (None if not held)."""
        at = self._row.get(id_)
        return None if at is None else int(self._known[at])

    def delete_before(self, ts_ns: int) -> int:
        """Drop rows with ``ts < ts_ns``; returns how many."""
        n = self._n
        keep = self._ts[:n] >= ts_ns
        gone = int(n - keep.sum())
        if gone:
            self._vecs = self._vecs[:n][keep]
            self._sigs = self._sigs[:n][keep]
            self._ts, self._known = self._ts[:n][keep], self._known[:n][keep]
            self._outcome = self._outcome[:n][keep]
            kept = np.flatnonzero(keep).tolist()
            self._ids = [self._ids[i] for i in kept]
            self._symbols = [self._symbols[i] for i in kept]
            self._row = {id_: j for j, id_ in enumerate(self._ids)}
            self._n = len(kept)
        return gone

    def max_ts_ns(self) -> int | None:
        """The newest window end held (None when empty)."""
        return int(self._ts[: self._n].max()) if self._n else None

    def _reserve(self, size: int) -> None:
        cap = len(self._ts)
        if size <= cap:
            return
        new = max(size, 2 * cap, 1024)

        def grow(a: np.ndarray) -> np.ndarray:
            out = np.empty((new, *a.shape[1:]), a.dtype)
            out[: self._n] = a[: self._n]
            return out

        self._vecs, self._sigs = grow(self._vecs), grow(self._sigs)
        self._ts, self._known, self._outcome = (
            grow(self._ts),
            grow(self._known),
            grow(self._outcome),
        )


def _per_row(value: int | np.ndarray | None, n: int, default: int) -> np.ndarray:
    if value is None:
        return np.full(n, default, np.int64)
    arr = np.asarray(value, np.int64).reshape(-1)
    if arr.size == 1:
        return np.full(n, arr[0], np.int64)
    if arr.size != n:
        raise DataError(f"need one time per query row ({n}), got {arr.size}")
    return np.ascontiguousarray(arr)


def _unit_rows(vectors: np.ndarray, dim: int, where: str) -> np.ndarray:
    v = np.asarray(vectors, np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise DataError(f"{where} expects (n, {dim}) vectors, got shape {v.shape}")
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    bad = ~(np.isfinite(norm[:, 0]) & (norm[:, 0] > 0))
    if bad.any():
        raise DataError(f"{where}: row {int(np.argmax(bad))} is zero or not finite")
    return np.ascontiguousarray(v / norm)


# --- the memory -----------------------------------------------------------------------------


class PatternMemory:
    """Past windows and what followed them; advice for new windows from their neighbours.

    Parameters
    ----------
    store
        Where patterns persist (`quantlab.storage.vectors.ChromaVectorStore`); one collection
        per strategy.
    strategy_id
        Prefix of every id: ``strategy:{strategy_id}:pattern:{ts_ns}:{symbol}``.
    dim, window
        Vector dimension and window length (`embedder` is an `Embedder` for them and the 8
        channels of `quantlab.signals.windows`).
    horizon
        Rows of the same symbol between a pattern and its outcome row.
    k
        Neighbours per prediction.
    ttl_days
        `sweep` deletes patterns whose window ended more than this long ago.
    search
        ``"chroma"``, ``"simhash"`` (in process) or ``"auto"`` (by size, `AUTO_CHROMA_FROM`).

    Advice for a query is the similarity-weighted mean of the neighbours' outcome signs,
    ``sum(w·sign(outcome)) / sum(w)`` with ``w = max(similarity, 0)``; confidence is
    ``|advice| · mean(max(similarity, 0)) · (neighbours / k)``: agreement, closeness and
    coverage, each in [0, 1]. No neighbour (or a zero query vector): advice 0, confidence 0.
    """

    def __init__(
        self,
        store: VectorStore,
        *,
        strategy_id: str,
        dim: int = 512,
        window: int = 64,
        horizon: int = 12,
        k: int = 10,
        ttl_days: float = 90.0,
        search: SearchPath = "auto",
    ) -> None:
        if not strategy_id or ":" in strategy_id:
            raise DataError(f"strategy_id must be non-empty and free of ':', got {strategy_id!r}")
        if horizon < 1 or k < 1 or not ttl_days > 0:
            raise DataError(
                f"PatternMemory needs horizon >= 1, k >= 1, ttl_days > 0, "
                f"got horizon={horizon}, k={k}, ttl_days={ttl_days}"
            )
        if search not in ("auto", "chroma", "simhash"):
            raise DataError(f"search must be 'auto', 'chroma' or 'simhash', got {search!r}")
        self.store, self.strategy_id, self.dim = store, strategy_id, dim
        self.horizon, self.k, self.ttl_days, self.search = horizon, k, ttl_days, search
        self.embedder = Embedder(window, len(CHANNELS), dim)
        self.index = SimHashIndex(dim)
        self._prefix = f"strategy:{strategy_id}:pattern:"
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        self._max_n = np.zeros(0, np.int64)
        # pending rows (waiting for their outcome row) and recent prices (possible outcome rows)
        self._p_key = np.empty(0, np.int64)
        self._p_ts = np.empty(0, np.int64)
        self._p_price = np.empty(0, np.float64)
        self._p_vec = np.empty((0, dim), np.float32)
        self._l_key = np.empty(0, np.int64)
        self._l_ts = np.empty(0, np.int64)
        self._l_price = np.empty(0, np.float64)
        self._max_known = np.iinfo(np.int64).min
        self._counts = {"inserted": 0, "skipped": 0, "expired": 0, "queries": 0, "swept": 0}
        self._counts |= {"query_calls": 0, "future_dropped": 0, "unindexed_dropped": 0}
        self._paths = {"chroma": 0, "simhash": 0, "guard": 0}
        self._latency: deque[float] = deque(maxlen=1000)

    @property
    def size(self) -> int:
        """Stored (resolved) patterns held by the in-process index."""
        return len(self.index)

    def pattern_id(self, ts_ns: int, symbol: str) -> str:
        return f"{self._prefix}{ts_ns}:{symbol}"

    # -- outcomes ---------------------------------------------------------------------------

    def observe(
        self,
        symbols: Sequence[str],
        ts_ns: np.ndarray,
        n: np.ndarray,
        price: np.ndarray,
        vectors: np.ndarray,
    ) -> int:
        """File rows as pending and store every pattern whose outcome row is now known.

        Rows are ``symbols[i]`` at ``ts_ns[i]`` (int ns or datetime64), the symbol's 1-based
        row count ``n[i]``, its `price` and embedded window ``vectors[i]``. A row with a zero
        or non-finite vector can still be an outcome row but is not filed; a row with a bad
        price is neither (both counted as ``skipped``). Returns how many patterns resolved.
        """
        syms = [str(s) for s in symbols]
        ts = _as_ns(ts_ns)
        rows_n = np.asarray(n, np.int64).reshape(-1)
        px = np.asarray(price, np.float64).reshape(-1)
        vec = np.asarray(vectors, np.float32)
        m = len(syms)
        if not (len(ts) == len(rows_n) == len(px) == m) or vec.shape != (m, self.dim):
            raise DataError(
                f"observe needs {m} timestamps, row counts and prices and ({m}, {self.dim}) "
                f"vectors, got {len(ts)}, {len(rows_n)}, {len(px)} and {vec.shape}"
            )
        if m == 0:
            return 0
        if not ((rows_n >= 0) & (rows_n < 1 << 40)).all():
            bad = int(np.argmax((rows_n < 0) | (rows_n >= 1 << 40)))
            raise DataError(f"row counts n must be in [0, 2**40), got {rows_n[bad]} at row {bad}")
        codes = self._encode(syms)
        key = (codes << 40) | rows_n
        good_px = np.isfinite(px) & (px > 0)
        norm = np.linalg.norm(vec, axis=1)
        good_vec = good_px & np.isfinite(norm) & (norm > 0)
        self._counts["skipped"] += int(m - good_vec.sum())
        np.maximum.at(self._max_n, codes[good_px], rows_n[good_px])
        self._l_key, self._l_ts, self._l_price = _merge(
            (self._l_key, self._l_ts, self._l_price), (key[good_px], ts[good_px], px[good_px])
        )
        self._p_key, self._p_ts, self._p_price, self._p_vec = _merge(
            (self._p_key, self._p_ts, self._p_price, self._p_vec),
            (key[good_vec], ts[good_vec], px[good_vec], vec[good_vec]),
        )
        resolved = self._resolve()
        self._prune()
        return resolved

    def _encode(self, symbols: list[str]) -> np.ndarray:
        for s in dict.fromkeys(symbols):
            if s not in self._codes:
                self._codes[s] = len(self._names)
                self._names.append(s)
        if len(self._max_n) < len(self._names):
            self._max_n = np.concatenate(
                [self._max_n, np.zeros(len(self._names) - len(self._max_n), np.int64)]
            )
        return np.fromiter((self._codes[s] for s in symbols), np.int64, len(symbols))

    def _resolve(self) -> int:
        if not len(self._p_key) or not len(self._l_key):
            return 0
        want = self._p_key + self.horizon
        at = np.searchsorted(self._l_key, want)  # the price log is sorted by key
        at = np.minimum(at, len(self._l_key) - 1)
        hit = self._l_key[at] == want
        if not hit.any():
            return 0
        later = at[hit]
        ts, px, vec = self._p_ts[hit], self._p_price[hit], self._p_vec[hit]
        outcome = np.log(self._l_price[later] / px)
        known = self._l_ts[later]
        codes = (self._p_key[hit] >> 40).tolist()
        symbols = [self._names[c] for c in codes]
        # a canonical order (outcome time, window time, symbol), the one `load` restores:
        # the index breaks ties by position, so a reloaded memory answers the same
        order = np.lexsort((np.array(symbols), ts, known))
        ts, px, vec, outcome, known = ts[order], px[order], vec[order], outcome[order], known[order]
        symbols = [symbols[i] for i in order.tolist()]
        ids = [self.pattern_id(t, s) for t, s in zip(ts.tolist(), symbols, strict=True)]
        metas: list[dict[str, str | int | float]] = [
            {"symbol": s, "ts": t // _NS, "ts_ns": t, "outcome": o, "known_ns": kn}
            for s, t, o, kn in zip(symbols, ts.tolist(), outcome.tolist(), known.tolist(),
                                   strict=True)
        ]  # fmt: skip
        self.store.upsert(ids, vec, metas)
        self.index.add(ids, vec, ts_ns=ts, symbols=symbols, outcomes=outcome, known_ns=known)
        self._max_known = max(self._max_known, int(known.max()))
        keep = ~hit
        self._p_key, self._p_ts = self._p_key[keep], self._p_ts[keep]
        self._p_price, self._p_vec = self._p_price[keep], self._p_vec[keep]
        self._counts["inserted"] += len(ids)
        return len(ids)

    def _prune(self) -> None:
        # Rows arrive in n order per symbol: an outcome row more than 4 horizons behind the
        # newest row is no longer needed, and a pending row whose outcome row would be older
        # than that never resolves.
        floor = self._max_n - 4 * self.horizon
        keep = (self._l_key & ((1 << 40) - 1)) > floor[self._l_key >> 40]
        self._l_key, self._l_ts, self._l_price = (
            self._l_key[keep], self._l_ts[keep], self._l_price[keep]
        )  # fmt: skip
        alive = (self._p_key & ((1 << 40) - 1)) + self.horizon > floor[self._p_key >> 40]
        self._counts["expired"] += int((~alive).sum())
        self._p_key, self._p_ts = self._p_key[alive], self._p_ts[alive]
        self._p_price, self._p_vec = self._p_price[alive], self._p_vec[alive]

    # -- queries ----------------------------------------------------------------------------

    def path(self) -> Literal["chroma", "simhash"]:
        """The search path a query takes now (``"auto"`` resolved by size)."""
        if self.search == "auto":
            return "chroma" if self.size >= AUTO_CHROMA_FROM else "simhash"
        return self.search

    def predict(self, vectors: np.ndarray, now_ns: np.ndarray | int) -> Prediction:
        """Advice for query `vectors` ``(q, dim)`` at time `now_ns` (one, or one per row).

        Only patterns whose window ended before now and whose outcome was known by now are
        used (see the module); the result's neighbours are best first.
        """
        started = time.perf_counter()
        q = np.asarray(vectors, np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DataError(f"predict expects (q, {self.dim}) vectors, got shape {q.shape}")
        nq = len(q)
        now = _per_row(_as_ns(now_ns), nq, 0)
        neighbours: list[list[Neighbour]] = [[] for _ in range(nq)]
        norm = np.linalg.norm(q, axis=1)
        live = np.flatnonzero(np.isfinite(norm) & (norm > 0))
        if len(live) and self.size:
            path = self.path()
            guarded = now[live] < self._max_known  # an outcome after `now` may be stored
            if path == "chroma":
                self._query_chroma(q, now, live[~guarded], neighbours)
                self._paths["chroma"] += int((~guarded).sum())
                self._paths["guard"] += int(guarded.sum())
                rest = live[guarded]
            else:
                self._paths["simhash"] += len(live)
                rest = live
            if len(rest):
                found = self.index.query(
                    q[rest], self.k, before_ns=now[rest], known_by_ns=now[rest]
                )
                for r, row in zip(rest.tolist(), found, strict=True):
                    neighbours[r] = row
        advice, confidence = _advise(neighbours, self.k)
        self._counts["queries"] += nq
        self._counts["query_calls"] += 1
        self._latency.append(time.perf_counter() - started)
        return Prediction(advice, confidence, neighbours)

    def _query_chroma(
        self, q: np.ndarray, now: np.ndarray, rows: np.ndarray, out: list[list[Neighbour]]
    ) -> None:
        # ``where ts < cut`` (cut = floor(now / 1 s), so ts < cut implies ts_ns < now) is
        # sent only when it can exclude a stored pattern: Chroma evaluates a where clause
        # over every entry (measured ~2.7 ms per 1,000 entries and query, 270 ms at 100k,
        # against ~2 ms without), and a row that needs none shares one call with the others.
        # Rows that do need it are grouped by cut-off second, one call each.
        newest = self.index.max_ts_ns()
        if newest is None or not len(rows):
            return
        cut = now[rows] // _NS
        need = cut <= newest // _NS
        groups: list[tuple[np.ndarray, int | None]] = []
        if (~need).any():
            groups.append((rows[~need], None))
        groups += [(rows[cut == sec], int(sec)) for sec in np.unique(cut[need]).tolist()]
        for mine, before in groups:
            found = self.store.query(q[mine], self.k, before_ts=before)
            for r, row in zip(mine.tolist(), found, strict=True):
                out[r] = [nb for nb in row if self._usable(nb, int(now[r]))]

    def _usable(self, nb: Neighbour, now: int) -> bool:
        # The where clause already excludes these; a store that does not is caught here.
        known = self.index.known_ns(nb.id)
        if known is None:  # not loaded into the index: its outcome time is unknown
            self._counts["unindexed_dropped"] += 1
            return False
        if nb.ts >= now or known > now:
            self._counts["future_dropped"] += 1
            return False
        return True

    # -- maintenance ------------------------------------------------------------------------

    def sweep(self, now_ns: int) -> int:
        """Delete patterns older than `ttl_days` before `now_ns` from the store and the index.

        The cut-off is whole seconds (``ts < floor((now - ttl) / 1 s)``) so both sides delete
        the same set. Returns how many the store deleted.
        """
        ttl_ns = round(self.ttl_days * 86_400_000) * 1_000_000  # to the ms, exact in int
        cutoff_s = (int(now_ns) - ttl_ns) // _NS
        deleted = self.store.delete_before(cutoff_s)
        held = self.index.delete_before(cutoff_s * _NS)
        if held != deleted:
            raise StorageError(
                f"TTL sweep before {cutoff_s} s deleted {deleted} patterns from the store but "
                f"{held} from the in-process index: the store holds patterns the index does not "
                f"(call load() after opening an existing store)"
            )
        self._counts["swept"] += deleted
        return deleted

    def load(self) -> int:
        """Rebuild the in-process index from the store (after a restart); returns the count."""
        ids, vectors, metas = self.store.get_all()
        foreign = next((i for i in ids if not i.startswith(self._prefix)), None)
        if foreign is not None:
            raise StorageError(
                f"the store holds {foreign!r}, not a pattern of strategy {self.strategy_id!r} "
                f"(ids start {self._prefix!r}); give each strategy its own collection"
            )
        self.index.clear()
        if not ids:
            return 0
        ts = np.array([int(md["ts_ns"]) for md in metas], np.int64)
        known = np.array([int(md.get("known_ns", md["ts_ns"])) for md in metas], np.int64)
        symbols = [str(md["symbol"]) for md in metas]
        order = np.lexsort((np.array(symbols), ts, known))  # the order `observe` files them in
        self.index.add(
            [ids[i] for i in order.tolist()], np.asarray(vectors)[order], ts_ns=ts[order],
            symbols=[symbols[i] for i in order.tolist()],
            outcomes=np.array([float(metas[i]["outcome"]) for i in order.tolist()]),
            known_ns=known[order],
        )  # fmt: skip
        self._max_known = max(self._max_known, int(known.max()))
        return len(self.index)

    def metrics(self) -> dict[str, Any]:
        lat = np.asarray(self._latency) * 1e3
        return {
            "size": self.size,
            "pending": len(self._p_key),
            **self._counts,
            "search": self.search,
            "search_path": self.path(),
            "search_path_rows": dict(self._paths),
            "query_ms_p50": float(np.percentile(lat, 50)) if len(lat) else None,
            "query_ms_p95": float(np.percentile(lat, 95)) if len(lat) else None,
        }


def _advise(neighbours: list[list[Neighbour]], k: int) -> tuple[np.ndarray, np.ndarray]:
    nq = len(neighbours)
    advice, confidence = np.zeros(nq), np.zeros(nq)
    for r, row in enumerate(neighbours):
        if not row:
            continue
        w = np.clip([nb.similarity for nb in row], 0.0, 1.0)
        total = w.sum()
        if total <= 0:
            continue
        a = float(np.dot(w, np.sign([nb.outcome for nb in row])) / total)
        advice[r] = a
        confidence[r] = abs(a) * float(w.mean()) * min(len(row) / k, 1.0)
    return np.clip(advice, -1.0, 1.0), np.clip(confidence, 0.0, 1.0)


def _as_ns(ts: Any) -> np.ndarray:
    arr = np.asarray(ts)
    if arr.dtype.kind == "M":
        arr = arr.astype("datetime64[ns]").astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"timestamps must be integer ns or datetime64, got dtype {arr.dtype}")
    return arr.astype(np.int64).reshape(-1)


def _merge(old: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Concatenate column tuples keyed by their first column; sorted by key, a repeated key
    keeps the newest row."""
    cols = tuple(np.concatenate([a, b]) for a, b in zip(old, new, strict=True))
    key = cols[0]
    order = np.argsort(key, kind="stable")
    key = key[order]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    pick = order[last]
    return tuple(c[pick] for c in cols)
