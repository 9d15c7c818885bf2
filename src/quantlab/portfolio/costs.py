"""Cost attribution: what each fill cost against the price at the decision (implementation
shortfall, Perold 1988), split into parts that add up exactly, per fill, order, signal and
strategy.

For a fill of quantity q at price p on side s (+1 buy, -1 sell), with the decision mid m_d
and half-spread h_d (the signal's), and the arrival mid m_a (the first market price of the
symbol after the order was made, i.e. the first price the venue could trade at):

* ``delay    = s * q * (m_a - m_d)``   the market moved between decision and arrival;
* ``spread   = q * h_d``               the expected cost of crossing to the touch;
* ``slippage = s * q * (p - m_a) - spread``  what the fill cost beyond the expected crossing;
* ``fee``                              the venue's fee, in the quote currency (a fee in another
  currency is listed apart in ``fee_other`` and not added);
* ``total    = s * q * (p - m_d) + fee = delay + spread + slippage + fee`` (exactly, Decimal).

A positive figure is a cost, a negative one a gain. ``impact`` is a model estimate reported
beside them, not added: the square-root law, ``sigma * sqrt(q / v) * p * q`` with sigma the
standard deviation of the symbol's bar returns and v its mean bar volume over the last
`window` bars (None while fewer than 20 bars were seen, or without volumes). ``funding`` is 0
unless a venue reports funding payments (none of the bundled venues does).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from decimal import Decimal
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl

from quantlab.bus import topics
from quantlab.bus.base import Bus, Envelope
from quantlab.core.clock import datetime_to_ns
from quantlab.core.enums import EventType, Side
from quantlab.core.instruments import InstrumentBook, to_decimal
from quantlab.core.messages import Fill, MarketBatch, Order, Signal
from quantlab.portfolio.ports import PortfolioStore

_ZERO = Decimal(0)
_KEEP = 100_000  # decisions and orders remembered (a bounded map)
_HISTORY = 4096  # recent prices kept per symbol


def _ns(order: Order) -> int:
    return datetime_to_ns(order.timestamp)


def _non_decreasing(ts: npt.NDArray[Any]) -> bool:
    return len(ts) < 2 or bool((ts[1:] >= ts[:-1]).all())


def _epoch_ns(
    timestamps: pl.Series,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64] | None]:
    """The timestamps as int64 ns since the epoch, and with nulls (rare) also as floats with
    NaN for the nulls (what Polars' ``to_numpy`` gives), else None."""
    if isinstance(timestamps.dtype, pl.Datetime) and not timestamps.has_nulls():
        return timestamps.to_numpy().astype("datetime64[ns]", copy=False).view(np.int64), None
    epoch = timestamps.dt.epoch("ns")
    if not epoch.has_nulls():
        return epoch.to_numpy(), None
    return epoch.fill_null(0).to_numpy(), epoch.to_numpy()


def _by_symbol(symbols: list[Any]) -> list[tuple[Any, npt.NDArray[np.intp]]]:
    """The rows of each symbol (in order), the symbols in order of first appearance."""
    n = len(symbols)
    first = dict.fromkeys(symbols)
    if len(first) == 1:
        return [(symbols[0], np.arange(n))]
    code = {s: k for k, s in enumerate(first)}
    inverse = np.fromiter(map(code.__getitem__, symbols), np.intp, n)
    order = np.argsort(inverse, kind="stable")
    ends = np.cumsum(np.bincount(inverse, minlength=len(code))).tolist()
    starts = [0, *ends[:-1]]
    return [(s, order[i:j]) for s, i, j in zip(first, starts, ends, strict=True)]


class _Recent:
    """A symbol's recent market data (ts ns, prices), oldest first: after each batch, the
    last `_HISTORY` rows it held before and then the batch's rows (sorted by time if that
    breaks the order). Kept in arrays with spare room at the end, where a batch is written in
    place: a copy only when the room runs out, not one of the whole history per batch."""

    __slots__ = ("_prices", "_ts", "end", "ordered", "start")

    def __init__(self, ts: npt.NDArray[Any], prices: npt.NDArray[Any]) -> None:
        self._ts, self._prices = ts, prices
        self.start, self.end = 0, len(ts)
        self.ordered = False  # known to be in time order (not checked yet)

    @property
    def ts(self) -> npt.NDArray[Any]:
        return self._ts[self.start : self.end]

    @property
    def prices(self) -> npt.NDArray[Any]:
        return self._prices[self.start : self.end]

    def add(self, ts: npt.NDArray[Any], prices: npt.NDArray[Any]) -> None:
        start, end, n = max(self.start, self.end - _HISTORY), self.end, len(ts)
        # In order iff the kept part is (it is when the whole history is), it ends before
        # the batch starts and the batch is.
        ordered = (
            (self.ordered or _non_decreasing(self._ts[start:end]))
            and bool(self._ts[end - 1] <= ts[0])
            and _non_decreasing(ts)
        )
        if (
            ordered
            and end + n <= len(self._ts)
            and ts.dtype == self._ts.dtype  # else a copy, in the dtype both fit in
            and prices.dtype == self._prices.dtype
        ):
            self._ts[end : end + n] = ts
            self._prices[end : end + n] = prices
            self.start, self.end, self.ordered = start, end + n, True
            return
        all_ts = np.concatenate([self._ts[start:end], ts])
        all_prices = np.concatenate([self._prices[start:end], prices])
        if not ordered:  # kinds interleave
            order = np.argsort(all_ts, kind="stable")
            all_ts, all_prices = all_ts[order], all_prices[order]
        room = max(1024, 2 * n)
        self._ts, self._prices = _with_room(all_ts, room), _with_room(all_prices, room)
        self.start, self.end, self.ordered = 0, len(all_ts), ordered


def _with_room(values: npt.NDArray[Any], room: int) -> npt.NDArray[Any]:
    out = np.empty(len(values) + room, values.dtype)
    out[: len(values)] = values
    return out


class CostRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The cost of one fill, in its symbol's quote currency (see the module doc)."""

    fill_id: str
    client_order_id: str
    signal_id: str
    strategy_id: str
    symbol: str
    currency: str
    side: Side
    quantity: Decimal
    price: Decimal
    decision_mid: Decimal
    arrival_mid: Decimal
    delay: Decimal
    spread: Decimal
    slippage: Decimal
    fee: Decimal
    fee_other: Decimal
    fee_other_currency: str
    funding: Decimal
    total: Decimal
    impact: Decimal | None


class _Bounded(OrderedDict[str, Any]):
    def put(self, key: str, value: Any) -> None:
        self[key] = value
        if len(self) > _KEEP:
            self.popitem(last=False)


class CostEngine:
    """Attributes every fill's cost (a bus component: signals, orders, market data, fills)."""

    name = "costs"

    def __init__(
        self,
        instruments: InstrumentBook,
        *,
        window: int = 500,
        store: PortfolioStore | None = None,
    ) -> None:
        self.instruments = instruments
        self.store = store
        self.window = window
        self.records: list[CostRecord] = []
        self._decisions: _Bounded = _Bounded()  # signal_id -> (mid, half spread)
        self._orders: _Bounded = _Bounded()  # client_order_id -> Order
        self._arrival: _Bounded = _Bounded()  # client_order_id -> arrival mid
        self._waiting: dict[str, list[Order]] = {}  # symbol -> orders without an arrival yet
        self._last: dict[str, tuple[int, float]] = {}  # symbol -> (ts ns, price)
        self._returns: dict[str, deque[float]] = {}
        self._volumes: dict[str, deque[float]] = {}
        self._last_close: dict[str, float] = {}
        self._recorded: set[str] = set()
        # symbol -> (ts ns, price) of its recent market data, for orders made in the past
        self._history: dict[str, _Recent] = {}
        self.unattributed = 0
        self._bus: Bus | None = None

    async def start(self, bus: Bus) -> None:
        self._bus = bus
        bus.consume(topics.ALL_SIGNALS, self._on_signal, name=f"{self.name}.signals")
        bus.consume(topics.orders("approved"), self._on_order, name=f"{self.name}.orders")
        for kind in EventType:
            bus.consume(
                topics.market_data(kind), self._on_market, name=f"{self.name}.{kind.topic_name}"
            )
        bus.consume(topics.orders("filled"), self._on_fill, name=f"{self.name}.fills")

    async def stop(self) -> None:
        return None

    # -- inputs ----------------------------------------------------------------------------
    async def _on_signal(self, envelope: Envelope) -> None:
        signal: Signal = envelope.payload
        if signal.mid > 0:
            half = to_decimal(signal.spread) / 2 if signal.spread > 0 else _ZERO
            self._decisions.put(str(signal.signal_id), (to_decimal(signal.mid), half))

    async def _on_order(self, envelope: Envelope) -> None:
        order: Order = envelope.payload
        self._orders.put(order.client_order_id, order)
        # The data may have passed the order's time already (a backtest decides on a whole
        # batch): look in the recent history first, else wait for the next price.
        if not self._arrive(order):
            self._waiting.setdefault(order.symbol, []).append(order)

    def _arrive(self, order: Order) -> bool:
        """Record the order's arrival price: the first price of its symbol after it was made
        (in the recent history); False if none has been seen yet."""
        history = self._history.get(order.symbol)
        if history is None:
            return False
        ts, prices = history.ts, history.prices
        i = int(np.searchsorted(ts, _ns(order), side="right"))
        if i == len(ts):
            return False
        self._arrival.put(order.client_order_id, to_decimal(float(prices[i])))
        return True

    async def _on_market(self, envelope: Envelope) -> None:
        batch: MarketBatch = envelope.payload
        frame = batch.frame
        if frame.height == 0:
            return
        # A batch is often a few rows: the columns once as numpy (Series calls, a few µs),
        # no DataFrame query (each runs the lazy engine, a fixed ~100 µs or more).
        if batch.kind is EventType.QUOTE:
            p = (frame["bid"].to_numpy() + frame["ask"].to_numpy()) / 2
        elif batch.kind is EventType.TRADE:
            p = frame["price"].to_numpy()
        else:
            p = frame["open"].to_numpy()  # a bar: the first price the venue could trade
        ok = p > 0  # neither null (NaN in numpy) nor NaN nor <= 0
        everything_ok = bool(ok.all())
        ts, ts_nulls = _epoch_ns(frame["timestamp"])
        bars = batch.kind is EventType.BAR
        if bars:  # nulls are NaN here, skipped like any price or volume that is not > 0
            closes = frame["close"].cast(pl.Float64).to_numpy()
            volumes = frame["volume"].cast(pl.Float64).to_numpy()
        for symbol, rows in _by_symbol(frame["symbol"].to_list()):
            good = rows if everything_ok else rows[ok[rows]]
            if not len(good):
                continue
            sym = str(symbol)
            # with a null time (rare) the symbol's times are floats, as Polars gives them
            if ts_nulls is not None and bool(np.isnan(ts_nulls[rows]).any()):
                sym_ts = ts_nulls[good]
            else:
                sym_ts = ts[good]
            prices = p[good]
            self._remember(sym, sym_ts, prices)
            if self._waiting.get(sym):
                self._waiting[sym] = [o for o in self._waiting[sym] if not self._arrive(o)]
            if bars:
                self._bar_stats(sym, closes[rows], volumes[rows])
            self._last[sym] = (int(sym_ts[-1]), float(prices[-1]))

    def _remember(self, symbol: str, ts: npt.NDArray[Any], prices: npt.NDArray[Any]) -> None:
        recent = self._history.get(symbol)
        if recent is None:
            self._history[symbol] = _Recent(ts, prices)
        else:
            recent.add(ts, prices)

    def _bar_stats(
        self, symbol: str, closes: npt.NDArray[np.float64], volumes: npt.NDArray[np.float64]
    ) -> None:
        """Add a symbol's bars (in order) to its windows of close-to-close returns (between
        consecutive valid closes, across batches) and of their bars' volumes; a close that is
        not > 0 (or null, NaN here) skips its bar, a volume that is not > 0 only itself."""
        rets = self._returns.setdefault(symbol, deque(maxlen=self.window))
        vols = self._volumes.setdefault(symbol, deque(maxlen=self.window))
        with np.errstate(invalid="ignore"):
            valid = closes > 0
            c = closes[valid]
            v = volumes[valid & (volumes > 0)]
        if len(c):
            prev = self._last_close.get(symbol)
            seq = c if prev is None else np.concatenate(([prev], c))
            # only the newest `window` can stay in the deque
            rets.extend((seq[1:] / seq[:-1] - 1.0)[-self.window :].tolist())
            self._last_close[symbol] = float(c[-1])
        vols.extend(v[-self.window :].tolist())

    async def _on_fill(self, envelope: Envelope) -> None:
        fill: Fill = envelope.payload
        record = self.attribute(fill)
        if record is None:
            self.unattributed += 1
            return
        if record.fill_id in self._recorded:
            return  # a redelivered fill
        if self.store is not None:
            self.store.record_cost(record)  # first: a failure here leaves nothing counted
        self._recorded.add(record.fill_id)
        self.records.append(record)
        if self._bus is not None:
            await self._bus.publish(
                topics.portfolio("costs"), record, msg_id=f"cost:{fill.fill_id}"
            )

    # -- attribution -----------------------------------------------------------------------
    def attribute(self, fill: Fill) -> CostRecord | None:
        """The cost record of `fill`, or None when its order or decision is unknown here."""
        order = self._orders.get(fill.client_order_id)
        if order is None:
            return None
        decision = self._decisions.get(str(order.signal_id))
        if decision is None:
            return None
        decision_mid, half = decision
        arrival = self._arrival.get(fill.client_order_id)
        if arrival is None:  # filled before any later price was seen: the latest one
            last = self._last.get(fill.symbol)
            arrival = to_decimal(last[1]) if last else decision_mid
        s, q, p = fill.side.sign, fill.quantity, fill.price
        currency = self.instruments[fill.symbol].quote
        fee = fill.fee if fill.fee_currency in ("", currency) else _ZERO
        fee_other = _ZERO if fill.fee_currency in ("", currency) else fill.fee
        delay = s * q * (arrival - decision_mid)
        spread = q * half
        slippage = s * q * (p - arrival) - spread
        funding = _ZERO
        return CostRecord(
            fill_id=str(fill.fill_id),
            client_order_id=fill.client_order_id,
            signal_id=str(order.signal_id),
            strategy_id=order.strategy_id,
            symbol=fill.symbol,
            currency=currency,
            side=fill.side,
            quantity=q,
            price=p,
            decision_mid=decision_mid,
            arrival_mid=arrival,
            delay=delay,
            spread=spread,
            slippage=slippage,
            fee=fee,
            fee_other=fee_other,
            fee_other_currency="" if not fee_other else fill.fee_currency,
            funding=funding,
            total=delay + spread + slippage + fee + funding,
            impact=self._impact(fill.symbol, q, p),
        )

    def _impact(self, symbol: str, quantity: Decimal, price: Decimal) -> Decimal | None:
        rets, vols = self._returns.get(symbol), self._volumes.get(symbol)
        if not rets or len(rets) < 20 or not vols:
            return None
        r = np.fromiter(rets, np.float64, len(rets))  # one pass in C, not a Python sum
        sigma = float(r.std(ddof=1))
        volume = float(np.fromiter(vols, np.float64, len(vols)).mean())
        if not volume > 0:
            return None
        return to_decimal(sigma * math.sqrt(float(quantity) / volume)) * price * quantity

    # -- reports ---------------------------------------------------------------------------
    def frame(self) -> pl.DataFrame:
        """One row per fill (Decimal columns)."""
        dec = pl.Decimal(38, 18)
        schema: dict[str, Any] = {
            "fill_id": pl.String, "client_order_id": pl.String, "signal_id": pl.String,
            "strategy_id": pl.String, "symbol": pl.String, "currency": pl.String,
            "side": pl.String, "quantity": dec, "price": dec, "decision_mid": dec,
            "arrival_mid": dec, "delay": dec, "spread": dec, "slippage": dec, "fee": dec,
            "fee_other": dec, "fee_other_currency": pl.String, "funding": dec, "total": dec,
            "impact": dec,
        }  # fmt: skip
        rows = [
            {**msgspec.structs.asdict(r), "side": r.side.value, "impact": r.impact}
            for r in self.records
        ]
        return pl.DataFrame(rows, schema=schema)

    def by(self, level: str) -> pl.DataFrame:
        """Costs summed per ``fill``, ``order``, ``signal`` or ``strategy`` (and currency)."""
        key = {
            "fill": "fill_id",
            "order": "client_order_id",
            "signal": "signal_id",
            "strategy": "strategy_id",
        }.get(level)
        if key is None:
            raise ValueError(f"level must be fill, order, signal or strategy, got {level!r}")
        parts = ("delay", "spread", "slippage", "fee", "funding", "total", "impact")
        return (
            self.frame()
            .group_by(key, "currency", maintain_order=True)
            .agg(*(pl.col(c).sum() for c in parts), pl.len().alias("fills"))
        )

    def totals(self) -> dict[str, dict[str, Decimal]]:
        """Per currency: each kind of cost summed over every fill."""
        out: dict[str, dict[str, Decimal]] = {}
        for r in self.records:
            row = out.setdefault(
                r.currency,
                {k: _ZERO for k in ("delay", "spread", "slippage", "fee", "funding", "total")},
            )
            row["delay"] += r.delay
            row["spread"] += r.spread
            row["slippage"] += r.slippage
            row["fee"] += r.fee
            row["funding"] += r.funding
            row["total"] += r.total
        return out

    def stats(self) -> dict[str, Any]:
        return {"fills": len(self.records), "unattributed": self.unattributed}
