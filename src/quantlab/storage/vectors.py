"""Chroma as the pattern memory's vector store (`quantlab.signals.patterns.VectorStore`).

`make_client` opens Chroma embedded in memory (tests), embedded on disk (``path``: SQLite plus
HNSW files) or against a ``chroma run`` server (``url``), always with telemetry off.
`ChromaVectorStore` keeps one collection of unit vectors in cosine space; we always pass our
own vectors (``embedding_function=None``), so nothing ever loads or downloads a model.

HNSW settings: ``max_neighbors`` (M) 16, ``ef_construction`` 200, and ``ef_search``
`EF_SEARCH` = 128, chosen by ``benchmarks/measure_pattern_search.py`` on held-out real
feature-window embeddings (top-10 cosines of only ~0.65-0.8): recall@10 at 100k patterns was
0.94 / 0.979 / 0.995 / 0.999 at ef_search 32 / 64 / 128 / 256, at 1-3 ms per query for all
four; 128 is the smallest setting above 0.98 at every size measured (1k-100k).

A ``where`` clause costs Chroma about 2.7 ms per 1,000 stored entries and query (265-270 ms
per query at 100k, against ~2 ms without), whatever it selects: `query` sends one only when
given `before_ts`, and the pattern memory passes it only when it can exclude something.
Chroma's HNSW build is not reproducible: two collections built from the same inserts in the same
order answer a few queries in a thousand differently; one collection answers repeatably.

Two things to know about Chroma 1.5: in-memory (`EphemeralClient`) clients of one process
share their collections; and `configuration` is applied only when a collection is created
(an existing one keeps its own), so the store checks the space and dimension of what it opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import chromadb
import numpy as np
from chromadb.config import Settings

from quantlab.core.errors import StorageError
from quantlab.signals.patterns import Neighbour

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

EF_SEARCH = 128
HNSW: dict[str, Any] = {
    "space": "cosine",
    "max_neighbors": 16,
    "ef_construction": 200,
    "ef_search": EF_SEARCH,
}


def make_client(*, path: str | Path | None = None, url: str | None = None) -> ClientAPI:
    """A Chroma client: `url` -> HTTP (``chroma run``), `path` -> on disk, neither -> memory.

    Examples
    --------
    >>> client = make_client(url="http://127.0.0.1:8000")  # doctest: +SKIP
    >>> client = make_client(path="data/chroma")  # doctest: +SKIP
    """
    settings = Settings(anonymized_telemetry=False)
    if path is not None and url is not None:
        raise StorageError(f"give a Chroma path or a url, not both (got {path!r} and {url!r})")
    if url is not None:
        host, port, ssl = _parse_url(url)
        try:
            return chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
        except ValueError as exc:  # Chroma reports an unreachable server as ValueError
            raise StorageError(f"cannot reach a Chroma server at {url!r}: {exc}") from exc
    if path is not None:
        return chromadb.PersistentClient(path=str(path), settings=settings)
    return chromadb.EphemeralClient(settings=settings)


def _parse_url(url: str) -> tuple[str, int, bool]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StorageError(f"bad Chroma url {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(
            f"bad Chroma url {url!r}: expected http(s)://host[:port], e.g. http://127.0.0.1:8000"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StorageError(f"bad Chroma url {url!r}: expected no path, query or fragment")
    ssl = parts.scheme == "https"
    return parts.hostname, port or (443 if ssl else 8000), ssl


class ChromaVectorStore:
    """One Chroma collection of pattern vectors (implements `VectorStore`).

    Parameters
    ----------
    client
        From `make_client`.
    collection
        Collection name: 3-512 characters from ``[a-zA-Z0-9._-]``, starting and ending with a
        letter or digit.
    dim
        Vector dimension; an existing collection holding other dimensions is an error.
    ef_search
        HNSW search breadth, applied when the collection is created (Chroma keeps an
        existing collection's own).
    """

    def __init__(
        self, client: ClientAPI, collection: str, dim: int, *, ef_search: int = EF_SEARCH
    ) -> None:
        if dim < 1 or ef_search < 1:
            raise StorageError(f"need dim >= 1 and ef_search >= 1, got {dim} and {ef_search}")
        self.client, self.name, self.dim = client, collection, dim
        hnsw = HNSW | {"ef_search": ef_search}
        try:
            self.collection: Collection = client.get_or_create_collection(
                collection,
                embedding_function=None,
                configuration=cast(Any, {"hnsw": hnsw}),
            )
        except chromadb.errors.ChromaError as exc:
            raise StorageError(f"cannot open Chroma collection {collection!r}: {exc}") from exc
        self._max_batch = max(1, int(client.get_max_batch_size()))
        self._check_existing()

    def _check_existing(self) -> None:
        hnsw = (self.collection.configuration_json or {}).get("hnsw") or {}
        space = hnsw.get("space")
        if space != "cosine":
            raise StorageError(
                f"Chroma collection {self.name!r} uses space {space!r}, the pattern memory "
                f"needs 'cosine'"
            )
        got = self.collection.get(limit=1, include=["embeddings"])
        embeddings = got.get("embeddings")
        if embeddings is not None and len(embeddings):
            have = len(embeddings[0])
            if have != self.dim:
                raise StorageError(
                    f"Chroma collection {self.name!r} holds {have}-dimensional vectors, "
                    f"expected {self.dim}"
                )

    def upsert(
        self, ids: list[str], vectors: np.ndarray, metadatas: list[dict[str, str | int | float]]
    ) -> None:
        """Insert or replace, in chunks of the client's maximum batch size."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise StorageError(
                f"collection {self.name!r} takes (n, {self.dim}) vectors, got shape {vecs.shape}"
            )
        if not len(ids) == len(metadatas) == len(vecs):
            raise StorageError(
                f"upsert needs one id and metadata per vector ({len(vecs)}), "
                f"got {len(ids)} ids and {len(metadatas)} metadatas"
            )
        step = self._max_batch
        for i in range(0, len(ids), step):
            self.collection.upsert(
                ids=ids[i : i + step],
                embeddings=vecs[i : i + step],
                metadatas=cast(Any, metadatas[i : i + step]),
            )

    def query(
        self, vectors: np.ndarray, k: int, *, before_ts: int | None = None
    ) -> list[list[Neighbour]]:
        """The `k` nearest patterns per row, with ``ts < before_ts`` (epoch seconds).

        One Chroma call for all rows; results are re-checked against `before_ts`.
        """
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise StorageError(
                f"collection {self.name!r} is queried with (n, {self.dim}) vectors, "
                f"got shape {q.shape}"
            )
        if k < 1:
            raise StorageError(f"query k must be >= 1, got {k}")
        if not len(q):
            return []
        where = None if before_ts is None else {"ts": {"$lt": int(before_ts)}}
        res = self.collection.query(
            query_embeddings=q,
            n_results=k,
            where=cast(Any, where),
            include=cast(Any, ["metadatas", "distances"]),
        )
        out: list[list[Neighbour]] = []
        metas_all = res.get("metadatas") or [[] for _ in range(len(q))]
        dists_all = res.get("distances") or [[] for _ in range(len(q))]
        for ids, metas, dists in zip(res["ids"], metas_all, dists_all, strict=True):
            row = []
            for id_, md, dist in zip(ids, metas, dists, strict=True):
                if before_ts is not None and int(cast(int, md["ts"])) >= before_ts:
                    continue  # the where clause should have excluded it; never trust, filter
                row.append(_neighbour(id_, md, float(dist)))
            out.append(row)
        return out

    def get_all(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every entry: ids, ``(n, dim)`` float32 vectors, metadatas (in Chroma's order)."""
        total = self.count()
        ids: list[str] = []
        vecs: list[np.ndarray] = []
        metas: list[dict[str, Any]] = []
        step = self._max_batch
        for offset in range(0, total, step):
            got = self.collection.get(
                offset=offset, limit=step, include=cast(Any, ["embeddings", "metadatas"])
            )
            ids.extend(got["ids"])
            emb = got.get("embeddings")
            vecs.append(np.asarray(emb if emb is not None else [], np.float32))
            metas.extend(dict(md) for md in (got.get("metadatas") or []))
        if not ids:
            return [], np.empty((0, self.dim), np.float32), []
        return ids, np.concatenate(vecs).reshape(-1, self.dim), metas

    def delete_before(self, ts: int) -> int:
        """Delete entries with ``ts < ts`` (epoch seconds); returns how many."""
        before = self.count()
        result = self.collection.delete(where=cast(Any, {"ts": {"$lt": int(ts)}}))
        deleted = result.get("deleted") if isinstance(result, dict) else None
        return int(deleted) if deleted is not None else before - self.count()

    def count(self) -> int:
        return int(self.collection.count())


def _neighbour(id_: str, md: Any, distance: float) -> Neighbour:
    ts_ns = md.get("ts_ns")
    return Neighbour(
        id=id_,
        symbol=str(md.get("symbol", "")),
        ts=int(ts_ns) if ts_ns is not None else int(md["ts"]) * 1_000_000_000,
        outcome=float(md.get("outcome", float("nan"))),
        similarity=1.0 - distance,
    )
