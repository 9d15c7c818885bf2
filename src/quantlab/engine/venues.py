"""Building venues from configuration (`[[execution.venues]]`), paper and live kept apart.

A run trades either on paper or for real, never both:

* ``paper`` (the default, and always in a backtest): every venue must be a paper endpoint
  (the simulator, Alpaca's paper API, Binance's testnet, a local fake), and credentials
  that belong to a live account are refused;
* ``live``: needs the explicit flag (``quantlab live --live-trading``); every venue must be
  a real-money endpoint with live credentials; the simulator is refused.

The order database is separate too: a live run keeps its book in
``<storage.state_dir>/live/``, a paper run in ``.../paper/``, and a database marked by one
mode refuses the other (`storage.sql.engine.claim_trading_mode`).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from quantlab.adapters.sim import PaperVenue
from quantlab.config import Settings, VenueConfig
from quantlab.core.errors import ConfigError
from quantlab.core.instruments import InstrumentBook
from quantlab.execution.ports import Venue

Trading = Literal["paper", "live"]


def build_venue(
    spec: VenueConfig, settings: Settings, instruments: InstrumentBook, trading: Trading
) -> Venue:
    """The venue adapter `spec.type` names, configured with the spec's other keys."""
    options: dict[str, Any] = dict(spec.model_extra or {})
    name = spec.name or spec.type
    where = f"execution.venues[{name}]"
    ex = settings.execution
    try:
        if spec.type == "paper":
            if trading == "live":
                raise ConfigError(where, "the paper venue cannot take part in a live-money run")
            from quantlab.adapters.sim.paper import PaperVenueConfig

            cfg = _convert(
                {
                    "maker_fee_bps": ex.maker_fee_bps,
                    "taker_fee_bps": ex.taker_fee_bps,
                    **options,
                },
                PaperVenueConfig,
                where,
            )
            return PaperVenue(instruments, config=cfg, name=name)
        if spec.type == "alpaca":
            return _alpaca(options, name, where, settings, trading)
        if spec.type == "ccxt":
            return _ccxt(options, name, where, settings, trading)
    except TypeError as exc:  # an unknown option: name it
        raise ConfigError(where, str(exc)) from exc
    except ConfigError as exc:  # an adapter's own key: say which venue it belongs to
        if exc.key.startswith(("execution.", "QUANTLAB_")):
            raise
        raise ConfigError(f"{where}.{exc.key.rsplit('.', 1)[-1]}", exc.reason) from None
    raise ConfigError(where, f"unknown venue type {spec.type!r}")


def _alpaca(
    options: dict[str, Any], name: str, where: str, settings: Settings, trading: Trading
) -> Venue:
    from quantlab.adapters.alpaca.trading import (
        AlpacaTradingConfig,
        AlpacaVenue,
        check_credentials,
    )

    key, secret = settings.secrets.alpaca_api_key, settings.secrets.alpaca_api_secret
    if key is None or secret is None:
        raise ConfigError(
            "QUANTLAB_ALPACA_API_KEY",
            "an alpaca venue needs QUANTLAB_ALPACA_API_KEY and QUANTLAB_ALPACA_API_SECRET",
        )
    cfg = _convert({"name": name, **options}, AlpacaTradingConfig, where)
    _check_mode(cfg.paper, trading, where)
    check_credentials(key.get_secret_value(), cfg.paper)
    return AlpacaVenue(cfg, key.get_secret_value(), secret.get_secret_value())


def _ccxt(
    options: dict[str, Any], name: str, where: str, settings: Settings, trading: Trading
) -> Venue:
    from quantlab.adapters.ccxt.trading import CcxtTradingConfig, CcxtVenue

    cfg = _convert({"name": name, **options}, CcxtTradingConfig, where)
    _check_mode(cfg.paper, trading, where)
    s = settings.secrets
    key, secret = {
        "binance": (s.binance_api_key, s.binance_api_secret),
        "coinbase": (s.coinbase_api_key, s.coinbase_api_secret),
    }.get(cfg.exchange, (None, None))
    if key is None or secret is None:
        upper = cfg.exchange.upper()
        raise ConfigError(
            f"QUANTLAB_{upper}_API_KEY",
            f"a {cfg.exchange} venue needs QUANTLAB_{upper}_API_KEY and "
            f"QUANTLAB_{upper}_API_SECRET",
        )
    return CcxtVenue(cfg, api_key=key.get_secret_value(), secret=secret.get_secret_value())


def _check_mode(paper: bool, trading: Trading, where: str) -> None:
    if trading == "paper" and not paper:
        raise ConfigError(
            where,
            "points at a live-money endpoint, but this is a paper run; set paper = true, or "
            "run `quantlab live --live-trading` to trade real money",
        )
    if trading == "live" and paper:
        raise ConfigError(
            where,
            "points at a paper endpoint, but this is a live-money run (--live-trading); "
            "configure the venue's live endpoint and live credentials",
        )


def _convert(options: dict[str, Any], cls: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(options, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(where, str(exc)) from None


def build_venues(
    settings: Settings, instruments: InstrumentBook, trading: Trading = "paper"
) -> list[Venue]:
    if trading not in ("paper", "live"):
        raise ConfigError("trading", f"must be 'paper' or 'live', got {trading!r}")
    return [build_venue(spec, settings, instruments, trading) for spec in settings.execution.venues]
