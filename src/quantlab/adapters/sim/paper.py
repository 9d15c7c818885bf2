"""`PaperVenue`: a simulated venue that matches orders against the market data that follows them.

The venue takes quotes (``market.data.quote``), trades (``market.data.trade``) and bars
(``market.data.bar``): the kinds it is configured to match on (`PaperVenueConfig.match_on`).

Timing (no look-ahead). An order decided at simulated time t reaches the venue after the
configured latency: it is *active* only for market events strictly after ``t + latency``. Its
first such event (of its symbol, any configured kind, earliest first; at equal timestamps
quotes before trades before bars) is its *arrival*.

Matching, for a buy limit at L (sells mirror it: bid for ask, high for low, at-or-above for
at-or-below). From its arrival the order is *taking*: at each event whose market price is at
or below L it takes, as a **taker** at that price, up to the quantity the event offers:

* quote: the ask, up to the ask size;
* trade: the trade's price, up to the trade's size;
* bar: the open, up to the bar's fillable volume, ``participation x volume``
  (`PaperVenueConfig.participation`; None, the default, means unlimited).

At the first event whose market price is above L the order *rests* at L for good: from then
on it fills only as a **maker**, at L, when the market reaches L (an ask at or below L, a
trade at or below L, a bar's low at or below L; the event where it stopped taking included,
e.g. a bar that opens above L and trades down to it), up to that event's quantity. A market
order is always taking. Every event's quantity is new liquidity (a quote that repeats a level
the order just took from offers its size again). A size or volume that is 0, NaN or missing
is unknown depth, taken as unlimited (`Quote` sizes default to 0). Fills follow each other
until the order is filled: each is rounded down to the instrument's lot except the last, which
takes the exact remainder, so an order's fills sum exactly to its quantity. Data-quality
flags are not looked at.

Prices. Maker fills are at the limit. Taker fills are at the market's price worsened by
``slippage_bps + impact_bps_per_participation x (fill quantity / quantity at that event)``
(buys up, sells down, rounded to the tick away from the trader; with both 0, the default, the
market's price unchanged), never past the limit: a limit order never fills at a price worse
than its limit. Fees are charged in the quote currency: maker or taker bps of the notional.

Time in force. IOC: matched against its arrival event only, the remainder is CANCELED
("ioc remainder"). DAY: EXPIRED at the end of the order's UTC day ("end of day"). GTC: rests
until filled or canceled. A cancel takes effect after the latency too: events up to
``cancel time + latency`` may still fill the order. The venue's time is the latest market
event it has seen (or the injected clock's time if that is later); expiries and delayed
cancels are reported once that time reaches them, stamped with the time they took effect.

Reports reach the listener in event order: ACCEPTED on submit (at ``t + latency``), fills,
then at most one terminal event. `submit` is idempotent on ``client_order_id``.

Cross-kind ordering is best effort: each kind is matched in its time order, and the events of
several kinds are merged in time order within what the venue holds when it matches; feed
kinds in time-interleaved batches (as the ingest engine does). An order that arrives late (its
time before the latest events) is matched against the events the venue still holds: the
latest batch and at least the 4096 events before it, per symbol and kind.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core import ids
from quantlab.core.clock import Clock, datetime_to_ns, ns_to_datetime
from quantlab.core.enums import EventType, Liquidity, OrderStatus, OrderType, Side, TimeInForce
from quantlab.core.errors import ConfigError, DataError, QuantlabError
from quantlab.core.instruments import Instrument, InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, Order, OrderEvent
from quantlab.execution.ports import (
    VenueListener,
    VenueOrderState,
    VenueRejectedError,
    VenueReport,
)

_DAY_NS = 86_400 * 1_000_000_000
_BPS = Decimal(10_000)
_ONE = Decimal(1)
_HISTORY = 4096  # events kept per symbol and kind beyond the latest batch, for late orders
_NO_END = 2**63 - 1
_TIMESTAMP = pl.Datetime("ns", "UTC")
# Sizes arrive as floats (0.0007769999999999999 for 0.000777): a part in 1e9 more keeps such
# noise from costing a lot when the size is rounded down to the lot.
_SNAP = 1 + 1e-9
_KIND_NAMES = {"quote": EventType.QUOTE, "trade": EventType.TRADE, "bar": EventType.BAR}
_KIND_ORDER = (EventType.QUOTE, EventType.TRADE, EventType.BAR)  # ties at one timestamp
_TERMINAL = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)

F64 = npt.NDArray[np.float64]


class PaperVenueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the paper venue matches. Every field has a default; a bad value raises
    `ConfigError` naming the field.

    maker_fee_bps, taker_fee_bps
        Fees, bps of the notional, in the quote currency (>= 0).
    match_on
        Kinds of market data to match against: any of "quote", "trade", "bar" (default all;
        the backtest replays bars only).
    participation
        Fraction of a bar's volume an order may take in that bar, in (0, 1]; None (default):
        unlimited. Quotes and trades are limited by their own size instead.
    latency_ms
        Simulated time between an order (or a cancel) and the venue acting on it (>= 0).
    slippage_bps
        Fixed slippage of taker fills (>= 0).
    impact_bps_per_participation
        Extra taker slippage per unit of (fill quantity / quantity available at that event)
        (>= 0): 100 means 10 bps when a fill takes 10% of a bar's volume.
    """

    maker_fee_bps: Decimal = Decimal("2")
    taker_fee_bps: Decimal = Decimal("7.5")
    match_on: tuple[str, ...] = ("quote", "trade", "bar")
    participation: float | None = None
    latency_ms: float = 0.0
    slippage_bps: Decimal = Decimal(0)
    impact_bps_per_participation: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for key in ("maker_fee_bps", "taker_fee_bps", "slippage_bps"):
            _check_bps(key, getattr(self, key))
        _check_bps("impact_bps_per_participation", self.impact_bps_per_participation)
        worst = self.slippage_bps + self.impact_bps_per_participation
        if worst >= _BPS:
            raise ConfigError(
                "impact_bps_per_participation",
                f"slippage_bps + impact_bps_per_participation must be < 10000, got {worst}",
            )
        if not isinstance(self.match_on, tuple | list) or not self.match_on:
            raise ConfigError("match_on", f"must be a non-empty list, got {self.match_on!r}")
        names = [str(k).lower() for k in self.match_on]
        unknown = [k for k in names if k not in _KIND_NAMES]
        if unknown:
            raise ConfigError(
                "match_on", f"unknown kind(s) {unknown}; expected some of {sorted(_KIND_NAMES)}"
            )
        if len(set(names)) != len(names):
            raise ConfigError("match_on", f"a kind is listed twice: {list(self.match_on)}")
        p = self.participation
        if p is not None and not (isinstance(p, int | float) and 0 < p <= 1):
            raise ConfigError("participation", f"must be in (0, 1] or None, got {p!r}")
        lat = self.latency_ms
        if not (isinstance(lat, int | float) and math.isfinite(lat) and lat >= 0):
            raise ConfigError("latency_ms", f"must be a finite number >= 0, got {lat!r}")

    @property
    def kinds(self) -> tuple[EventType, ...]:
        """The configured kinds, in tie-break order (quote, trade, bar)."""
        names = {str(k).lower() for k in self.match_on}
        return tuple(k for k in _KIND_ORDER if k.topic_name in names)

    @property
    def latency_ns(self) -> int:
        return round(self.latency_ms * 1_000_000)


