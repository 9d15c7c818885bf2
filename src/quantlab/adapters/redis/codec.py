"""How bus payloads cross processes: typed messages as JSON, frames as Polars IPC, the rest msgpack.

Every payload becomes a ``(kind, bytes)`` pair:

- ``w``: a typed message of the `quantlab.core.messages.WireMessage` tagged union, as JSON;
- ``mb`` / ``fb``: a `MarketBatch` / `FeatureBatch`, its fields as MessagePack with the frame
  as Polars IPC bytes (``frame.write_ipc(None)``, no pyarrow needed);
- ``df``: a bare `polars.DataFrame` as IPC bytes;
- ``dl``: a `DeadLetter` (its envelope's payload encoded recursively);
- ``p``: plain data (str, bytes, int, float, bool, None, list, dict) as MessagePack.
  Tuples come back as lists.

Several events are stored in one stream entry (`encode_events` / `decode_events`).
"""

from __future__ import annotations

import io
from typing import Any, get_args

import msgspec
import polars as pl

from quantlab.bus.base import DeadLetter, Envelope
from quantlab.core.enums import EventType
from quantlab.core.errors import CodecError
from quantlab.core.messages import FeatureBatch, MarketBatch, WireMessage, from_json, to_json

_WIRE_TYPES: tuple[type, ...] = tuple(get_args(WireMessage))
_PLAIN = (str, bytes, int, float, bool, type(None), list, dict, tuple)
_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder()

# One event inside a stream entry: (message id, publish time in ns, kind, encoded payload).
Event = tuple[str, int, Any]


def _frame_bytes(frame: pl.DataFrame) -> bytes:
    return frame.write_ipc(None).getvalue()


def _read_frame(data: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(data))


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
            }
            return "mb", _mp_encoder.encode(fields)
        if isinstance(payload, FeatureBatch):
            fields = {
                "spec": payload.spec,
                "version": payload.version,
                "frame": _frame_bytes(payload.frame),
                "seq": payload.seq,
                "ts_max": payload.ts_max,
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
            f = _mp_decoder.decode(data)
            return MarketBatch(
                kind=EventType(f["kind"]),
                frame=_read_frame(f["frame"]),
                seq=f["seq"],
                ts_min=f["ts_min"],
                ts_max=f["ts_max"],
                source=f["source"],
            )
        if kind == "fb":
            f = _mp_decoder.decode(data)
            return FeatureBatch(
                spec=f["spec"],
                version=f["version"],
                frame=_read_frame(f["frame"]),
                seq=f["seq"],
                ts_max=f["ts_max"],
            )
        if kind == "dl":
            f = _mp_decoder.decode(data)
            envelope = Envelope(
                id=f["id"],
                topic=f["topic"],
                payload=decode(f["kind"], f["data"]),
                ts_publish=f["ts_publish"],
                deliveries=f["deliveries"],
                seq=f["seq"],
            )
            return DeadLetter(envelope=envelope, subscription=f["subscription"], reason=f["reason"])
    except CodecError:
        raise
    except Exception as exc:  # a corrupt entry: msgspec, polars or key errors
        raise CodecError(f"cannot decode a bus payload of kind {kind!r}: {exc}") from exc
    raise CodecError(f"unknown bus payload kind {kind!r}")


def encode_events(events: list[Event]) -> bytes:
    """Several ``(id, ts_publish, payload)`` events as the bytes of one stream entry."""
    rows = []
    for msg_id, ts, payload in events:
        kind, data = encode(payload)
        rows.append((msg_id, ts, kind, data))
    return _mp_encoder.encode(rows)


def decode_events(data: bytes) -> list[Event]:
    """The ``(id, ts_publish, payload)`` events of one stream entry."""
    try:
        rows = _mp_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"corrupt bus entry: {exc}") from exc
    return [(msg_id, ts, decode(kind, payload)) for msg_id, ts, kind, payload in rows]
