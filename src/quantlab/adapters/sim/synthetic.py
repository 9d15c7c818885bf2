"""`SyntheticSource`: seeded, deterministic market data for N symbols.

Prices follow geometric Brownian motion with Poisson jumps and volatility clustering (a
GARCH(1,1) variance updated once per chunk of events from the chunk's realised return). Each
event is a quote (bid/ask around the mid, spread in basis points) or a trade (at the bid or
the ask, with the aggressor side and a lognormal size); bars are aggregated from the trades
every `bar_interval_s`. Generation is vectorised per chunk with numpy.

With `rate` set, events are paced to that many per second of wall time (timestamps follow the
clock); with `rate=None` they are produced as fast as the consumer takes them, on a nominal
1,000 events/s time axis. The stream stops after `max_events` (None: never).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import polars as pl

from quantlab.core.clock import Clock, WallClock
from quantlab.core.enums import Aggressor, EventType
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import Events, Heartbeat, SourceItem, frame_from_columns

_NS = 1_000_000_000
_YEAR_S = 365 * 24 * 3600


class SyntheticSource:
    """A `MarketDataSource` of simulated quotes, trades and bars (the default live source)."""

    asset_class = "crypto"

    def __init__(
        self,
        symbols: int | list[str] = 10,
        *,
        seed: int = 7,
        rate: float | None = 1_000.0,
        max_events: int | None = None,
        chunk: int | None = None,
        trade_share: float = 0.3,
        spread_bps: float = 5.0,
        annual_vol: float = 0.8,
        jump_intensity: float = 50.0,
        jump_std: float = 0.01,
        bar_interval_s: float = 1.0,
        start_price: float = 100.0,
        clock: Clock | None = None,
        name: str = "synthetic",
    ) -> None:
        names = [f"SYN{i}/USD" for i in range(symbols)] if isinstance(symbols, int) else symbols
        if not names:
            raise ConfigError("synthetic.symbols", "need at least one symbol")
        if rate is not None and not rate > 0:
            raise ConfigError("synthetic.rate", f"must be > 0 events/s or None, got {rate}")
        if not 0 <= trade_share <= 1:
            raise ConfigError("synthetic.trade_share", f"must be in [0, 1], got {trade_share}")
        if chunk is None:  # paced: 10 ms of events per chunk; unpaced: 1,000
            chunk = max(1, int(rate * 0.01)) if rate is not None else 1_000
        if chunk < 1:
            raise ConfigError("synthetic.chunk", f"must be >= 1, got {chunk}")
        if bar_interval_s <= 0:
            raise ConfigError("synthetic.bar_interval_s", f"must be > 0, got {bar_interval_s}")
        self.name = name
        self.symbols = names
        self.rate = rate
        self.max_events = max_events
        self.total_rows = max_events
        self.chunk = chunk
        self.trade_share = trade_share
        self.half_spread = spread_bps / 2e4
        self.jump_intensity = jump_intensity
        self.jump_std = jump_std
        self.bar_ns = int(bar_interval_s * _NS)
        self.clock = clock or WallClock()
        self._rng = np.random.default_rng(seed)
        n = len(names)
        self._log_mid = np.log(start_price * np.exp(self._rng.normal(0, 0.5, n)))
        self._var = np.full(n, annual_vol**2 / _YEAR_S)  # per-second variance
        self._var_long = self._var.copy()
        self._t_ns: int | None = None
        self._produced = 0
        self._bar_open: dict[int, list[float]] = {}  # symbol -> [start_ns, o, h, l, c, v]

    async def stream(self) -> AsyncIterator[SourceItem]:
        if self._t_ns is None:
            self._t_ns = self.clock.now_ns()
        started_wall = time.monotonic()
        started_events = self._produced
        while self.max_events is None or self._produced < self.max_events:
            n = self.chunk
            if self.max_events is not None:
                n = min(n, self.max_events - self._produced)
            for item in self._generate(n):
                yield item
            if self.rate is not None:
                due = (self._produced - started_events) / self.rate
                lag = due - (time.monotonic() - started_wall)
                await asyncio.sleep(max(0.0, lag))
            else:
                await asyncio.sleep(0)
            yield Heartbeat(self.clock.now_ns())

    def _generate(self, n: int) -> list[SourceItem]:
        rng = self._rng
        k = len(self.symbols)
        assert self._t_ns is not None  # noqa: S101
        rate = self.rate or 1_000.0
        gaps = rng.exponential(_NS / rate, n).astype(np.int64) + 1
        ts = self._t_ns + np.cumsum(gaps)
        self._t_ns = int(ts[-1])
        sym = rng.integers(0, k, n)
        # per-event log returns: diffusion over the time since the symbol's previous event
        dt_s = np.full(n, 1.0 / rate * k)
        diffusion = rng.normal(0.0, 1.0, n) * np.sqrt(self._var[sym] * dt_s)
        jumps = (rng.random(n) < self.jump_intensity * dt_s / _YEAR_S * 365) * rng.normal(
            0.0, self.jump_std, n
        )
        steps = diffusion + jumps
        order = np.argsort(sym, kind="stable")
        cum = np.empty(n)
        sorted_steps = steps[order]
        sorted_sym = sym[order]
        boundaries = np.flatnonzero(np.diff(sorted_sym)) + 1
        starts = np.concatenate([[0], boundaries])
        running = np.cumsum(sorted_steps)
        offsets = np.repeat(running[starts] - sorted_steps[starts], np.diff(np.append(starts, n)))
        cum[order] = running - offsets
        log_mid = self._log_mid[sym] + cum
        mid = np.exp(log_mid)
        # GARCH(1,1) on each symbol's chunk return: volatility clusters across chunks
        chunk_ret = np.bincount(sym, weights=steps, minlength=k)
        counts = np.bincount(sym, minlength=k)
        for i in np.flatnonzero(counts):
            last = np.flatnonzero(sym == i)[-1]
            self._log_mid[i] = log_mid[last]
        per_s = np.maximum(counts * dt_s[0], 1e-9)
        self._var = 0.05 * self._var_long + 0.10 * chunk_ret**2 / per_s + 0.85 * self._var
        half = mid * self.half_spread * (1 + 0.5 * rng.random(n))
        bid, ask = mid - half, mid + half
        is_trade = rng.random(n) < self.trade_share
        buyer = rng.random(n) < 0.5
        size = rng.lognormal(0.0, 1.0, n)
        names = np.array(self.symbols, dtype=object)
        out: list[SourceItem] = []
        q = ~is_trade
        if q.any():
            out.append(
                Events(
                    EventType.QUOTE,
                    frame_from_columns(
                        EventType.QUOTE,
                        {
                            "symbol": names[sym[q]].tolist(),
                            "timestamp": ts[q].tolist(),
                            "bid": bid[q].tolist(),
                            "ask": ask[q].tolist(),
                            "bid_size": size[q].tolist(),
                            "ask_size": rng.lognormal(0.0, 1.0, int(q.sum())).tolist(),
                        },
                    ),
                )
            )
        if is_trade.any():
            t = is_trade
            price = np.where(buyer[t], ask[t], bid[t])
            first_id = self._produced
            ids = [f"{self.name}-{first_id + j}" for j in np.flatnonzero(t)]
            trades = frame_from_columns(
                EventType.TRADE,
                {
                    "symbol": names[sym[t]].tolist(),
                    "timestamp": ts[t].tolist(),
                    "price": price.tolist(),
                    "size": size[t].tolist(),
                    "aggressor": np.where(
                        buyer[t], int(Aggressor.BUYER), int(Aggressor.SELLER)
                    ).tolist(),
                    "trade_id": ids,
                },
            )
            out.append(Events(EventType.TRADE, trades))
            bars = self._bars(sym[t], ts[t], price, size[t], names)
            if bars is not None:
                out.append(Events(EventType.BAR, bars))
        self._produced += n
        return out

    def _bars(
        self,
        sym: np.ndarray,
        ts: np.ndarray,
        price: np.ndarray,
        size: np.ndarray,
        names: np.ndarray,
    ) -> pl.DataFrame | None:
        """Close the bars whose interval ended; keep the open ones for the next chunk."""
        closed: dict[str, list[object]] = {
            c: [] for c in ("symbol", "timestamp", "open", "high", "low", "close", "volume")
        }
        bucket = ts // self.bar_ns * self.bar_ns
        for i in np.unique(sym):
            sel = sym == i
            for b, p, v in zip(
                bucket[sel].tolist(), price[sel].tolist(), size[sel].tolist(), strict=True
            ):
                cur = self._bar_open.get(int(i))
                if cur is not None and b > cur[0]:
                    for col, val in zip(closed, [names[i], int(cur[0]), *cur[1:]], strict=True):
                        closed[col].append(val)
                    cur = None
                if cur is None:
                    self._bar_open[int(i)] = [b, p, p, p, p, v]
                else:
                    cur[2] = max(cur[2], p)
                    cur[3] = min(cur[3], p)
                    cur[4] = p
                    cur[5] += v
        if not closed["symbol"]:
            return None
        frame = frame_from_columns(EventType.BAR, closed)
        return frame.sort("timestamp", maintain_order=True)