def _check_bps(key: str, value: object) -> None:
    if not (isinstance(value, Decimal) and value.is_finite() and Decimal(0) <= value < _BPS):
        raise ConfigError(key, f"must be a finite number of bps in [0, 10000), got {value!r}")


class _Series:
    """One symbol's recent events of one kind: times, and the kind's value columns (`_COLS`).

    Rows are appended in place (buffers grow by doubling); when a buffer is full, rows older
    than the latest `keep` are dropped. Rows are numbered from the first one ever seen, so an
    order's position (`_State.cursor`) survives the drop.
    """

    __slots__ = ("_ts", "_values", "base", "n")

    def __init__(self, ts: npt.NDArray[np.int64], values: F64) -> None:
        self.base = 0  # the number of row 0
        self.n = 0  # live rows
        self._ts = np.empty(0, np.int64)
        self._values = np.empty((0, values.shape[1]), np.float64)
        self.append(ts, values, _HISTORY)

    @property
    def ts(self) -> npt.NDArray[np.int64]:
        return self._ts[: self.n]

    @property
    def values(self) -> F64:  # (rows, columns)
        return self._values[: self.n]

    @property
    def end(self) -> int:
        return self.base + self.n

    def append(self, ts: npt.NDArray[np.int64], values: F64, keep: int) -> None:
        n, m = self.n, len(ts)
        if n + m > len(self._ts):
            cut = max(n - keep, 0)
            live = n - cut
            size = max(2 * (live + m), 256)
            new_ts = np.empty(size, np.int64)
            new_values = np.empty((size, values.shape[1]), np.float64)
            new_ts[:live] = self._ts[cut:n]
            new_values[:live] = self._values[cut:n]
            self._ts, self._values = new_ts, new_values
            self.base += cut
            n = self.n = live
        self._ts[n : n + m] = ts
        self._values[n : n + m] = values
        self.n = n + m


