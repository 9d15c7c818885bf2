"""Building ccxt exchanges for quantlab: URLs, markets, options, and a guard on every frame.

Why the guard: what ccxt 4.5.90 does with bad frames on its own (measured against the fakes):

* invalid JSON, truncated JSON, invalid UTF-8, or a field its handler chokes on (a price of
  ``"abc"``, a JSON array where an object was expected): the exception escapes an asyncio
  callback of ccxt's receive loop, asyncio only logs it, and the loop is never rescheduled.
  The socket stalls silently until ccxt's keep-alive notices (6 minutes on binance).
* text that does not start with ``{`` or ``[`` (``hello``, ``42``): handed to the venue's
  handler as a string and dropped silently.
* frames of 1-10 MiB: parsed as usual. Over 10 MiB: aiohttp refuses the frame (close code
  1009) and the connection closes; every pending watch raises ``NetworkError``.
* a wrong-typed field read through ccxt's ``safe_*`` helpers (a price that is an object, a
  time that is a word) becomes None in the unified structure; unknown symbols and unknown
  event types are filed away or ignored silently.

The guard wraps each client's frame handler, so that

* oversized frames and text frames ccxt would not decode are rejected before ccxt sees them
  (`parser.check_frame`);
* any exception ccxt raises on a frame becomes a `Reject` (`parser.handler_error`) and the
  receive loop goes on;
* a frame ccxt's client refuses as too big (over 10 MiB; it then closes the connection) is
  counted as ``oversized_frame`` before the disconnect surfaces;
* server pings and the venue's heartbeat messages become `Heartbeat`s.

This hooks two ccxt internals, `Exchange.client(url)` and `Client.handle_message(message)`
(ccxt 4.5); the integration tests drive the real library, so a change there fails them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import ccxt.async_support as ccxt_rest
import ccxt.pro as ccxt_pro
from pydantic import SecretStr

from quantlab.adapters.ccxt.config import CcxtDataConfig
from quantlab.adapters.ccxt.parser import check_frame, handler_error, transport_error
from quantlab.core.clock import Clock, WallClock
from quantlab.core.errors import ConfigError
from quantlab.ingest.items import MAX_FRAME_BYTES, Heartbeat, SourceItem

log = logging.getLogger(__name__)

Sink = Callable[[SourceItem], None]

# ccxt options set per venue before the user's own, each for a reason.
VENUE_OPTIONS: Final[Mapping[str, Mapping[str, Any]]] = {
    # binance's watch_ticker follows the miniTicker stream by default, which has no bid/ask;
    # the 24h ticker stream carries best bid/ask and their quantities.
    "binance": {"watchTickers": {"name": "ticker"}},
}
# Decoded venue messages that are heartbeats: exchange id -> (key, value).
HEARTBEAT_MESSAGES: Final[Mapping[str, tuple[str, str]]] = {"coinbase": ("channel", "heartbeats")}
# What ccxt accepts as credentials in its constructor.
CREDENTIAL_KEYS: Final = frozenset(
    {"apiKey", "secret", "password", "uid", "login", "privateKey", "walletAddress", "token"}
)
_FRAME_TYPES: Final = frozenset({"TEXT", "BINARY"})


class _FrameGuard:
    """Mixin put first in the bases of a ccxt.pro exchange class (see the module doc)."""

    ql_sink: Sink | None = None
    ql_clock: Clock = WallClock()
    ql_max_frame_bytes: int = MAX_FRAME_BYTES
    ql_json_only: bool = True

    def client(self, url: str) -> Any:
        client = super().client(url)  # type: ignore[misc]
        if not getattr(client, "ql_guarded", False):
            client.handle_message = _guard(self, client, client.handle_message)
            client.ql_guarded = True
        return client

    def handle_message(self, client: Any, message: Any) -> Any:
        marker = HEARTBEAT_MESSAGES.get(getattr(self, "id", ""))
        if marker is not None and isinstance(message, dict) and message.get(marker[0]) == marker[1]:
            self.ql_emit(Heartbeat(self.ql_clock.now_ns()))
        return super().handle_message(client, message)  # type: ignore[misc]

    def ql_emit(self, item: SourceItem) -> None:
        if self.ql_sink is not None:
            self.ql_sink(item)


def _guard(
    exchange: _FrameGuard, client: Any, handle: Callable[[Any], None]
) -> Callable[[Any], None]:
    def handle_frame(message: Any) -> None:
        kind = getattr(getattr(message, "type", None), "name", "")
        data = getattr(message, "data", None)
        raw = data if isinstance(data, str | bytes) else b""
        try:
            if kind == "PING":
                exchange.ql_emit(Heartbeat(exchange.ql_clock.now_ns()))
            elif kind == "ERROR":
                lost = transport_error(data)
                if lost is not None:
                    exchange.ql_emit(lost)
            elif kind in _FRAME_TYPES and not (client.gunzip or client.inflate):
                rejected = check_frame(
                    raw, max_bytes=exchange.ql_max_frame_bytes, json_only=exchange.ql_json_only
                )
                if rejected is not None:
                    exchange.ql_emit(rejected)
                    return
        except Exception:  # the guard itself must never stop the receive loop
            log.exception("ccxt frame guard failed on a %s frame", kind)
        try:
            handle(message)
        except Exception as exc:
            exchange.ql_emit(handler_error(exc, raw))

    return handle_frame


@functools.cache
def guarded_class(exchange_id: str) -> type[Any]:
    """The ``ccxt.pro`` class of `exchange_id` with the frame guard mixed in."""
    base = getattr(ccxt_pro, exchange_id, None)
    if not isinstance(base, type) or exchange_id not in ccxt_pro.exchanges:
        raise ConfigError("ccxt.exchange", f"{exchange_id!r} is not a ccxt.pro exchange")
    return type(f"Guarded{exchange_id}", (_FrameGuard, base), {})


def rest_class(exchange_id: str) -> type[Any]:
    """The ``ccxt.async_support`` (REST only) class of `exchange_id`."""
    cls = getattr(ccxt_rest, exchange_id, None)
    if not isinstance(cls, type) or exchange_id not in ccxt_rest.exchanges:
        raise ConfigError("ccxt.exchange", f"{exchange_id!r} is not a ccxt exchange")
    return cls


def new_exchange(
    config: CcxtDataConfig,
    *,
    live: bool,
    credentials: Mapping[str, SecretStr] | None = None,
    enable_rate_limit: bool = True,
) -> Any:
    """A configured ccxt exchange: ``ccxt.pro`` with the guard if `live`, else REST only.

    Markets are seeded from `config.markets` when given; otherwise the caller runs
    ``await exchange.load_markets()``. The caller must ``await exchange.close()``.
    """
    cls = guarded_class(config.exchange) if live else rest_class(config.exchange)
    settings: dict[str, Any] = {
        "enableRateLimit": enable_rate_limit,
        "timeout": int(config.timeout_s * 1000),
        "options": _merge(dict(VENUE_OPTIONS.get(config.exchange, {})), config.options),
    }
    for key, secret in (credentials or {}).items():
        settings[key] = secret.get_secret_value()
    exchange = cls(settings)
    if config.sandbox:
        if "test" not in exchange.urls:
            raise ConfigError("ccxt.sandbox", f"{config.exchange} has no sandbox in ccxt")
        exchange.set_sandbox_mode(True)
    if config.rest_url is not None or config.ws_url is not None:
        exchange.urls["api"] = rewrite_urls(
            exchange.urls["api"], rest=config.rest_url, ws=config.ws_url
        )
    if config.markets:
        exchange.set_markets([_market(exchange, m.symbol, m.id, m.type) for m in config.markets])
    if live:
        exchange.ql_max_frame_bytes = config.max_frame_bytes
        exchange.ql_json_only = config.json_only
    return exchange


async def close_exchange(exchange: Any, timeout_s: float) -> None:
    """Close every websocket of `exchange`, each within `timeout_s`, then its HTTP session.

    A graceful websocket close waits for the server's close frame (aiohttp: up to 10 s),
    which a stalled venue never sends; cancelling aiohttp's close aborts the connection.
    """
    clients = list((getattr(exchange, "clients", None) or {}).values())
    await asyncio.gather(
        *(asyncio.wait_for(client.close(), timeout_s) for client in clients),
        return_exceptions=True,
    )
    await exchange.close()


def check_credentials(credentials: Mapping[str, str | SecretStr] | None) -> dict[str, SecretStr]:
    """Credentials as `SecretStr`s (their repr never shows them), keys checked."""
    out: dict[str, SecretStr] = {}
    for key, value in (credentials or {}).items():
        if key not in CREDENTIAL_KEYS:
            raise ConfigError(
                "ccxt.credentials", f"unknown key {key!r}; ccxt takes {sorted(CREDENTIAL_KEYS)}"
            )
        out[key] = value if isinstance(value, SecretStr) else SecretStr(value)
    return out


def rewrite_urls(urls: Any, *, rest: str | None, ws: str | None) -> Any:
    """`urls` with the scheme and host of every https:// (`rest`) or wss:// (`ws`) URL replaced.

    Paths are kept, so ``wss://stream.binance.com:9443/ws`` becomes ``<ws>/ws``.
    """
    if isinstance(urls, dict):
        return {key: rewrite_urls(value, rest=rest, ws=ws) for key, value in urls.items()}
    if isinstance(urls, str):
        if rest is not None and urls.startswith(("https://", "http://")):
            return re.sub(r"^https?://[^/]+", rest.rstrip("/"), urls)
        if ws is not None and urls.startswith(("wss://", "ws://")):
            return re.sub(r"^wss?://[^/]+", ws.rstrip("/"), urls)
    return urls


def _market(exchange: Any, symbol: str, market_id: str, kind: str) -> Any:
    base, rest = symbol.split("/", 1)
    quote, _, settle = rest.partition(":")
    return exchange.safe_market_structure(
        {
            "id": market_id,
            "lowercaseId": market_id.lower(),
            "symbol": symbol,
            "base": base,
            "quote": quote,
            "settle": settle or None,
            "baseId": base,
            "quoteId": quote,
            "type": kind,
            "spot": kind == "spot",
            "swap": kind == "swap",
            "future": kind == "future",
            "option": kind == "option",
            "contract": kind != "spot",
            "active": True,
            "precision": {"amount": 1e-8, "price": 1e-8},
        }
    )


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base
