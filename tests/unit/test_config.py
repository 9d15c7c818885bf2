"""Configuration: file + environment, clear errors naming the key, secrets masked everywhere."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from quantlab.config import SecretMaskingFilter, load_settings
from quantlab.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "quantlab.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.ingest.batch_size == 1000
    assert s.data.paths == ["bundled:binance_btc_pairs_5m_2018-01.parquet"]


def test_file_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[risk]\nmax_position_notional = 3\nmax_order_notional = 4\n")
    assert load_settings(path).risk.max_position_notional == Decimal(3)
    monkeypatch.setenv("QUANTLAB_RISK__MAX_POSITION_NOTIONAL", "5")
    s = load_settings(path)
    assert s.risk.max_position_notional == Decimal(5)
    assert s.risk.max_order_notional == Decimal(4)  # the file's value survives
    s = load_settings(path, risk={"max_position_notional": 7})
    assert s.risk.max_position_notional == Decimal(7)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[ingest]\nbatch_size = 0\n", "ingest.batch_size", "greater than or equal to 1"),
        ("[ingest]\nbatch_size = 'lots'\n", "ingest.batch_size", "'lots'"),
        ("[risk]\nmax_position_notional = -1\n", "risk.max_position_notional", "-1"),
        ("[features]\nfast = 30\nslow = 10\n", "features", "fast (30) must be smaller"),
        ("[ingest]\nbatchsize = 10\n", "ingest.batchsize", "Extra inputs"),
        ("[nonsense]\nx = 1\n", "nonsense", "Extra inputs"),
        ("[execution]\ntime_in_force = 'fok'\n", "execution.time_in_force", "'fok'"),
        ("[bus]\nbackend = 'kafka'\n", "bus.backend", "'kafka'"),
        ("[bus]\nurl = 'redis://:pw@10.0.0.5:6379/0'\n", "bus.url", "QUANTLAB_REDIS_PASSWORD"),
        ("[bus]\nurl = 'http://10.0.0.5'\n", "bus.url", "rediss?://"),
        ("[runs]\ndask_scheduler = '10.0.0.5:8786'\n", "runs.dask_scheduler", "tcp"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key
    assert words in str(info.value)


def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUANTLAB_INGEST__BATCH_SIZE", "-5")
    with pytest.raises(ConfigError, match=r"ingest\.batch_size"):
        load_settings()


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[risk\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_are_refused_in_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment") as info:
        load_settings(write(tmp_path, "[execution]\nalpaca_api_key = 'AKXXXX'\n"))
    assert info.value.key == "execution.alpaca_api_key"
    with pytest.raises(ConfigError, match="environment"):
        load_settings(write(tmp_path, "[secrets]\nfoo = 'bar'\n"))


def test_secrets_from_env_are_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    canary = "CANARY-sk-1234567890abcdef"
    monkeypatch.setenv("QUANTLAB_ALPACA_API_KEY", canary)
    s = load_settings()
    assert s.secrets.alpaca_api_key is not None
    assert s.secrets.alpaca_api_key.get_secret_value() == canary
    for text in (repr(s), str(s), str(s.masked()), s.model_dump_json(), repr(s.secrets)):
        assert canary not in text
    assert s.masked()["secrets"]["alpaca_api_key"] == "**********"
    assert s.masked()["secrets"]["polygon_api_key"] is None


def test_log_filter_masks_secrets(caplog: pytest.LogCaptureFixture) -> None:
    canary = "CANARY-secret-value"
    logger = logging.getLogger("quantlab.test.secrets")
    logger.addFilter(SecretMaskingFilter([canary]))
    with caplog.at_level(logging.INFO, logger="quantlab.test.secrets"):
        logger.info("connecting with key %s to %s", canary, "venue")
    assert canary not in caplog.text
    assert "connecting with key *** to venue" in caplog.text


def test_pattern_storage_must_fit_the_hedge_horizon() -> None:
    with pytest.raises(ConfigError, match=r"patterns.store_every \(4\) must divide"):
        load_settings(strategy={"horizon": 6})
    assert load_settings(strategy={"horizon": 6}, patterns={"store_every": 2}).patterns
    assert load_settings(strategy={"horizon": 6, "experts": ["macd_cross"]}).strategy
    with pytest.raises(ConfigError, match="unknown experts"):
        load_settings(strategy={"experts": ["oracle"]})
