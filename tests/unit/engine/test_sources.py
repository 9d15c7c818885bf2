"""Every market-data source is built from `[[live.sources]]`; bad entries fail at start."""

from __future__ import annotations

import pytest

from quantlab.config import load_settings
from quantlab.core.clock import WallClock
from quantlab.core.errors import ConfigError
from quantlab.engine.sources import build_sources
from quantlab.ingest.ports import MarketDataSource


def test_every_source_type_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", "AK-test")
    monkeypatch.setenv("QUANTLAB_ALPACA_API_SECRET", "SK-test")
    monkeypatch.setenv("QUANTLAB_POLYGON_API_KEY", "PK-test")
    settings = load_settings(
        live={
            "sources": [
                {"type": "synthetic", "symbols": 3},
                {"type": "replay", "paths": ["bundled:binance_btcusdt_trades_2021-01-08.parquet"]},
                {"type": "alpaca", "symbols": ["AAPL"]},
                {"type": "coinbase", "symbols": ["BTC/USD"]},
                {"type": "ccxt", "exchange": "binance", "symbols": ["BTC/USDT"]},
                {"type": "polygon", "symbols": ["AAPL"]},
                {"type": "news", "url": "http://127.0.0.1:9/v1beta1/news", "symbols": ["AAPL"]},
            ]
        }
    )
    sources = build_sources(settings, WallClock())
    assert [type(s).__name__ for s in sources] == [
        "SyntheticSource",
        "ReplaySource",
        "AlpacaDataSource",
        "CoinbaseDataSource",
        "CcxtDataSource",
        "PolygonDataSource",
        "NewsSource",
    ]
    assert all(isinstance(s, MarketDataSource) for s in sources)
    assert len({s.name for s in sources}) == len(sources)


def test_the_default_is_one_synthetic_source() -> None:
    sources = build_sources(load_settings(), WallClock())
    assert [type(s).__name__ for s in sources] == ["SyntheticSource"]


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"type": "alpaca", "symbols": ["AAPL"]}, "QUANTLAB_ALPACA_API_KEY", "needs"),
        ({"type": "polygon", "symbols": ["AAPL"]}, "QUANTLAB_POLYGON_API_KEY", "API key"),
        (
            {"type": "coinbase", "symbols": ["BTC/USD"], "bogus": 1},
            "live.sources[coinbase]",
            "bogus",
        ),
        ({"type": "synthetic", "colour": "red"}, "live.sources[synthetic]", "colour"),
        ({"type": "synthetic", "rate": -5}, "synthetic.rate", "-5"),
    ],
)
def test_bad_source_entries_name_the_key(spec: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_sources(load_settings(live={"sources": [spec]}), WallClock())
    assert info.value.key == key
    assert words in str(info.value)


def test_unknown_source_type_is_refused_by_the_settings() -> None:
    with pytest.raises(ConfigError, match=r"live\.sources\.0\.type"):
        load_settings(live={"sources": [{"type": "bloomberg"}]})


def test_duplicate_source_names_are_refused() -> None:
    settings = load_settings(live={"sources": [{"type": "synthetic"}, {"type": "synthetic"}]})
    with pytest.raises(ConfigError, match="unique"):
        build_sources(settings, WallClock())
