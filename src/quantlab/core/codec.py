"""The packed 32-byte `MarketDataEvent` record (DESIGN §4).

    event_type u8 | symbol_id u32 | timestamp_ns i64 | price f64 | size f64 | side u8
    | exchange_id u16

Little-endian and packed (no padding). A buffer of N records decodes without copying:
``np.frombuffer(buf, dtype=MARKET_EVENT_DTYPE)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from quantlab.core.errors import CodecError

MARKET_EVENT_DTYPE = np.dtype(
    [
        ("event_type", "<u1"),
        ("symbol_id", "<u4"),
        ("timestamp_ns", "<i8"),
        ("price", "<f8"),
        ("size", "<f8"),
        ("side", "<u1"),
        ("exchange_id", "<u2"),
    ],
    align=False,
)
RECORD_SIZE = MARKET_EVENT_DTYPE.itemsize
assert RECORD_SIZE == 32, RECORD_SIZE  # noqa: S101  (a layout invariant, checked at import)

FIELDS: tuple[str, ...] = tuple(MARKET_EVENT_DTYPE.names or ())


def empty_events(n: int) -> npt.NDArray[np.void]:
    """An uninitialised array of `n` records, to fill column by column."""
    return np.empty(n, dtype=MARKET_EVENT_DTYPE)


def encode_events(
    *,
    event_type: npt.ArrayLike,
    symbol_id: npt.ArrayLike,
    timestamp_ns: npt.ArrayLike,
    price: npt.ArrayLike,
    size: npt.ArrayLike,
    side: npt.ArrayLike = 0,
    exchange_id: npt.ArrayLike = 0,
) -> bytes:
    """Pack columns (arrays or scalars, broadcast) into a buffer of 32-byte records."""
    columns = {
        "event_type": event_type,
        "symbol_id": symbol_id,
        "timestamp_ns": timestamp_ns,
        "price": price,
        "size": size,
        "side": side,
        "exchange_id": exchange_id,
    }
    try:
        arrays = np.broadcast_arrays(*(np.asarray(v) for v in columns.values()))
    except ValueError as exc:
        shapes = {k: np.shape(v) for k, v in columns.items()}
        raise CodecError(f"columns have incompatible lengths: {shapes}") from exc
    n = arrays[0].shape[0] if arrays[0].ndim else 1
    out = empty_events(n)
    for name, arr in zip(columns, arrays, strict=True):
        field = MARKET_EVENT_DTYPE.fields[name][0]  # type: ignore[index]
        if field.kind in "ui" and arr.size:
            _check_range(name, arr, field)
        out[name] = arr.reshape(-1) if arr.ndim else arr
    return out.tobytes()


def _check_range(name: str, arr: npt.NDArray[Any], field: np.dtype[Any]) -> None:
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CodecError(f"{name} must be a finite integer, got a NaN or infinity")
    if arr.dtype.kind not in "uif":
        raise CodecError(f"{name} must be an integer, got dtype {arr.dtype}")
    info = np.iinfo(field)
    lo, hi = arr.min(), arr.max()
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise CodecError(f"{name} {bad} out of range for {field} [{info.min}, {info.max}]")


def decode_events(buf: bytes | bytearray | memoryview) -> npt.NDArray[np.void]:
    """View a buffer of records as a structured array, without copying."""
    size = memoryview(buf).nbytes
    if size % RECORD_SIZE:
        raise CodecError(
            f"buffer length must be a multiple of {RECORD_SIZE} bytes, got {size} "
            f"({size // RECORD_SIZE} whole records and {size % RECORD_SIZE} stray bytes)"
        )
    return np.frombuffer(buf, dtype=MARKET_EVENT_DTYPE)


def events_to_frame(events: npt.NDArray[np.void]) -> pl.DataFrame:
    """Decoded records as a Polars frame (one column per field; copies into Arrow memory)."""
    return pl.DataFrame({name: np.ascontiguousarray(events[name]) for name in FIELDS})
