"""Bad input: every decoder fuzzed with hypothesis, crashes counted (this file: the shared kit
and the binary codecs; ``test_fuzz_*.py``: vendor messages, files, parameters, the CLI).

A decoder is fed valid inputs mutated the way real inputs break (a field missing, a value of
the wrong type, a huge or non-finite number, odd unicode, a deep nesting, a cut or flipped
byte), plus plain random bytes. For each input it must either return a valid result or refuse
it with its documented error (a `QuantlabError` subclass, a parser's `Reject`) whose message is
a sentence that names what is wrong. Anything else is counted as a crash: another exception
(KeyError, TypeError, RecursionError, a Rust panic...), a documented error whose message is
empty or was made from an internal error (``raise CodecError(...) from KeyError``), a result
that is not what the decoder promises, or an input that takes longer than `HANG_S`.

Each test runs its decoder in its own loop over hypothesis' examples (`Tally`), records one
row (`trials` = inputs tried, `failed` = crashes) and only then asserts that nothing crashed.
The tally also asserts that some inputs were decoded and some refused: a fuzzer whose
mutations never get past the first check, or never break anything, proves nothing. Examples
are derandomized, so a run is reproducible; the budget of the whole fuzz suite is ~90 s.

Sanity check: each test was also run against the decoders as they were before the fixes
(their previous versions loaded in place of the current ones) and failed, listing the crashes
its docstring names; the fixes are what makes it pass.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgpack
import msgspec
import polars as pl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from quantlab.adapters.redis import codec as bus_codec
from quantlab.bus.base import DeadLetter, Envelope
from quantlab.core import codec as record_codec
from quantlab.core import messages as msgs
from quantlab.core.enums import (
    Aggressor,
    EventType,
    Liquidity,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from quantlab.core.errors import CodecError
from quantlab.core.registry import SymbolRegistry
from quantlab.core.schemas import SCHEMAS
from quantlab.ingest import wire
from quantlab.ingest.items import PARSE_REASONS, Events, Reject
from quantlab.testing.reliability import record

AREA = "bad input"
UNIT = "inputs"
FAILED_WHAT = "crashes or unclear errors"
N = 2500  # examples per decoder (the binary codecs are the cheapest to run)
HANG_S = 2.0  # an input that takes longer than this to decode counts as a crash (a hang)
# Exceptions that, as the cause of a documented error, mean the decoder hit a bug and wrapped
# it rather than checked the input (its message is the bug's, not the input's).
_INTERNAL = (KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError, AssertionError)
# What a decoder returns to say it refused the input without raising (a parser's `Reject`).
REFUSED = "refused"


class BadResultError(Exception):
    """Raised by a result check: the decoder returned something it must not (a crash)."""


# ---- the tally ----------------------------------------------------------------------------


@dataclass(repr=False)
class Tally:
    """Runs a decoder on each input, counting results, clear refusals and crashes.

    `errors` are the decoder's documented exception types (none for a parser that never
    raises). The decoder callable raises `BadResultError` itself when a result is not valid, and
    returns `REFUSED` when the decoder refused the input by returning (a parser's rejects).
    """

    check: str
    errors: tuple[type[BaseException], ...] = ()
    trials: int = 0
    decoded: int = 0
    refused: int = 0
    crashes: list[str] = field(default_factory=list)  # what crashed, on what input
    kinds: Counter[str] = field(default_factory=Counter)  # crashes per kind and place

    def feed(self, decoder: Callable[[Any], Any], data: Any) -> None:
        self.trials += 1
        start = time.perf_counter()
        try:
            verdict = decoder(data)
        except BadResultError as exc:
            self._crash("bad result", f"bad result: {exc}", data)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if isinstance(exc, self.errors) and clear_error(exc):
                self.refused += 1
            else:
                self._crash(*describe(exc), data)
        else:
            if verdict is REFUSED:
                self.refused += 1
            else:
                self.decoded += 1
        took = time.perf_counter() - start
        if took > HANG_S:
            self._crash("hang", f"took {took:.1f} s (a hang)", data)

    def _crash(self, kind: str, what: str, data: Any) -> None:
        if kind not in self.kinds:
            self.crashes.append(f"{what} <- {short(data)}")
        self.kinds[kind] += 1

    def report(self, *, min_trials: int) -> None:
        """Record the row, then assert: no crash, enough trials, some decoded, some refused."""
        crashes = sum(self.kinds.values())
        detail = f"{self.decoded} decoded, {self.refused} refused with a clear error"
        if crashes:
            detail += f"; first crash: {self.crashes[0][:300]}"
        record(
            AREA,
            self.check,
            trials=self.trials,
            unit=UNIT,
            failed=crashes,
            failed_what=FAILED_WHAT,
            detail=detail,
        )
        kinds = [f"{n} x {kind}" for kind, n in self.kinds.most_common()]
        assert not crashes, (
            f"{crashes} crashes of {len(kinds)} kinds:\n  "
            + "\n  ".join(kinds)
            + "\nfirst input of each kind:\n  "
            + "\n  ".join(self.crashes)
        )
        assert self.trials >= min_trials, f"only {self.trials} inputs were tried"
        assert self.decoded > 0, "no input was decoded: the mutations never reach the decoder"
        assert self.refused > 0, "no input was refused: the mutations never break anything"


def fuzz(
    tally: Tally, strategy: st.SearchStrategy[Any], decoder: Callable[[Any], Any], n: int
) -> None:
    """Feed `n` derandomized examples of `strategy` to `decoder` through `tally`."""

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(data: Any) -> None:
        tally.feed(decoder, data)

    run()


def clear_error(exc: BaseException) -> bool:
    """A documented error is clear when its message is a sentence of its own: not empty, not
    a bare repr (a KeyError's ``'frame'``), and not made from an internal error."""
    text = str(exc).strip()
    if len(text) < 12 or " " not in text:
        return False
    return not isinstance(exc.__cause__, _INTERNAL)


def describe(exc: BaseException) -> tuple[str, str]:
    """(kind: the exception type and where it was raised, text: kind and message)."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" at {code.co_filename.rsplit('/', 2)[-1]}:{tb.tb_lineno} ({code.co_name})"
    kind = f"{type(exc).__name__}{where}"
    text = " ".join(str(exc).split())[:200]
    return kind, f"{kind}: {text}"


def short(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 240 else f"{text[:200]}...({len(text)} chars)"


def check_reject(item: Reject) -> None:
    """A parser's refusal: a known reason and a detail that says what was wrong."""
    if item.reason not in PARSE_REASONS or len(item.detail.strip()) < 8:
        raise BadResultError(f"reject without a clear reason: {item.reason!r} {item.detail!r}")


def check_events(item: Events) -> None:
    if item.frame.schema != SCHEMAS[item.kind]:
        raise BadResultError(f"{item.kind.name} frame with schema {item.frame.schema}")


def check_items(items: Any, allowed: tuple[type, ...] = ()) -> str | None:
    """The items of a market-data parser: `Events` in their schema, clear `Reject`s, and
    `allowed` types (controls, heartbeats...). `REFUSED` if it gave rejects and no events."""
    if not isinstance(items, list):
        raise BadResultError(f"parser returned {type(items).__name__}, not a list")
    events = 0
    rejects = 0
    for item in items:
        if isinstance(item, Reject):
            check_reject(item)
            rejects += 1
        elif isinstance(item, Events):
            check_events(item)
            events += 1
        elif not isinstance(item, allowed):
            raise BadResultError(f"parser returned a {type(item).__name__}")
    return REFUSED if rejects and not events else None


# ---- what inputs are made of ----------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A leaf written as is: `json` in JSON text, `mp` in MessagePack (what a Python value
    cannot say: a 5000-digit number, NaN as a JSON token, a nesting deeper than any limit)."""

    json: str
    mp: bytes


_DEEP = 10_000  # deeper than any recursion limit (hypothesis raises it to ~2000)
_PACK = msgpack.Packer()
RAWS = (
    Raw("1" + "0" * 400, b"\xcf" + b"\xff" * 8),
    Raw("9" * 5000, b"\xd3\x80" + b"\x00" * 7),
    Raw("1e999", msgpack.packb(float("inf"))),
    Raw("-1e999", msgpack.packb(float("-inf"))),
    Raw("NaN", msgpack.packb(float("nan"))),
    Raw("Infinity", msgpack.packb(msgpack.Timestamp(2**62, 0))),
    Raw("-0.0", msgpack.packb(msgpack.Timestamp(-(2**62), 0))),
    Raw("1e-400", msgpack.packb(msgpack.ExtType(5, b"\x00\xff"))),
    Raw("18446744073709551616", b"\xa2\xff\xfe"),  # msgpack: a str that is not UTF-8
    Raw("-9223372036854775809", b"\xdd\xff\xff\xff\xff"),  # an array claiming 4G items
    Raw("[" * _DEEP + "]" * _DEEP, b"\x91" * _DEEP + b"\xc0"),
    Raw('{"a":' * _DEEP + "1" + "}" * _DEEP, b"\x81\xa1a" * _DEEP + b"\xc0"),
    Raw('"\\ud800"', msgpack.packb({1: 2})),  # msgpack: a map with a non-string key
    Raw('"\\u0000"', msgpack.packb(b"\x00\xff")),
)
NASTY: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    10**30,
    -(10**30),
    0.0,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    "",
    " ",
    "0",
    "-1",
    "1e309",
    "nan",
    "inf",
    "-Infinity",
    "²",
    "١٢٣",
    "9" * 5000,
    "x" * 5000,
    "\x00",
    "\ud800",
    "🚀",
    "2262-04-12T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "0001-01-01T00:00:00+05:00",
    "2024-02-30T00:00:00Z",
    "2024-01-01T25:61:61Z",
    "2024-01-01T00:00:00+99:99",
    "2024-01-01T00:00:00",
    [],
    {},
    [None],
    {"": None},
)


_LEAF = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(RAWS),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
)
# A value that breaks decoders: the list above, raw tokens, or anything hypothesis draws (a
# copy: the shared [] and {} of NASTY must never be handed out, mutations change them).
NASTY_VALUES = st.one_of(
    _LEAF, st.lists(_LEAF, max_size=3), st.dictionaries(st.text(max_size=4), _LEAF)
).map(lambda v: _copy(v))
# Strategies are built once: building one per draw costs more than the decoders.
_INDEX = st.integers(0, 2**16 - 1)
_DOC_OPS = st.sampled_from(("replace", "replace", "raw", "remove", "retype", "add", "dup", "bytes"))
_KEYS = st.sampled_from(("", "x", "T", "type", "🚀"))
_BYTE_OPS = st.sampled_from(("cut", "flip", "insert", "delete", "repeat", "spice"))
_HOW_MANY = st.sampled_from((0, 0, 1, 2))
_UP_TO_4 = st.integers(0, 4)
_SOME_BYTES = st.binary(min_size=1, max_size=8)
_RANDOM_BYTES = st.binary(max_size=400)
_BYTE = st.integers(0, 255)
_SPICE = st.sampled_from(
    (b"\x00", b"\xff", b'"', b"[", b"{", b"}", b"\\", b",", b"\xc0", b"\xdd\xff\xff\xff\xff")
)


def pick(draw: st.DrawFn, n: int) -> int:
    """An index below `n` (n > 0), drawn from one fixed strategy."""
    return draw(_INDEX) % n


def _paths(doc: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*here, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*here, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _retyped(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return [value]
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return 0


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc


def mutate_doc(draw: st.DrawFn, doc: Any) -> Any:
    """A copy of `doc` (dicts, lists, scalars, bytes) with up to 4 structural changes: a value
    replaced by a nasty one, removed, retyped, repeated, a key or item added, bytes mutated."""
    doc = _copy(doc)
    for _ in range(draw(_UP_TO_4)):
        paths = _paths(doc)
        path = paths[pick(draw, len(paths))]
        target = _get(doc, path)
        op = draw(_DOC_OPS)
        if op == "add" and isinstance(target, dict):
            target[draw(_KEYS)] = draw(NASTY_VALUES)
            continue
        if op == "add" and isinstance(target, list):
            target.insert(pick(draw, len(target) + 1), draw(NASTY_VALUES))
            continue
        if op == "bytes" and isinstance(target, bytes):
            new: Any = mutate_bytes(draw, target, always=True)
        elif op == "dup" and isinstance(target, list) and target:
            new = target + _copy(target[-1:]) * (1 + pick(draw, 3))
        elif op == "retype":
            new = _retyped(target)
        elif op == "raw":
            new = RAWS[pick(draw, len(RAWS))]
        elif op == "remove" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
            continue
        else:
            new = draw(NASTY_VALUES)
        if not path:
            doc = new
        else:
            _get(doc, path[:-1])[path[-1]] = new
    return doc


def mutate_bytes(draw: st.DrawFn, data: bytes, *, always: bool = False) -> bytes:
    """`data` cut, with a byte flipped, bytes inserted, removed or repeated (or, unless
    `always`, unchanged half of the time)."""
    n = 1 + pick(draw, 3) if always else draw(_HOW_MANY)
    buf = bytearray(data)
    for _ in range(n):
        op = draw(_BYTE_OPS)
        at = pick(draw, len(buf) + 1)
        if op == "cut":
            del buf[at:]
        elif op == "flip" and at < len(buf):
            buf[at] = draw(_BYTE)
        elif op == "insert":
            buf[at:at] = draw(_SOME_BYTES)
        elif op == "delete":
            del buf[at : at + 1 + pick(draw, 16)]
        elif op == "repeat":
            buf[at:at] = buf[at : at + 1 + pick(draw, 64)]
        else:
            buf[at:at] = draw(_SPICE)
    return bytes(buf)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    return mutate_bytes(draw, data)


def json_text(doc: Any) -> str:
    """`doc` as JSON text (`Raw` leaves as their token, bytes as latin-1 text, NaN as NaN)."""
    if isinstance(doc, Raw):
        return doc.json
    if isinstance(doc, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{json_text(v)}" for k, v in doc.items()) + "}"
    if isinstance(doc, list | tuple):
        return "[" + ",".join(json_text(v) for v in doc) + "]"
    if isinstance(doc, bytes):
        return json.dumps(doc.decode("latin-1"))
    if isinstance(doc, msgpack.Timestamp):
        return json.dumps(doc.to_datetime().isoformat())
    return json.dumps(doc)


def json_bytes(doc: Any) -> bytes:
    return json_text(doc).encode("utf-8", "surrogatepass")


def mp_bytes(doc: Any) -> bytes:
    """`doc` as MessagePack (`Raw` leaves as their bytes; what cannot be packed as its text)."""
    if isinstance(doc, Raw):
        return doc.mp
    if isinstance(doc, dict):
        items = b"".join(mp_bytes(k) + mp_bytes(v) for k, v in doc.items())
        return _PACK.pack_map_header(len(doc)) + items
    if isinstance(doc, list | tuple):
        return _PACK.pack_array_header(len(doc)) + b"".join(mp_bytes(v) for v in doc)
    try:
        return msgpack.packb(doc)  # type: ignore[no-any-return]
    except (OverflowError, TypeError, ValueError, UnicodeError):
        return msgpack.packb(repr(doc))  # type: ignore[no-any-return]


_DEEP_PY = 200


def python_value(doc: Any) -> Any:
    """A mutated document as the Python values a library hands over (no `Raw` tokens: the
    equivalent value instead, a huge int, NaN, a deep nesting)."""
    if isinstance(doc, Raw):
        special: dict[str, Any] = {
            "NaN": float("nan"),
            "Infinity": float("inf"),
            "1e999": float("inf"),
            "-1e999": float("-inf"),
        }
        if doc.json in special:
            return special[doc.json]
        if doc.json.lstrip("-").isdigit():
            return int(doc.json[:400])
        if doc.json.startswith("["):
            deep: Any = []
            for _ in range(_DEEP_PY):
                deep = [deep]
            return deep
        return doc.json
    if isinstance(doc, dict):
        return {k: python_value(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [python_value(v) for v in doc]
    return doc


@st.composite
def inputs(
    draw: st.DrawFn,
    seeds: Sequence[Any],
    encode: Callable[[Any], bytes] = json_bytes,
    *,
    random_share: int = 8,
) -> bytes:
    """Mostly a mutated seed, encoded and maybe byte-mutated; 1 in `random_share` random bytes."""
    if pick(draw, random_share) == 0:
        return draw(_RANDOM_BYTES)
    doc = mutate_doc(draw, seeds[pick(draw, len(seeds))])
    return mutate_bytes(draw, encode(doc))


# ---- the packed 32-byte records (core.codec) and their parser (ingest.wire) ---------------------


def test_packed_records_decode_or_refuse() -> None:
    """Buffers of packed `MarketDataEvent` records (valid ones cut, flipped, extended; random
    bytes) through `core.codec.decode_events` (CodecError for stray bytes) and
    `ingest.wire.parse_binary` (never raises: trades or `truncated_frame` / `unknown_symbol`
    rejects). A decode must view exactly ``len // 32`` records. Nothing crashed: every
    32-byte pattern is a record, and the checks it needs (length, symbol id) are there."""
    registry = SymbolRegistry(["BTC/USD", "ETH/USD"])
    valid = record_codec.encode_events(
        event_type=[2, 2, 3, 1],
        symbol_id=[0, 1, 0, 1],
        timestamp_ns=[1_700_000_000_000_000_000, 1_700_000_000_000_000_001, 0, -1],
        price=[100.5, 2000.25, 101.0, 1e308],
        size=[0.5, 1.0, 10.0, 0.0],
        side=[1, 2, 0, 9],
    )
    tally = Tally("packed 32-byte records (core codec + ingest.wire.parse_binary)", (CodecError,))

    def decode(buf: bytes) -> str | None:
        verdict = check_items(wire.parse_binary(buf, registry))
        rec = record_codec.decode_events(buf)  # CodecError for stray bytes
        if len(rec) * record_codec.RECORD_SIZE != len(buf):
            raise BadResultError(f"{len(rec)} records from {len(buf)} bytes")
        record_codec.events_to_frame(rec)
        return verdict

    strategy = st.one_of(
        mutated_bytes(valid),
        st.binary(max_size=200),
        st.binary(min_size=32, max_size=32).map(lambda b: valid + b * 3),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- quantlab's own wire frames (ingest.wire, JSON and MessagePack) ---------------------------

_WIRE_SEEDS: list[Any] = [
    [
        {"T": "t", "S": "BTC/USD", "t": 1_700_000_000_000_000_000, "p": 100.5, "s": 0.5, "a": 1},
        {"T": "q", "S": "BTC/USD", "t": 1_700_000_000_000_000_001, "bp": 100.0, "ap": 101.0},
        {
            "T": "b",
            "S": "ETH/USD",
            "t": 1_700_000_000_000_000_002,
            "o": 1.0,
            "h": 2.0,
            "l": 0.5,
            "c": 1.5,
            "v": 10.0,
        },
    ],
    {"T": "t", "S": "ETH/USD", "t": 1, "p": 2000.0, "s": 1.0, "i": "x-1"},
]


def test_wire_frames_parse_or_reject() -> None:
    """quantlab's compact JSON and MessagePack frames (`ingest.wire.WireParser`), mutated.

    Found: a frame nested deeper than the recursion limit raised RecursionError and a string
    with bad UTF-8 UnicodeDecodeError (msgspec raises both, outside its DecodeError); a
    timestamp beyond int64 (``"t": 10**30``, a valid integer to msgspec) passed the struct
    decode and crashed building the frame (OverflowError, TypeError)."""
    parser = wire.WireParser(["BTC/USD", "ETH/USD"])
    tally = Tally("quantlab wire frames, JSON + MessagePack (ingest.wire)")

    def decode(data: tuple[str, bytes]) -> str | None:
        kind, raw = data
        return check_items(parser.parse_json(raw) if kind == "json" else parser.parse_msgpack(raw))

    strategy = st.one_of(
        inputs(_WIRE_SEEDS, json_bytes).map(lambda b: ("json", b)),
        inputs(_WIRE_SEEDS, mp_bytes).map(lambda b: ("msgpack", b)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- typed messages (core.messages from_json / from_msgpack) ---------------------------------

_T0 = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def _message_seeds() -> list[Any]:
    sid = uuid.UUID(int=1)
    order = msgs.Order(
        order_id=uuid.UUID(int=2),
        client_order_id="c-1",
        symbol="BTC/USD",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal("0.5"),
        price=Decimal("100.25"),
        time_in_force=TimeInForce.GTC,
        strategy_id="s",
        signal_id=sid,
        timestamp=_T0,
    )
    messages: list[Any] = [
        msgs.Quote(symbol="BTC/USD", ts_event=1, bid=100.0, ask=101.0, bid_size=1.0),
        msgs.Trade(symbol="BTC/USD", ts_event=2, price=100.5, size=0.1, aggressor=Aggressor.BUYER),
        msgs.Bar(symbol="ETH/USD", ts_event=3, open=1, high=2, low=0.5, close=1.5, volume=10),
        msgs.NewsEvent(id="n", symbols=["AAPL"], headline="h", source="s", url="u", timestamp=_T0),
        msgs.Signal(
            signal_id=sid,
            strategy_id="s",
            symbol="BTC/USD",
            side=Side.SELL,
            strength=0.5,
            confidence=0.9,
            timestamp=_T0,
            features=[1.0, -2.0],
            metadata={"k": "v"},
        ),
        msgs.ExpertWeights(
            strategy_id="s", timestamp=_T0, rounds=3, weights={"a": 0.25, "b": 0.75}
        ),
        order,
        msgs.OrderDenied(order=order, reason="limit", detail="too big", timestamp=_T0),
        msgs.OrderEvent(
            order_id=uuid.UUID(int=2),
            client_order_id="c-1",
            symbol="BTC/USD",
            status=OrderStatus.ACCEPTED,
            venue="paper",
            timestamp=_T0,
        ),
        msgs.Fill(
            fill_id=uuid.UUID(int=3),
            order_id=uuid.UUID(int=2),
            client_order_id="c-1",
            symbol="BTC/USD",
            side=Side.BUY,
            price=Decimal("100.25"),
            quantity=Decimal("0.5"),
            fee=Decimal("0.01"),
            fee_currency="USD",
            liquidity=Liquidity.MAKER,
            timestamp=_T0,
            venue="paper",
            trade_id="t-1",
        ),
        msgs.DataGap(source="x", symbol="BTC/USD", start=_T0, end=_T0, seconds=1.5),
    ]
    return [msgspec.json.decode(msgs.to_json(m)) for m in messages]


_WIRE_MESSAGE_TYPES = tuple(t for t in msgs.WireMessage.__args__)  # type: ignore[attr-defined]


def test_typed_messages_decode_or_refuse() -> None:
    """Every `WireMessage` type as JSON (`from_json`) and MessagePack (`from_msgpack`),
    mutated: a decode gives a message of a wire type, a refusal is a `msgspec.DecodeError`
    (its documented error, `ValidationError` included) naming the field's path.

    Found: bad UTF-8 in a string raised UnicodeDecodeError, a nesting deeper than the
    recursion limit RecursionError (msgspec raises both, even for a typed decode)."""
    seeds = _message_seeds()
    tally = Tally("typed bus messages, JSON + MessagePack (core.messages)", (msgspec.DecodeError,))

    def decode(data: tuple[str, bytes]) -> None:
        kind, raw = data
        out = msgs.from_json(raw) if kind == "json" else msgs.from_msgpack(raw)
        if not isinstance(out, _WIRE_MESSAGE_TYPES):
            raise BadResultError(f"decoded a {type(out).__name__}")

    strategy = st.one_of(
        inputs(seeds, json_bytes).map(lambda b: ("json", b)),
        inputs(seeds, mp_bytes).map(lambda b: ("msgpack", b)),
    )
    fuzz(tally, strategy, decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- Redis bus entries (adapters.redis.codec): J / P / row layouts, Arrow IPC frames -------------


def _entry_seeds() -> list[tuple[str, Any]]:
    """Valid stream entries, each as (layout, decoded document) to mutate and re-encode."""
    trade = msgs.Trade(symbol="BTC/USD", ts_event=2, price=100.5, size=0.1)
    quote = msgs.Quote(symbol="BTC/USD", ts_event=1, bid=100.0, ask=101.0)
    frame = pl.DataFrame(
        {
            "symbol": ["BTC/USD", "ETH/USD"],
            "timestamp": [1, 2],
            "price": [100.0, 2000.0],
            "size": [0.5, 1.0],
            "aggressor": [1, 2],
            "trade_id": ["a", "b"],
        },
        schema=SCHEMAS[EventType.TRADE],
    )
    batch = msgs.MarketBatch(kind=EventType.TRADE, frame=frame, seq=7, ts_min=1, ts_max=2)
    features = msgs.FeatureBatch(
        spec="default", version="1", frame=pl.DataFrame({"f": [1.0, None]}), seq=1, ts_max=2
    )
    dead = DeadLetter(
        envelope=Envelope(id="1-0", topic="market.trades", payload=trade, ts_publish=5),
        subscription="sub",
        reason="nack",
    )
    entries = [
        bus_codec.encode_events([("1-0", 5, trade), ("1-1", 5, quote)]),
        bus_codec.encode_events([("1-0", 5, trade), ("1-1", 6, trade)]),
        bus_codec.encode_events([("2-0", 5, {"kind": "x", "n": [1, 2.5]}), ("2-1", 5, "text")]),
        bus_codec.encode_events([("3-0", 5, batch), ("3-1", 6, features)]),
        bus_codec.encode_events([("4-0", 5, frame.select("price")), ("4-1", 6, dead)]),
    ]
    seeds: list[tuple[str, Any]] = []
    for entry in entries:
        tag = entry[:1]
        if tag == b"J":
            seeds.append(("J", msgspec.json.decode(entry[5:])))
        elif tag == b"P":
            seeds.append(("P", msgspec.msgpack.decode(entry[5:])))
        else:
            rows = msgspec.msgpack.decode(entry)
            for row in rows:  # open each payload, so that mutations reach its fields
                if row[2] in ("mb", "fb", "dl"):
                    row[3] = msgspec.msgpack.decode(row[3])
            seeds.append(("rows", rows))
    return seeds


def _encode_entry(seed: tuple[str, Any], count_delta: int) -> bytes:
    layout, doc = seed
    if layout in ("J", "P"):
        n = len(doc[0]) if isinstance(doc, list) and doc and isinstance(doc[0], list) else 0
        header = layout.encode() + max(0, n + count_delta).to_bytes(4, "big")
        return header + (json_bytes(doc) if layout == "J" else mp_bytes(doc))
    rows = doc if isinstance(doc, list) else [doc]
    out = []
    for row in rows:
        if isinstance(row, list) and len(row) == 4 and isinstance(row[3], dict):
            row = [*row[:3], mp_bytes(row[3])]
        out.append(row)
    return mp_bytes(out)


def _with_frame_damaged(draw: st.DrawFn, rows: list[Any]) -> list[Any]:
    """`rows` (a copy) with the Arrow IPC bytes of one frame-carrying payload mutated."""
    rows = _copy(rows)
    framed = [r for r in rows if r[2] in ("mb", "fb", "df")]
    row = framed[pick(draw, len(framed))]
    if row[2] == "df":
        row[3] = mutate_bytes(draw, row[3], always=True)
    else:
        row[3]["frame"] = mutate_bytes(draw, row[3]["frame"], always=True)
    return rows


@st.composite
def bus_entries(draw: st.DrawFn, seeds: list[tuple[str, Any]]) -> bytes:
    """A mutated entry; one in 10 random bytes, one in 3 a valid entry with a damaged frame."""
    choice = pick(draw, 30)
    if choice < 3:
        return draw(_RANDOM_BYTES)
    if choice < 13:
        framed = [doc for layout, doc in seeds if layout == "rows"]
        rows = _with_frame_damaged(draw, framed[pick(draw, len(framed))])
        return _encode_entry(("rows", rows), 0)
    layout, doc = seeds[pick(draw, len(seeds))]
    doc = mutate_doc(draw, doc)
    raw = _encode_entry((layout, doc), (0, 0, 0, 1, -1, 2**20)[pick(draw, 6)])
    return mutate_bytes(draw, raw)


def _check_payload(payload: Any) -> None:
    if isinstance(payload, msgs.MarketBatch):
        if not (isinstance(payload.seq, int) and isinstance(payload.source, str)):
            raise BadResultError(f"MarketBatch with seq {payload.seq!r}, source {payload.source!r}")
        if not all(isinstance(v, int) for v in (payload.ts_min, payload.ts_max, payload.ts_recv)):
            raise BadResultError(f"MarketBatch with times {payload.ts_min!r}, {payload.ts_max!r}")
        payload.frame.to_dicts()
    elif isinstance(payload, msgs.FeatureBatch):
        if not all(isinstance(v, str) for v in (payload.spec, payload.version)):
            raise BadResultError(f"FeatureBatch named {payload.spec!r} {payload.version!r}")
        if not all(isinstance(v, int) for v in (payload.seq, payload.ts_max, payload.ts_recv)):
            raise BadResultError(f"FeatureBatch with seq {payload.seq!r}")
        payload.frame.to_dicts()
    elif isinstance(payload, pl.DataFrame):
        payload.to_dicts()  # every value readable
    elif isinstance(payload, DeadLetter):
        env = payload.envelope
        texts = (env.id, env.topic, payload.subscription, payload.reason)
        if not all(isinstance(v, str) for v in texts):
            raise BadResultError(f"DeadLetter with {texts!r}")
        if not all(isinstance(v, int) for v in (env.ts_publish, env.deliveries, env.seq)):
            raise BadResultError(f"DeadLetter envelope with ts {env.ts_publish!r}")
        _check_payload(env.payload)


def _panicking_frames() -> list[bytes]:
    """Entries holding an Arrow IPC frame polars panics on (one byte of the record batch's
    metadata changed: "out-of-spec: MissingData" unwrapped in polars-arrow, found by flipping
    bytes of this frame). As damaged in transit (its CRC-32 no longer matches) and as damaged
    before it was checksummed (the CRC-32 matches the damaged bytes)."""
    frame = pl.DataFrame({"a": [1, 2, 3], "s": ["x", "yy", "zzz"], "f": [1.0, 2.5, None]})
    good = frame.write_ipc_stream(None).getvalue()
    bad = bytearray(good)
    bad[299] = 123
    out = []
    for crc_of in (good, bytes(bad)):
        data = bytes(bad) + zlib.crc32(crc_of).to_bytes(4, "big")
        out.append(mp_bytes([["9-0", 1, "df", data]]))
    return out


def test_bus_entries_decode_or_refuse() -> None:
    """Redis stream entries of every layout (typed JSON ``J``, plain MessagePack ``P``, rows
    of market batches, feature batches, bare frames and dead letters), mutated down to the
    fields of each payload, one in three with the bytes of an Arrow IPC frame damaged,
    through `decode_events`. A refusal is a `CodecError`; a decoded payload must have the
    types its class declares.

    Found: a row or payload field of the wrong type was decoded into the result (an event id
    that is a number or a list, a dead letter whose ``deliveries`` is a string); a missing
    field or a row that is not a list was refused with the text of the internal error
    (``corrupt bus entry: 0``, the KeyError of ``row[0]``). A separate probe of 20,000 damaged
    IPC frames made polars panic (~1 in 1,000: a pyo3 PanicException, a BaseException the
    codec's ``except Exception`` let through) and once abort the whole process on a failed
    189 TB allocation. Frames now carry a CRC-32 checked before polars reads them; the two
    explicit entries of `_panicking_frames` guard the check and the panic's handling."""
    seeds = _entry_seeds()
    tally = Tally("Redis bus entries incl. Arrow IPC frames (adapters.redis.codec)", (CodecError,))

    def decode(raw: bytes) -> None:
        events = bus_codec.decode_events(raw)
        for event in events:
            if not (isinstance(event[0], str) and isinstance(event[1], int)):
                raise BadResultError(f"event id {event[0]!r}, publish time {event[1]!r}")
            _check_payload(event[2])

    for entry in _panicking_frames():
        tally.feed(decode, entry)
    fuzz(tally, bus_entries(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)
