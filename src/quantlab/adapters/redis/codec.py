"""How bus payloads cross processes: typed messages as JSON, frames as Arrow IPC, the rest msgpack.

Every payload becomes a ``(kind, bytes)`` pair:

- ``w``: a typed message of the `quantlab.core.messages.WireMessage` tagged union, as JSON;
- ``mb`` / ``fb``: a `MarketBatch` / `FeatureBatch`, its fields as MessagePack with the frame
  as Arrow IPC stream bytes (``frame.write_ipc_stream(None)``, no pyarrow needed; reading a
  stream takes ~10 µs for a small frame, the IPC *file* reader ~0.5 ms) followed by their
  CRC-32 (4 bytes, big-endian);
- ``df``: a bare `polars.DataFrame` as IPC stream bytes and their CRC-32;
- ``dl``: a `DeadLetter` (its envelope's payload encoded recursively);
- ``p``: plain data (str, bytes, int, float, bool, None, list, dict) as MessagePack; any other
  msgspec struct or dataclass (a stage's own record) travels as its fields and arrives as a
  dict.
  Tuples come back as lists.

Several events are stored in one stream entry (`encode_events` / `decode_events`), in one of
three layouts, told apart by the entry's first byte:

- ``J`` + the number of events (4 bytes, big-endian) + JSON ``[ids, ts, messages]``: every
  payload a typed message (the common case: a `publish_many` of trades, quotes, orders...).
  One JSON encode and one typed decode for the whole entry, no per-event Python work; each
  message is exactly what `encode` makes of it (``w``). ``ts`` is one integer when all the
  events share their publish time, else a list;
- ``P`` + the number of events (4 bytes) + MessagePack ``[ids, ts, payloads]``: every payload
  plain data (``p``), embedded as is;
- otherwise (a MessagePack array, first byte 0x90-0x9f/0xdc/0xdd): a list of
  ``[id, ts, kind, bytes]`` rows, one `encode` per event (batches, frames, dead letters, mixes).

`count_events` reads the number of events of an entry without decoding it.

Decoding never trusts an entry: every layout, payload and field is decoded with its type
(`CodecError` names what is wrong), and a frame is handed to polars only once its CRC-32
matches. Polars' IPC reader is not safe on corrupt input (a damaged buffer length makes it
abort the process on a failed allocation, a damaged offset makes it panic), so a frame
damaged in transit is refused before it gets there; the bus trusts its Redis server (which
requires a password) not to forge frames with a matching checksum.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import zlib
from collections.abc import Sequence
from typing import Any, get_args

import msgspec
import polars as pl
from polars.exceptions import PanicException

from quantlab.bus.base import DeadLetter, Envelope
from quantlab.core.enums import EventType
from quantlab.core.errors import CodecError
from quantlab.core.messages import FeatureBatch, MarketBatch, WireMessage, from_json, to_json

_WIRE_TYPES: tuple[type, ...] = tuple(get_args(WireMessage))
_PLAIN = (str, bytes, int, float, bool, type(None), list, dict, tuple)
_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder()
_json_encoder = msgspec.json.Encoder()  # what `to_json` uses
# Entry layouts (see the module doc); a row list starts with a MessagePack array header.
_JSON_TAG = b"J"
_PLAIN_TAG = b"P"
_WIRE_TYPE_SET: frozenset[Any] = frozenset(_WIRE_TYPES)
_PLAIN_TYPE_SET: frozenset[Any] = frozenset(_PLAIN)
_json_entry_decoder = msgspec.json.Decoder(tuple[list[str], int | list[int], list[WireMessage]])
_plain_entry_decoder = msgspec.msgpack.Decoder(tuple[list[str], int | list[int], list[Any]])
_rows_decoder = msgspec.msgpack.Decoder(list[tuple[str, int, str, bytes]])


class _MarketBatchFields(msgspec.Struct):
    kind: EventType
    frame: bytes
    seq: int
    ts_min: int
    ts_max: int
    source: str
    ts_recv: int = 0


class _FeatureBatchFields(msgspec.Struct):
    spec: str
    version: str
    frame: bytes
    seq: int
    ts_max: int
    ts_recv: int = 0


class _DeadLetterFields(msgspec.Struct):
    id: str
    topic: str
    ts_publish: int
    deliveries: int
    seq: int
    kind: str
    data: bytes
    subscription: str
    reason: str


_market_batch_decoder = msgspec.msgpack.Decoder(_MarketBatchFields)
_feature_batch_decoder = msgspec.msgpack.Decoder(_FeatureBatchFields)
_dead_letter_decoder = msgspec.msgpack.Decoder(_DeadLetterFields)

# One event inside a stream entry: (message id, publish time in ns, kind, encoded payload).
Event = tuple[str, int, Any]


def _frame_bytes(frame: pl.DataFrame) -> bytes:
    """The frame as Arrow IPC stream bytes followed by their CRC-32."""
    data = frame.write_ipc_stream(None).getvalue()
    return data + zlib.crc32(data).to_bytes(4, "big")


def _read_frame(data: bytes) -> pl.DataFrame:
    """The frame of `_frame_bytes`; `CodecError` if its CRC-32 does not match (see the module
    doc: polars must never read a damaged IPC stream)."""
    body = data[:-4]
    if len(data) < 4 or zlib.crc32(body).to_bytes(4, "big") != data[-4:]:
        raise CodecError(
            f"an Arrow IPC frame of {len(data)} bytes fails its CRC-32 check (damaged in transit)"
        )
    try:
        return pl.read_ipc_stream(io.BytesIO(body))
    except PanicException as exc:  # a Rust panic is no `Exception`
        raise CodecError(f"polars could not read an Arrow IPC frame: {exc}") from None


def encode(payload: Any) -> tuple[str, bytes]:
    """Encode one payload as ``(kind, bytes)``; raises `CodecError` for what cannot travel."""
    try:
        if isinstance(payload, _WIRE_TYPES):
            return "w", to_json(payload)  # type: ignore[arg-type]
        if isinstance(payload, MarketBatch):
            fields = {
                "kind": int(payload.kind),
                "frame": _frame_bytes(payload.frame),
                "seq": payload.seq,
                "ts_min": payload.ts_min,
                "ts_max": payload.ts_max,
                "source": payload.source,
                "ts_recv": payload.ts_recv,
            }
            return "mb", _mp_encoder.encode(fields)
        if isinstance(payload, FeatureBatch):
            fields = {
                "spec": payload.spec,
                "version": payload.version,
                "frame": _frame_bytes(payload.frame),
                "seq": payload.seq,
                "ts_max": payload.ts_max,
                "ts_recv": payload.ts_recv,
            }
            return "fb", _mp_encoder.encode(fields)
        if isinstance(payload, pl.DataFrame):
            return "df", _frame_bytes(payload)
        if isinstance(payload, DeadLetter):
            env = payload.envelope
            kind, data = encode(env.payload)
            fields = {
                "id": env.id,
                "topic": env.topic,
                "ts_publish": env.ts_publish,
                "deliveries": env.deliveries,
                "seq": env.seq,
                "kind": kind,
                "data": data,
                "subscription": payload.subscription,
                "reason": payload.reason,
            }
            return "dl", _mp_encoder.encode(fields)
        if isinstance(payload, _PLAIN):
            return "p", _mp_encoder.encode(payload)
        if isinstance(payload, msgspec.Struct) or dataclasses.is_dataclass(payload):
            # A stage's own record (a cost record, a PnL snapshot, a budget alert): its
            # fields travel as plain data and arrive as a dict.
            return "p", _mp_encoder.encode(msgspec.to_builtins(payload))
    except CodecError:
        raise
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {type(payload).__name__} for the bus: {exc}") from exc
    raise CodecError(
        f"cannot encode {type(payload).__name__} for the bus: not a wire message, batch, "
        "frame, dead letter or plain data"
    )


def decode(kind: str, data: bytes) -> Any:
    """The payload `encode` turned into ``(kind, data)``."""
    try:
        if kind == "w":
            return from_json(data)
        if kind == "p":
            return _mp_decoder.decode(data)
        if kind == "df":
            return _read_frame(data)
        if kind == "mb":
            mb = _market_batch_decoder.decode(data)
            return MarketBatch(
                kind=mb.kind,
                frame=_read_frame(mb.frame),
                seq=mb.seq,
                ts_min=mb.ts_min,
                ts_max=mb.ts_max,
                source=mb.source,
                ts_recv=mb.ts_recv,
            )
        if kind == "fb":
            fb = _feature_batch_decoder.decode(data)
            return FeatureBatch(
                spec=fb.spec,
                version=fb.version,
                frame=_read_frame(fb.frame),
                seq=fb.seq,
                ts_max=fb.ts_max,
                ts_recv=fb.ts_recv,
            )
        if kind == "dl":
            dl = _dead_letter_decoder.decode(data)
            envelope = Envelope(
                id=dl.id,
                topic=dl.topic,
                payload=decode(dl.kind, dl.data),
                ts_publish=dl.ts_publish,
                deliveries=dl.deliveries,
                seq=dl.seq,
            )
            return DeadLetter(envelope=envelope, subscription=dl.subscription, reason=dl.reason)
    except CodecError:
        raise
    except Exception as exc:  # a corrupt payload: msgspec's decode or type errors, polars'
        raise CodecError(f"cannot decode a bus payload of kind {kind!r}: {exc}") from exc
    raise CodecError(f"unknown bus payload kind {kind!r}")


def _all_of(payloads: Sequence[Any], types: frozenset[Any]) -> bool:
    return all(type(p) in types for p in payloads)


def encode_batch(ids: Sequence[str], ts: int | Sequence[int], payloads: Sequence[Any]) -> bytes:
    """Events ``(ids[i], ts or ts[i], payloads[i])`` as the bytes of one stream entry."""
    n = len(payloads).to_bytes(4, "big")
    if _all_of(payloads, _WIRE_TYPE_SET):
        try:
            return _JSON_TAG + n + _json_encoder.encode((ids, ts, payloads))
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode a typed message for the bus: {exc}") from exc
    if _all_of(payloads, _PLAIN_TYPE_SET):
        try:
            return _PLAIN_TAG + n + _mp_encoder.encode((ids, ts, payloads))
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
            pass  # something inside cannot travel: `encode` names it
    stamps = [ts] * len(ids) if isinstance(ts, int) else ts
    return _mp_encoder.encode(
        [(msg_id, t, *encode(p)) for msg_id, t, p in zip(ids, stamps, payloads, strict=True)]
    )


def encode_events(events: list[Event]) -> bytes:
    """Several ``(id, ts_publish, payload)`` events as the bytes of one stream entry."""
    ids = [e[0] for e in events]
    stamps = [e[1] for e in events]
    ts: int | list[int] = stamps[0] if stamps and stamps.count(stamps[0]) == len(stamps) else stamps
    return encode_batch(ids, ts, [e[2] for e in events])


Columns = tuple[list[str], int | list[int], list[Any]]


def decode_columns(data: bytes) -> Columns:
    """The events of one stream entry as columns ``(ids, ts, payloads)``: ``ts`` is one
    publish time for all of them or a list. Raises `CodecError` on a corrupt entry."""
    tag = data[:1]
    try:
        if tag in (_JSON_TAG, _PLAIN_TAG):
            n = count_events(data)
            decoder = _json_entry_decoder if tag == _JSON_TAG else _plain_entry_decoder
            ids, ts, payloads = decoder.decode(memoryview(data)[5:])
            if not len(ids) == len(payloads) == n or (not isinstance(ts, int) and len(ts) != n):
                raise CodecError("corrupt bus entry: columns of different lengths")
            return ids, ts, payloads
        rows = _rows_decoder.decode(data)
        return (
            [r[0] for r in rows],
            [r[1] for r in rows],
            [decode(kind, payload) for _, _, kind, payload in rows],
        )
    except CodecError:
        raise
    except Exception as exc:  # msgspec decode and validation errors, a message's own checks
        raise CodecError(f"corrupt bus entry: {exc}") from exc


def count_events(data: bytes) -> int:
    """The number of events in an entry, from its header (nothing is decoded)."""
    head = data[:5]
    if head[:1] in (_JSON_TAG, _PLAIN_TAG) and len(head) == 5:
        return int.from_bytes(head[1:5], "big")
    first = head[0] if head else -1
    if 0x90 <= first <= 0x9F:  # MessagePack fixarray
        return first & 0x0F
    if first == 0xDC and len(head) >= 3:  # array 16
        return int.from_bytes(head[1:3], "big")
    if first == 0xDD and len(head) == 5:  # array 32
        return int.from_bytes(head[1:5], "big")
    raise CodecError("corrupt bus entry: no event count")


def decode_events(data: bytes) -> list[Event]:
    """The ``(id, ts_publish, payload)`` events of one stream entry."""
    ids, ts, payloads = decode_columns(data)
    stamps = itertools.repeat(ts) if isinstance(ts, int) else ts
    return list(zip(ids, stamps, payloads, strict=False))