@dataclass(slots=True, eq=False)
class _State:
    """An order at the venue."""

    order: Order
    venue_order_id: str
    instrument: Instrument | None  # None: refused
    buy: bool
    limit: float | None
    order_ns: int  # the order's time
    active_ns: int  # matches events strictly after this
    expires_ns: int | None  # DAY: not at or after this
    status: OrderStatus
    updated_ns: int
    cancel_ns: int | None = None  # a requested cancel takes effect after this
    cursor: dict[EventType, int] = field(default_factory=dict)  # next event not yet matched
    arrived: bool = False
    taking: bool = True  # marketable at every event it has seen so far (`_events`)
    filled: Decimal = Decimal(0)
    fills: list[Fill] = field(default_factory=list)
    reason: str = ""

    @property
    def open(self) -> bool:
        return self.status not in _TERMINAL

    def state(self) -> VenueOrderState:
        order = self.order
        return VenueOrderState(
            client_order_id=order.client_order_id,
            venue_order_id=self.venue_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            filled_quantity=self.filled,
            status=self.status,
            price=order.price,
            fills=tuple(self.fills),
            reason=self.reason,
            updated_at=ns_to_datetime(self.updated_ns),
        )


class PaperVenue:
    """A `Venue` that matches against the quotes, trades and bars it receives (module doc).

    Build it from a `PaperVenueConfig` (``msgspec.convert(mapping, PaperVenueConfig)`` reads
    one from configuration), from keywords, or both (a keyword that is not None wins)::

        PaperVenue(instruments, config=PaperVenueConfig(participation=0.1, latency_ms=50))
        PaperVenue(instruments, maker_fee_bps=Decimal(2), taker_fee_bps=Decimal("7.5"))

    `clock`, if given, is the venue's "now" for cancels and expiries when it is ahead of the
    latest market event. As a `Component` it consumes ``market.data.<kind>`` for the kinds
    it matches on; `on_bars`, `on_quotes`, `on_trades` feed it directly.
    """

    paper = True
    poll_interval_s = 0.0

    def __init__(
        self,
        instruments: InstrumentBook,
        *,
        maker_fee_bps: Decimal | None = None,
        taker_fee_bps: Decimal | None = None,
        name: str = "paper",
        config: PaperVenueConfig | None = None,
        match_on: Sequence[str] | None = None,
        participation: float | None = None,
        latency_ms: float | None = None,
        slippage_bps: Decimal | None = None,
        impact_bps_per_participation: Decimal | None = None,
        clock: Clock | None = None,
    ) -> None:
        overrides: dict[str, Any] = {
            "maker_fee_bps": maker_fee_bps,
            "taker_fee_bps": taker_fee_bps,
            "match_on": None if match_on is None else tuple(match_on),
            "participation": participation,
            "latency_ms": latency_ms,
            "slippage_bps": slippage_bps,
            "impact_bps_per_participation": impact_bps_per_participation,
        }
        config = config if config is not None else PaperVenueConfig()
        given = {k: v for k, v in overrides.items() if v is not None}
        self.config = msgspec.structs.replace(config, **given) if given else config
        self.name = name
        self.instruments = instruments
        self.clock = clock
        cfg = self.config
        self.maker_fee = cfg.maker_fee_bps / _BPS
        self.taker_fee = cfg.taker_fee_bps / _BPS
        self.kinds = cfg.kinds
        self._latency_ns = cfg.latency_ns
        self._participation = cfg.participation
        self._slippage = cfg.slippage_bps
        self._impact = cfg.impact_bps_per_participation
        self._listener: VenueListener | None = None
        self._series: dict[EventType, dict[str, _Series]] = {k: {} for k in _KIND_ORDER}
        self._stores = [(rank, kind, self._series[kind]) for rank, kind in enumerate(self.kinds)]
        self._orders: dict[str, _State] = {}  # every order ever submitted, by client id
        self._open: dict[str, _State] = {}  # the open ones, in submission order
        self._fills: list[Fill] = []
        self._positions: dict[str, Decimal] = {}
        self._seen_ns: int | None = None  # the latest market event time seen
        self.fills = 0

    # -- Component: market data ------------------------------------------------------------
    async def start(self, bus: Bus) -> None:
        for kind in self.kinds:
            bus.consume(
                topics.market_data(kind),
                self._on_batch,
                name=f"venue.{self.name}.{kind.topic_name}",
            )

    async def stop(self) -> None:
        return None

    async def _on_batch(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        await self.on_market(batch.kind, batch.frame)

    async def on_bars(self, frame: pl.DataFrame) -> None:
        """Take a bar batch (the bar schema; ``volume`` optional)."""
        await self.on_market(EventType.BAR, frame)

    async def on_quotes(self, frame: pl.DataFrame) -> None:
        """Take a quote batch (the quote schema; sizes optional)."""
        await self.on_market(EventType.QUOTE, frame)

    async def on_trades(self, frame: pl.DataFrame) -> None:
        """Take a trade batch (the trade schema; ``size`` optional)."""
        await self.on_market(EventType.TRADE, frame)

    async def on_market(self, kind: EventType, frame: pl.DataFrame) -> None:
        """Store a batch of one kind and match the open orders of its symbols against it.

        A kind the venue is not configured to match on is ignored.
        """
        if kind not in self.kinds or frame.height == 0:
            return
        symbols = self._store(kind, frame)
        reports: list[VenueReport] = []
        for state in list(self._open.values()):
            if state.order.symbol in symbols:
                reports.extend(self._advance(state))
        now = self._now_ns()
        for state in list(self._open.values()):
            reports.extend(self._settle(state, now))
        reports.sort(key=lambda r: r.timestamp)  # stable: each order's own reports keep order
        await self._emit(reports)

    def _store(self, kind: EventType, frame: pl.DataFrame) -> set[str]:
        """Append a batch to the per-symbol series of its kind; the batch's symbols.

        Batches are small and frequent: the columns are taken once as numpy and grouped by
        symbol with a dict over the batch's few symbols, with no DataFrame-level call
        (each costs a fixed 20-500 us whatever the batch size).
        """
        _check_columns(kind, frame)
        if frame.get_column("symbol").null_count():
            frame = frame.filter(pl.col("symbol").is_not_null())
            if frame.height == 0:
                return set()
        n = frame.height
        if n == 0:
            return set()
        ts = frame.get_column("timestamp").cast(_TIMESTAMP).cast(pl.Int64).to_numpy()
        columns = _VALUES[kind]
        present = set(frame.columns)
        values = np.empty((n, len(columns)), np.float64)
        for j, c in enumerate(columns):
            if c in present:
                values[:, j] = frame.get_column(c).cast(pl.Float64).to_numpy()
            else:  # a missing size column: unknown depth
                values[:, j] = np.inf
        sizes = values[:, _N_PRICES[kind] :]
        sizes[~(sizes > 0)] = np.inf  # 0, negative or NaN: unknown depth, unlimited
        symbols: list[str] = frame.get_column("symbol").to_list()
        first = symbols[0]
        store = self._series[kind]
        if symbols.count(first) == n:  # one symbol
            self._append(store, first, ts, values)
            names = {first}
        else:  # the rows of each symbol, in arrival order
            index = {s: i for i, s in enumerate(dict.fromkeys(symbols))}
            codes = np.fromiter(map(index.__getitem__, symbols), np.intp, n)
            order = np.argsort(codes, kind="stable")
            bounds = (np.flatnonzero(np.diff(codes[order])) + 1).tolist()
            by_ts, by_values = ts[order], values[order]  # appending copies the slices
            for name, start, end in zip(index, [0, *bounds], [*bounds, n], strict=True):
                self._append(store, name, by_ts[start:end], by_values[start:end])
            names = set(index)
        last = int(ts.max())
        if self._seen_ns is None or last > self._seen_ns:
            self._seen_ns = last
        return names

    @staticmethod
    def _append(
        store: dict[str, _Series], name: str, ts: npt.NDArray[np.int64], values: F64
    ) -> None:
        series = store.get(name)
        if series is None:
            store[name] = _Series(ts, values)
        else:
            series.append(ts, values, _HISTORY)

    # -- Venue port ------------------------------------------------------------------------
    def set_listener(self, listener: VenueListener) -> None:
        self._listener = listener

    async def submit(self, order: Order) -> None:
        """Accept `order` (ACCEPTED, then fills and its end as the market allows).

        Idempotent on ``client_order_id``: a known id never trades again; the order's current
        status is reported again instead (a refused one raises again). An order the venue
        cannot take (quantity or limit price not > 0, an unknown instrument) raises
        `VenueRejectedError`.
        """
        known = self._orders.get(order.client_order_id)
        if known is not None:
            if known.status is OrderStatus.REJECTED:
                raise VenueRejectedError(known.reason)
            await self._emit([self._event(known, known.status, known.updated_ns, known.reason)])
            return
        t = datetime_to_ns(order.timestamp)
        active = t + self._latency_ns
        instrument, refusal = self._check(order)
        state = _State(
            order=order,
            venue_order_id=f"{self.name}-{len(self._orders) + 1:08d}",
            instrument=instrument,
            buy=order.side is Side.BUY,
            limit=float(order.price)
            if order.order_type is OrderType.LIMIT and order.price is not None
            else None,
            order_ns=t,
            active_ns=active,
            expires_ns=(
                (t // _DAY_NS + 1) * _DAY_NS if order.time_in_force is TimeInForce.DAY else None
            ),
            status=OrderStatus.ACCEPTED,
            updated_ns=active,
        )
        self._orders[order.client_order_id] = state
        if refusal:
            state.status, state.reason, state.updated_ns = OrderStatus.REJECTED, refusal, t
            raise VenueRejectedError(refusal)
        self._open[order.client_order_id] = state
        reports: list[VenueReport] = [self._event(state, OrderStatus.ACCEPTED, active)]
        reports.extend(self._advance(state))
        reports.extend(self._settle(state, self._now_ns()))
        await self._emit(reports)

    async def cancel(self, client_order_id: str) -> None:
        """Cancel an open order; it takes effect after the latency. Unknown or closed: ignored."""
        state = self._open.get(client_order_id)
        if state is None or state.cancel_ns is not None:
            return
        now = self._now_ns()
        asked = state.order_ns if now is None else max(now, state.order_ns)
        state.cancel_ns = asked + self._latency_ns
        reports = self._advance(state)
        reports.extend(self._settle(state, asked))
        await self._emit(reports)

    async def query_order(self, client_order_id: str) -> VenueOrderState | None:
        state = self._orders.get(client_order_id)
        return None if state is None else state.state()

    async def open_orders(self) -> list[VenueOrderState]:
        return [s.state() for s in self._open.values()]

    async def fills_since(self, since: dt.datetime) -> list[Fill]:
        return [f for f in self._fills if f.timestamp >= since]

    async def positions(self) -> dict[str, Decimal] | None:
        """None: the simulator's account lives only as long as its process, so after a
        restart it has nothing to compare with the order book's fills (which are the record).
        `net_positions` gives what was traded here in this process."""
        return None

    def net_positions(self) -> dict[str, Decimal]:
        """Signed net quantity per symbol traded here (from this venue's own fills)."""
        return dict(self._positions)

    async def poll(self) -> None:
        return None  # the paper venue pushes its reports as it makes them

    def stats(self) -> dict[str, Any]:
        return {"fills": self.fills, "resting": len(self._open)}

    # -- matching --------------------------------------------------------------------------
    def _check(self, order: Order) -> tuple[Instrument | None, str]:
        """The order's instrument, and why the venue refuses the order ("" if it does not)."""
        try:
            instrument = self.instruments[order.symbol]
        except QuantlabError as exc:
            return None, f"unknown instrument {order.symbol!r}: {exc}"
        q = order.quantity
        if not (q.is_finite() and q > 0):
            return instrument, f"quantity must be > 0, got {q}"
        p = order.price
        if order.order_type is OrderType.LIMIT and not (p is not None and p.is_finite() and p > 0):
            return instrument, f"limit price must be > 0, got {p}"
        return instrument, ""

    def _now_ns(self) -> int | None:
        """The venue's time: the latest market event seen, or the clock if it is later."""
        if self.clock is None:
            return self._seen_ns
        now = self.clock.now_ns()
        return now if self._seen_ns is None else max(now, self._seen_ns)

    def _advance(self, state: _State) -> list[VenueReport]:
        """Match an open order against the events it has not seen yet; its reports."""
        order = state.order
        end = state.expires_ns if state.expires_ns is not None else _NO_END
        if state.cancel_ns is not None:
            end = min(end, state.cancel_ns + 1)
        # Per kind: the rows [lo, hi) the order has not seen and may trade on.
        found: list[_Found] = []
        for rank, kind, store in self._stores:
            series = store.get(order.symbol)
            if series is None:
                continue
            n = series.n
            ts = series.ts
            lo = max(state.cursor.get(kind, 0) - series.base, 0)
            state.cursor[kind] = series.base + n
            if lo >= n:
                continue
            if ts[lo] <= state.active_ns:  # rows are time-ordered per symbol
                lo = max(lo, int(ts.searchsorted(state.active_ns, "right")))
            hi = n if ts[n - 1] < end else int(ts.searchsorted(end, "left"))
            if lo < hi:
                found.append(_Found(int(ts[lo]), rank, kind, series, lo, hi))
        if not found:
            return []
        ioc = order.time_in_force is TimeInForce.IOC
        arrival_ns: int | None = None
        if not state.arrived:
            state.arrived = True
            first = found[0] if len(found) == 1 else min(found, key=_Found.key)
            arrival_ns = first.first_ns
            if ioc:  # matched against its arrival event only
                first.hi = first.lo + 1
                found = [first]
        reports: list[VenueReport] = []
        events = self._arrival(state, found[0]) if ioc else self._events(state, found)
        for _, _, i, kind, series, taker in events:
            fill = self._fill(state, kind, series, i, taker)
            if fill is not None:
                reports.append(fill)
                if not state.open:
                    return reports
        if ioc and arrival_ns is not None:
            reports.append(self._close(state, OrderStatus.CANCELED, arrival_ns, "ioc remainder"))
        return reports

    def _events(self, state: _State, found: list[_Found]) -> Iterator[_Event]:
        """The events of `found` that can fill the order, in time order, taker or maker.

        An order is *taking* from its arrival as long as the market stays at or through its
        limit (each event's liquidity is new): it takes at the market's price. From the
        first event where it is not marketable, it rests at its limit and fills only as a
        maker, at its limit, when the market reaches it. A market order is always taking.
        """
        buy, limit, taking = state.buy, state.limit, state.taking
        flip: tuple[int, int] | None = None  # (time, kind rank) of the first unmarketable event
        if taking and limit is not None:
            for f in found:
                take = f.series.values[f.lo : f.hi, _COLS[f.kind][0 if buy else 1]]
                off = ~(take <= limit) if buy else ~(take >= limit)
                k = int(np.argmax(off))
                if off[k]:
                    at = (int(f.series.ts[f.lo + k]), f.rank)
                    flip = at if flip is None else min(flip, at)
            state.taking = flip is None
        streams: list[Iterator[_Event]] = []
        for f in found:
            ts, values, cols = f.series.ts, f.series.values, _COLS[f.kind]
            split = f.lo  # rows [lo, split) are taken, rows [split, hi) rested on
            if taking:
                if flip is None:
                    split = f.hi
                else:
                    window = ts[f.lo : f.hi]
                    cut = np.searchsorted(window, flip[0], "right" if f.rank < flip[1] else "left")
                    split = f.lo + int(cut)
            rows: list[tuple[npt.NDArray[np.intp], bool]] = []
            if split > f.lo:
                if limit is None:  # a market order: wherever there is a price
                    take = values[f.lo : split, cols[0] if buy else cols[1]]
                    rows.append((np.flatnonzero(np.isfinite(take) & (take > 0)) + f.lo, True))
                else:
                    rows.append((np.arange(f.lo, split), True))
            if split < f.hi and limit is not None:
                touch = values[split : f.hi, cols[2] if buy else cols[3]]
                through = touch <= limit if buy else touch >= limit
                rows.append((np.flatnonzero(through) + split, False))
            streams.append(_stream(f, rows))
        return streams[0] if len(streams) == 1 else heapq.merge(*streams)

    def _arrival(self, state: _State, found: _Found) -> list[_Event]:
        """`_events` for an IOC order's one event (the backtest's common case, made short)."""
        i, cols, buy, limit = found.lo, _COLS[found.kind], state.buy, state.limit
        row = found.series.values[i]
        take = float(row[cols[0] if buy else cols[1]])
        if limit is None:
            taker = take > 0 and math.isfinite(take)
            if not taker:
                return []
        elif take <= limit if buy else take >= limit:
            taker = True
        else:
            touch = float(row[cols[2] if buy else cols[3]])
            if not (touch <= limit if buy else touch >= limit):
                return []
            taker = False
        return [(found.first_ns, found.rank, i, found.kind, found.series, taker)]

    def _fill(
        self, state: _State, kind: EventType, series: _Series, i: int, taker: bool
    ) -> Fill | None:
        """Fill what event `i` allows (None if its quantity rounds to nothing)."""
        order, instrument = state.order, state.instrument
        assert instrument is not None  # noqa: S101  (refused orders never match)
        buy = state.buy
        cols = _COLS[kind]
        row = series.values[i]
        take = float(row[cols[0] if buy else cols[1]])
        depth = float(row[cols[4] if buy else cols[5]])
        limit = state.limit
        remaining = order.quantity - state.filled
        cap = depth  # a quote's or a trade's size
        if kind is EventType.BAR:
            cap = math.inf if self._participation is None else depth * self._participation
        quantity = remaining
        if math.isfinite(cap):
            available = to_decimal(cap * _SNAP)
            if available < remaining:
                quantity = instrument.round_quantity(available)
                if quantity <= 0:
                    return None
        if taker:
            price = to_decimal(take)
            bps = self._slippage
            if self._impact and math.isfinite(depth):
                bps += self._impact * min(quantity / to_decimal(depth), _ONE)
            if bps > 0:
                slipped = price * (1 + bps / _BPS if buy else 1 - bps / _BPS)
                price = instrument.round_price(slipped, order.side)
                if limit is not None and order.price is not None:  # never worse than the limit
                    price = min(price, order.price) if buy else max(price, order.price)
                if price <= 0:
                    price = instrument.tick_size
            rate, liquidity = self.taker_fee, Liquidity.TAKER
        else:
            assert order.price is not None  # noqa: S101
            price, rate, liquidity = order.price, self.maker_fee, Liquidity.MAKER
        ts_ns = int(series.ts[i])
        # Derived from the order, so ids never collide across runs that share a database,
        # and a replayed run reproduces them.
        trade_id = f"{order.client_order_id}-{len(state.fills) + 1}"
        fill = Fill(
            fill_id=ids.fill_id(self.name, trade_id),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            quantity=quantity,
            fee=price * quantity * rate,
            fee_currency=instrument.quote,
            liquidity=liquidity,
            timestamp=ns_to_datetime(ts_ns),
            venue=self.name,
            trade_id=trade_id,
            strategy_id=order.strategy_id,
        )
        state.fills.append(fill)
        state.filled += quantity
        state.updated_ns = ts_ns
        if state.filled == order.quantity:
            state.status = OrderStatus.FILLED
            del self._open[order.client_order_id]
        else:
            state.status = OrderStatus.PARTIALLY_FILLED
        self._fills.append(fill)
        signed = quantity if buy else -quantity
        self._positions[order.symbol] = self._positions.get(order.symbol, Decimal(0)) + signed
        self.fills += 1
        return fill

    def _settle(self, state: _State, now: int | None) -> list[VenueReport]:
        """Close an open order whose expiry or requested cancel `now` has reached."""
        if not state.open or now is None:
            return []
        due: list[tuple[int, OrderStatus, str]] = []
        if state.expires_ns is not None and state.expires_ns <= now:
            due.append((state.expires_ns, OrderStatus.EXPIRED, "end of day"))
        if state.cancel_ns is not None and state.cancel_ns <= now:
            due.append((state.cancel_ns, OrderStatus.CANCELED, "canceled"))
        if not due:
            return []
        at, status, reason = min(due, key=lambda d: d[0])
        # An order that reaches the venue after its day ended expires on arrival.
        return [self._close(state, status, max(at, state.active_ns), reason)]

    def _close(self, state: _State, status: OrderStatus, at_ns: int, reason: str) -> OrderEvent:
        state.status, state.reason, state.updated_ns = status, reason, at_ns
        self._open.pop(state.order.client_order_id, None)
        return self._event(state, status, at_ns, reason)

    def _event(
        self, state: _State, status: OrderStatus, at_ns: int, reason: str = ""
    ) -> OrderEvent:
        order = state.order
        at = order.timestamp if at_ns == state.order_ns else ns_to_datetime(at_ns)
        return OrderEvent(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            status=status,
            venue=self.name,
            timestamp=at,
            reason=reason,
        )

    async def _emit(self, reports: list[VenueReport]) -> None:
        if self._listener is not None:
            for report in reports:
                await self._listener(report)


# -- market data frames ----------------------------------------------------------------------
# Value columns of each kind, prices first, then sizes.
_VALUES = {
    EventType.BAR: ("open", "low", "high", "volume"),
    EventType.TRADE: ("price", "size"),
    EventType.QUOTE: ("ask", "bid", "ask_size", "bid_size"),
}
_N_PRICES = {EventType.BAR: 3, EventType.TRADE: 1, EventType.QUOTE: 2}
# Which value column is, for a buy then a sell: the taker's price, the price a resting order
# is filled through, and the depth there.
#   (take_buy, take_sell, touch_buy, touch_sell, depth_buy, depth_sell)
_COLS = {
    EventType.BAR: (0, 0, 1, 2, 3, 3),
    EventType.TRADE: (0, 0, 0, 0, 1, 1),
    EventType.QUOTE: (0, 1, 0, 1, 2, 3),
}


def _check_columns(kind: EventType, frame: pl.DataFrame) -> None:
    """Raise `DataError` if the frame lacks a column the kind needs (sizes are optional)."""
    names = _VALUES[kind]
    need = ("symbol", "timestamp", *names[: _N_PRICES[kind]])
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"paper venue: a {kind.topic_name} frame lacks column(s) {missing}")


@dataclass(slots=True, eq=False)
class _Found:
    """The rows [lo, hi) of one kind's series an open order has not seen and may trade on."""

    first_ns: int  # the time of row lo
    rank: int  # the kind's tie-break rank
    kind: EventType
    series: _Series
    lo: int
    hi: int

    def key(self) -> tuple[int, int]:
        return self.first_ns, self.rank


_Event = tuple[int, int, int, EventType, _Series, bool]  # time, rank, row, kind, series, taker


def _stream(found: _Found, rows: list[tuple[npt.NDArray[np.intp], bool]]) -> Iterator[_Event]:
    ts, rank, kind, series = found.series.ts, found.rank, found.kind, found.series
    for idx, taker in rows:
        for i in idx.tolist():
            yield int(ts[i]), rank, i, kind, series, taker
