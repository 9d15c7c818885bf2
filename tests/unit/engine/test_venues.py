"""Paper and live trading are kept apart: endpoints, credentials and databases."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from quantlab.adapters.alpaca.trading import AlpacaVenue
from quantlab.adapters.sim.paper import PaperVenue
from quantlab.config import load_settings
from quantlab.core.errors import ConfigError, QuantlabError
from quantlab.core.instruments import InstrumentBook
from quantlab.engine import Node
from quantlab.engine.venues import build_venues

BOOK = InstrumentBook(Decimal("0.01"), Decimal("0.0001"))


def settings_with(monkeypatch: pytest.MonkeyPatch, key: str, **venue: object) -> object:
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", key)
    monkeypatch.setenv("QUANTLAB_ALPACA_API_SECRET", "s3cret-value")
    return load_settings(
        execution={
            "venues": [{"type": "paper"}, {"type": "alpaca", **venue}],
            "routes": {"AAPL": "alpaca"},
        }
    )


def test_a_paper_run_builds_the_simulator_and_alpacas_paper_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "PKTESTKEY", url="http://127.0.0.1:1")
    paper, alpaca = build_venues(settings, BOOK, "paper")  # type: ignore[arg-type]
    assert isinstance(paper, PaperVenue)
    assert isinstance(alpaca, AlpacaVenue)
    assert (paper.paper, alpaca.paper) == (True, True)


def test_a_paper_run_refuses_a_live_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_with(monkeypatch, "AKLIVEKEY", paper=False, live=True)
    with pytest.raises(ConfigError, match=r"execution.venues\[alpaca\].*live-money endpoint"):
        build_venues(settings, BOOK, "paper")  # type: ignore[arg-type]


def test_paper_configuration_with_live_credentials_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "AKLIVEKEY")
    with pytest.raises(ConfigError, match=r"live key id \(AK\.\.\.\) with a paper configuration"):
        build_venues(settings, BOOK, "paper")  # type: ignore[arg-type]


def test_a_live_run_refuses_paper_endpoints_and_paper_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_with(monkeypatch, "PKTESTKEY")
    with pytest.raises(ConfigError, match=r"paper venue cannot take part in a live-money run"):
        build_venues(settings, BOOK, "live")  # type: ignore[arg-type]
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", "PKTESTKEY")
    live_only = load_settings(
        execution={"venues": [{"type": "alpaca", "paper": False, "live": True}], "venue": "alpaca"}
    )
    with pytest.raises(ConfigError, match=r"paper key id \(PK\.\.\.\) with a live configuration"):
        build_venues(live_only, BOOK, "live")
    paper_alpaca = load_settings(execution={"venues": [{"type": "alpaca"}], "venue": "alpaca"})
    with pytest.raises(ConfigError, match=r"points at a paper endpoint, but this is a live-money"):
        build_venues(paper_alpaca, BOOK, "live")


def test_a_venue_without_credentials_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANTLAB_BINANCE_API_KEY", raising=False)
    settings = load_settings(
        execution={
            "venues": [
                {"type": "paper"},
                {"type": "ccxt", "exchange": "binance", "symbols": ["BTC/USDT"]},
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"QUANTLAB_BINANCE_API_KEY"):
        build_venues(settings, BOOK, "paper")


def test_unknown_venue_options_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(execution={"venues": [{"type": "paper", "latency": 5}]})
    with pytest.raises(ConfigError, match=r"execution.venues\[paper\].*latency"):
        build_venues(settings, BOOK, "paper")


def test_a_bad_venue_value_names_the_venue_and_the_key() -> None:
    settings = load_settings(execution={"venues": [{"type": "paper", "participation": 2.0}]})
    with pytest.raises(ConfigError, match=r"execution.venues\[paper\].participation"):
        build_venues(settings, BOOK, "paper")


def test_routes_and_the_default_venue_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"route AAPL -> 'alpaca': no such venue"):
        load_settings(execution={"routes": {"AAPL": "alpaca"}})
    with pytest.raises(ConfigError, match=r"default venue 'binance' is not among"):
        load_settings(execution={"venue": "binance"})


def test_a_backtest_cannot_trade_live_money(tmp_path: Path) -> None:
    with pytest.raises(QuantlabError, match=r"live-money trading needs mode='live'"):
        Node(load_settings(), trading="live", run_dir=tmp_path)


def test_live_runs_keep_their_book_per_trading_mode(tmp_path: Path) -> None:
    settings = load_settings(storage={"state_dir": str(tmp_path / "state")})
    node = Node(settings, mode="live", run_dir=tmp_path / "run")
    assert node.db_url == f"sqlite:///{tmp_path / 'state' / 'paper' / 'quantlab.db'}"
    backtest = Node(settings, run_dir=tmp_path / "bt")
    assert backtest.db_url == f"sqlite:///{tmp_path / 'bt' / 'quantlab.db'}"
