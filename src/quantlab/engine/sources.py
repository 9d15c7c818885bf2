"""Building market-data sources from configuration (`[[live.sources]]`), and the gap backfill
from the REST histories of those that have one (`live.backfill`)."""

from __future__ import annotations

from typing import Any

import msgspec

from quantlab.adapters.sim import ReplaySource, SyntheticSource
from quantlab.config import Settings, SourceConfig
from quantlab.core.clock import Clock
from quantlab.core.errors import ConfigError
from quantlab.ingest.backfill import BackfillConfig, Backfiller
from quantlab.ingest.ports import HistoricalBars, MarketDataSource


def build_source(spec: SourceConfig, settings: Settings, clock: Clock) -> MarketDataSource:
    """The adapter `spec.type` names, configured with the spec's other keys."""
    options: dict[str, Any] = dict(spec.model_extra or {})
    name = spec.name or spec.type
    where = f"live.sources[{spec.type}]"
    try:
        if spec.type == "synthetic":
            return SyntheticSource(name=name, clock=clock, **options)
        if spec.type == "replay":
            paths = options.pop("paths", list(settings.data.paths))
            return ReplaySource(paths, name=name, **options)
        if spec.type == "alpaca":
            from quantlab.adapters.alpaca import AlpacaDataConfig, AlpacaDataSource

            key, secret = settings.secrets.alpaca_api_key, settings.secrets.alpaca_api_secret
            if key is None or secret is None:
                raise ConfigError(
                    "QUANTLAB_ALPACA_API_KEY",
                    "an alpaca source needs QUANTLAB_ALPACA_API_KEY and QUANTLAB_ALPACA_API_SECRET",
                )
            cfg = _convert(options, AlpacaDataConfig, where)
            return AlpacaDataSource(
                cfg, key.get_secret_value(), secret.get_secret_value(), name=name
            )
        if spec.type == "coinbase":
            from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseDataSource

            return CoinbaseDataSource(
                _convert({"name": name, **options}, CoinbaseDataConfig, where)
            )
        if spec.type == "polygon":
            from quantlab.adapters.polygon import PolygonDataConfig, PolygonDataSource

            key = settings.secrets.polygon_api_key
            if key is None:
                raise ConfigError("QUANTLAB_POLYGON_API_KEY", "a polygon source needs an API key")
            cfg = _convert({"name": name, **options}, PolygonDataConfig, where)
            return PolygonDataSource(cfg, api_key=key)
        if spec.type == "news":
            from quantlab.adapters.news import NewsDataConfig, NewsSource

            cfg = _convert({"name": name, **options}, NewsDataConfig, where)
            key, secret = {
                "alpaca": (settings.secrets.alpaca_api_key, settings.secrets.alpaca_api_secret),
                "polygon": (settings.secrets.polygon_api_key, None),
            }.get(cfg.shape, (None, None))
            return NewsSource(cfg, api_key=key, api_secret=secret, clock=clock)
        if spec.type == "ccxt":
            from quantlab.adapters.ccxt import CcxtDataConfig, CcxtDataSource

            cfg = _convert({"name": name, **options}, CcxtDataConfig, where)
            secrets = settings.secrets
            pairs = {
                "binance": (secrets.binance_api_key, secrets.binance_api_secret),
                "coinbase": (secrets.coinbase_api_key, secrets.coinbase_api_secret),
            }
            key, secret = pairs.get(cfg.exchange, (None, None))
            credentials = (
                {"apiKey": key, "secret": secret}
                if key is not None and secret is not None
                else None
            )
            return CcxtDataSource(cfg, credentials=credentials, clock=clock)
    except TypeError as exc:  # an unknown option: name it
        raise ConfigError(where, str(exc)) from exc
    raise ConfigError(where, f"unknown source type {spec.type!r}")


def _convert(options: dict[str, Any], cls: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(options, cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(where, str(exc)) from None


def build_sources(settings: Settings, clock: Clock) -> list[MarketDataSource]:
    sources = [build_source(spec, settings, clock) for spec in settings.live.sources]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("live.sources", f"source names must be unique, got {names}")
    return sources


def build_history(spec: SourceConfig, settings: Settings) -> HistoricalBars | None:
    """The REST history of the venue `spec` streams from (Alpaca, Polygon, Coinbase, ccxt), on
    the same configuration and credentials; None for sources without one."""
    options: dict[str, Any] = dict(spec.model_extra or {})
    name = spec.name or spec.type
    where = f"live.sources[{spec.type}]"
    secrets = settings.secrets
    if spec.type == "alpaca":
        from quantlab.adapters.alpaca import AlpacaDataConfig, AlpacaHistoricalBars

        key, secret = secrets.alpaca_api_key, secrets.alpaca_api_secret
        return AlpacaHistoricalBars(
            _convert(options, AlpacaDataConfig, where),
            None if key is None else key.get_secret_value(),
            None if secret is None else secret.get_secret_value(),
        )
    if spec.type == "coinbase":
        from quantlab.adapters.coinbase import CoinbaseDataConfig, CoinbaseHistoricalBars

        return CoinbaseHistoricalBars(
            _convert({"name": name, **options}, CoinbaseDataConfig, where)
        )
    if spec.type == "polygon":
        from quantlab.adapters.polygon import PolygonDataConfig, PolygonHistoricalBars

        if secrets.polygon_api_key is None:
            raise ConfigError("QUANTLAB_POLYGON_API_KEY", "a polygon source needs an API key")
        cfg = _convert({"name": name, **options}, PolygonDataConfig, where)
        return PolygonHistoricalBars(cfg, api_key=secrets.polygon_api_key)
    if spec.type == "ccxt":
        from quantlab.adapters.ccxt import CcxtDataConfig, CcxtHistoricalBars

        cfg = _convert({"name": name, **options}, CcxtDataConfig, where)
        pairs = {
            "binance": (secrets.binance_api_key, secrets.binance_api_secret),
            "coinbase": (secrets.coinbase_api_key, secrets.coinbase_api_secret),
        }
        key, secret = pairs.get(cfg.exchange, (None, None))
        credentials = (
            {"apiKey": key, "secret": secret} if key is not None and secret is not None else None
        )
        return CcxtHistoricalBars(cfg, credentials=credentials)
    return None


def build_backfill(settings: Settings) -> Backfiller | None:
    """The gap backfill of the configured sources (`ingest.backfill`): on with
    ``live.backfill`` for every source that has a REST history and has not opted out
    (``backfill = false``); None when no source is backfilled."""
    if not settings.live.backfill:
        return None
    histories: dict[str, HistoricalBars] = {}
    for spec in settings.live.sources:
        history = build_history(spec, settings) if spec.backfill else None
        if history is not None:
            histories[spec.name or spec.type] = history
    if not histories:
        return None
    return Backfiller(histories, BackfillConfig(timeframe=settings.live.backfill_timeframe))
