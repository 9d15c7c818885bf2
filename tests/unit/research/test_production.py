"""Production-run parameters: every bad value is refused with its name."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from quantlab.research.production import (
    ParameterError,
    production_settings,
    validate_parameters,
)


def test_defaults_are_a_backtest_of_the_configured_data() -> None:
    p = validate_parameters()
    assert p.mode == "backtest"
    assert p.symbols is None
    assert p.start is None
    assert p.run_id is None


def test_values_are_normalised() -> None:
    p = validate_parameters(
        symbols=" ETH/BTC , LTC/BTC",
        start="2018-01-10",
        end=dt.date(2018, 1, 20),
        data="bundled:a.parquet,bundled:b.parquet",
        duration_s=5,
        strategy="ema_cross",
    )
    assert p.symbols == ["ETH/BTC", "LTC/BTC"]
    assert p.start == dt.datetime(2018, 1, 10, tzinfo=dt.UTC)
    assert p.end == dt.datetime(2018, 1, 20, tzinfo=dt.UTC)
    assert p.data == ["bundled:a.parquet", "bundled:b.parquet"]
    assert p.duration_s == 5.0
    assert p.as_dict()["start"] == "2018-01-10T00:00:00+00:00"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "live"}, "parameter 'mode' must be one of backtest, replay, paper; got 'live'"),
        ({"strategy": "momentum"}, "parameter 'strategy' must be one of ema_cross, hedge"),
        ({"start": "yesterday"}, "parameter 'start': 'yesterday' is not an ISO date"),
        ({"end": 20180101}, "parameter 'end': expected an ISO date string, got int"),
        ({"start": "2018-01-05", "end": "2018-01-05"}, "must be before 'end'"),
        ({"symbols": ["ETH/BTC", ""]}, "parameter 'symbols': every item must be a non-empty"),
        ({"symbols": 3}, "parameter 'symbols': expected a list of strings"),
        ({"run_id": "../../etc"}, "parameter 'run_id' must be 1-64 letters"),
        ({"run_id": "x" * 65}, "parameter 'run_id' must be 1-64 letters"),
        ({"duration_s": -1}, "parameter 'duration_s' must be > 0"),
        ({"duration_s": "10"}, "parameter 'duration_s' must be a number"),
        ({"mode": "paper"}, "mode 'paper' runs on the wall clock: set 'duration_s'"),
        ({"config": "no/such.toml"}, "parameter 'config': no such file 'no/such.toml'"),
        ({"lookback": 3}, "unknown parameter(s) lookback"),
    ],
)
def test_bad_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        validate_parameters(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_parameters_override_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "q.toml"
    cfg.write_text('[data]\nsymbols = ["XRP/BTC"]\n[strategy]\nname = "hedge"\n')
    s = production_settings(validate_parameters(config=str(cfg)))
    assert s.data.symbols == ["XRP/BTC"]
    s = production_settings(
        validate_parameters(config=str(cfg), symbols="ETH/BTC", strategy="ema_cross")
    )
    assert s.data.symbols == ["ETH/BTC"]
    assert s.strategy.name == "ema_cross"


def test_replay_mode_replays_the_data_through_the_live_sources() -> None:
    p = validate_parameters(
        mode="replay", data="bundled:x.parquet", symbols="ETH/BTC", start="2018-01-10"
    )
    s = production_settings(p)
    (source,) = s.live.sources
    assert source.type == "replay"
    extra = source.model_extra or {}
    assert extra["paths"] == ["bundled:x.parquet"]
    assert extra["symbols"] == ["ETH/BTC"]
    assert extra["start"].startswith("2018-01-10")
