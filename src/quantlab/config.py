"""Settings: `quantlab.toml` plus `QUANTLAB_*` environment variables (pydantic-settings).

Precedence, highest first: keyword overrides, environment (``QUANTLAB_RISK__MAX_POSITION_NOTIONAL``,
nested with ``__``), the TOML file, defaults. Unknown keys and invalid values fail at start with
a `ConfigError` that names the key and the reason. API keys come only from the environment
(``QUANTLAB_ALPACA_API_KEY`` ...), are `SecretStr` (masked in every repr and in
``quantlab config show``), and a TOML file that contains one is refused.
"""

from __future__ import annotations

import logging
import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from quantlab.core.errors import ConfigError

DEFAULT_CONFIG_FILE = "quantlab.toml"
BUNDLED = "bundled:"  # prefix of data paths shipped inside the package

_SECRET_WORDS = ("key", "secret", "password", "token", "passphrase")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """What the replay source plays."""

    paths: list[str] = Field(
        default_factory=lambda: [f"{BUNDLED}binance_btc_pairs_5m_2018-01.parquet"],
        description="Parquet/CSV files of bars; 'bundled:NAME' names a file shipped with quantlab.",
    )
    symbols: list[str] | None = None
    start: str | None = Field(None, description="ISO date or datetime (UTC), inclusive")
    end: str | None = Field(None, description="ISO date or datetime (UTC), exclusive")

    @field_validator("paths")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one data path is needed")
        return v


class IngestConfig(_Section):
    batch_size: int = Field(1000, ge=1, le=1_000_000)
    flush_ms: float = Field(5.0, gt=0)


class FeaturesConfig(_Section):
    spec: str = Field("default", description="the feature spec the engine computes")
    fast: int = Field(12, ge=2, description="the strategy's fast EMA window")
    slow: int = Field(26, ge=3, description="the strategy's slow EMA window")
    ttl_s: float = Field(3600.0, gt=0, description="feature store: entries expire after this")
    max_symbols: int = Field(100_000, ge=1, description="feature store: size cap")

    @model_validator(mode="after")
    def _ordered(self) -> FeaturesConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


EXPERTS = ("macd_cross", "rsi_reversion", "ema_trend", "patterns", "model")


class StrategyConfig(_Section):
    name: Literal["ema_cross", "hedge"] = "hedge"
    id: str = Field("hedge", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    experts: list[str] = Field(
        default_factory=lambda: list(EXPERTS),
        description="hedge: the experts it weighs (rule experts, 'patterns', 'model')",
    )
    horizon: int = Field(12, ge=1, description="hedge: bars until an expert's advice is scored")
    min_strength: float = Field(0.2, ge=0, le=1, description="hedge: weakest score that trades")
    eta: float | None = Field(
        None, gt=0, description="hedge: learning rate; unset: the theoretical sqrt(8 ln N / T)"
    )
    state_file: str | None = Field(
        None, description="hedge: weights restored from and saved to this JSON file"
    )

    @field_validator("experts")
    @classmethod
    def _known_experts(cls, v: list[str]) -> list[str]:
        unknown = [e for e in v if e not in EXPERTS]
        if unknown:
            raise ValueError(f"unknown experts {unknown}; known: {list(EXPERTS)}")
        if not v or len(set(v)) != len(v):
            raise ValueError(f"experts must be a non-empty list without repeats, got {v}")
        return v


class PatternsConfig(_Section):
    """The pattern memory: past feature windows in Chroma, queried for similar situations."""

    window: int = Field(64, ge=4, le=4096, description="rows of a symbol in one pattern")
    dim: int = Field(512, ge=8, le=4096, description="embedding dimension")
    k: int = Field(10, ge=1, le=1000, description="neighbours per query")
    query_every: int = Field(
        1,
        ge=1,
        description="query a symbol's memory at most every this many bars (once per batch)",
    )
    store_every: int = Field(
        4, ge=1, description="store every this many bars of a symbol (must divide the horizon)"
    )
    ttl_days: float = Field(90.0, gt=0, description="patterns older than this are swept")
    search: Literal["auto", "chroma", "simhash"] = "auto"
    path: str | None = Field(
        None, description="Chroma PersistentClient folder; unset: inside each run's folder"
    )
    url: str | None = Field(
        None, description="a Chroma server (http://host:port) instead of the embedded client"
    )
    collection: str = Field("patterns", pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,60}[A-Za-z0-9]$")


class ModelsConfig(_Section):
    """ONNX models for the 'model' expert, loaded from a registry with hash checks."""

    registry: str | None = Field(None, description="registry folder; unset: the bundled models")
    name: str = Field("direction_mlp", description="the registered model the expert uses")
    version: int | None = Field(None, ge=1, description="unset: the latest version")


class RiskConfig(_Section):
    """Pre-trade limits, VaR and the circuit breaker (amounts in each symbol's quote currency)."""

    max_position_notional: Decimal = Field(
        Decimal("1.0"), gt=0, description="net position per symbol, incl. open orders"
    )
    max_gross_notional: Decimal | None = Field(
        None, gt=0, description="long + short open exposure per symbol; unset: no limit"
    )
    max_order_notional: Decimal = Field(Decimal("2.0"), gt=0)
    max_order_quantity: Decimal | None = Field(None, gt=0, description="unset: no limit")
    collar_bps: float | None = Field(
        500.0, gt=0, description="deny a limit price this far from the mid; unset: no collar"
    )
    stale_after_s: float | None = Field(
        900.0, gt=0, description="deny orders on a symbol whose data is older than this"
    )
    orders_per_s: float | None = Field(
        50.0,
        gt=0,
        description="order-rate throttle per strategy (live runs; a backtest checks a whole "
        "batch at one simulated instant, so it runs without); unset: off",
    )
    burst: int = Field(20, ge=1, description="throttle: orders allowed at once")
    var_method: Literal["historical", "parametric"] = "historical"
    var_confidence: float = Field(0.99, gt=0.5, lt=1, description="of the enforced VaR")
    var_limit: float | None = Field(
        None, gt=0, description="deny orders that raise portfolio VaR above this; unset: report"
    )
    var_window: int = Field(500, ge=30, description="returns in the VaR window")
    var_interval_s: float = Field(300.0, gt=0, description="return interval = VaR horizon")
    max_drawdown_soft: float | None = Field(None, gt=0, description="drawdown -> REDUCING")
    max_drawdown_hard: float | None = Field(None, gt=0, description="drawdown -> HALTED")
    loss_window_s: float = Field(3600.0, gt=0)
    max_window_loss_soft: float | None = Field(None, gt=0, description="loss in window -> REDUCING")
    max_window_loss_hard: float | None = Field(None, gt=0, description="loss in window -> HALTED")
    error_window_s: float = Field(60.0, gt=0)
    max_errors: int | None = Field(
        20, ge=1, description="rejections + throttled orders in the error window -> HALTED"
    )
    state_file: str | None = Field(
        None,
        description="breaker state; unset: <state_dir>/<paper|live>/breaker.json for live "
        "runs, none for backtests",
    )


class PortfolioConfig(_Section):
    """Settlement: PnL per quote currency, and in one base currency when it is set."""

    base_currency: str | None = Field(
        None,
        pattern=r"^[A-Z0-9]{2,10}$",
        description="convert PnL, cash and equity into this currency (unset: per currency)",
    )
    fx: dict[str, Decimal] = Field(
        default_factory=dict,
        description="fixed rates CCY -> base currency, for currencies no traded symbol prices",
    )

    @field_validator("fx")
    @classmethod
    def _positive(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        bad = {k: str(r) for k, r in v.items() if not (r.is_finite() and r > 0)}
        if bad:
            raise ValueError(f"fx rates must be > 0, got {bad}")
        return v


class CostSpec(_Section):
    """A price the system pays for something it uses: data, an API, model inference."""

    agent: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="who incurs it")
    kind: Literal["data", "api", "inference", "compute"] = "data"
    currency: str = Field("USD", pattern=r"^[A-Z0-9]{2,10}$")
    per_event: Decimal = Field(
        Decimal(0), ge=0, description="data: per market event the agent (a source) delivered"
    )
    per_row: Decimal = Field(
        Decimal(0), ge=0, description="inference: per feature row the strategy `agent` scored"
    )
    per_call: Decimal = Field(
        Decimal(0), ge=0, description="api: per order sent to the venue `agent` (one request)"
    )
    subscription: Decimal = Field(Decimal(0), ge=0, description="a flat price per period")
    period_days: float = Field(30.0, gt=0, description="the subscription's period")


class BudgetSpec(_Section):
    """A spending limit; exhausted, it stops that agent (see `portfolio.metering`)."""

    agent: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    strategy: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    currency: str = Field(pattern=r"^[A-Z0-9]{2,10}$")
    limit: Decimal = Field(gt=0)
    period_days: float | None = Field(None, gt=0, description="unset: a lifetime budget")
    alert_at: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])

    @model_validator(mode="after")
    def _one_owner(self) -> BudgetSpec:
        if (self.agent is None) == (self.strategy is None):
            raise ValueError("a budget names exactly one of agent or strategy")
        return self


class LedgerConfig(_Section):
    """The payments ledger: what things cost, and the budgets."""

    costs: list[CostSpec] = Field(default_factory=list)
    budgets: list[BudgetSpec] = Field(default_factory=list)


class VenueConfig(BaseModel):
    """One venue of `[[execution.venues]]`: ``type`` picks the adapter, the rest is its
    configuration (checked by the adapter's own config when the engine builds it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["paper", "alpaca", "ccxt"]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]{1,32}$")


class ExecutionConfig(_Section):
    venue: str = Field("paper", description="the default venue: orders of unrouted symbols")
    venues: list[VenueConfig] = Field(
        default_factory=lambda: [VenueConfig(type="paper")],
        description="the venues orders may go to (default: the paper venue)",
    )
    routes: dict[str, str] = Field(
        default_factory=dict, description="symbol -> venue name; other symbols: `venue`"
    )
    sizing: Literal["kelly", "fixed"] = "kelly"
    capital: Decimal = Field(
        Decimal("4.0"), gt=0, description="kelly: quote-currency capital per symbol"
    )
    kelly_fraction: float = Field(0.5, gt=0, le=1, description="kelly: share of full Kelly")
    kelly_cap: float = Field(0.25, gt=0, le=1, description="kelly: largest fraction of capital")
    prior_win_loss: float = Field(1.0, gt=0, description="kelly: payoff ratio before a record")
    order_notional: Decimal = Field(
        Decimal("0.5"), gt=0, description="fixed: target position, quote ccy"
    )
    time_in_force: Literal["gtc", "day", "ioc"] = "ioc"
    assumed_spread_bps: float = Field(5.0, ge=0, description="spread assumed when data are bars")
    tick_size: Decimal = Field(Decimal("0.00000001"), gt=0)
    lot_size: Decimal = Field(Decimal("0.00000001"), gt=0)
    maker_fee_bps: Decimal = Field(Decimal("2"), ge=0)
    taker_fee_bps: Decimal = Field(Decimal("7.5"), ge=0)
    not_found_grace_s: float = Field(
        10.0, ge=0, description="an order of unknown outcome absent this long never arrived"
    )
    resolve_every_s: float = Field(1.0, gt=0, description="query unknown orders this often")
    fills_lookback_s: float = Field(
        7 * 86_400.0, gt=0, description="reconciliation: fetch the venues' fills this far back"
    )

    @model_validator(mode="after")
    def _venues_and_routes(self) -> ExecutionConfig:
        names = [v.name or v.type for v in self.venues]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"venue names must be unique and non-empty, got {names}")
        if self.venue not in names:
            raise ValueError(f"default venue {self.venue!r} is not among the venues {names}")
        for symbol, name in self.routes.items():
            if name not in names:
                raise ValueError(f"route {symbol} -> {name!r}: no such venue (have {names})")
        return self


class SourceConfig(BaseModel):
    """One market-data source of live mode: ``type`` picks the adapter, the rest is its
    configuration (checked by the adapter's own config when the engine builds it)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["synthetic", "replay", "alpaca", "coinbase", "ccxt", "polygon", "news"]
    name: str | None = None
    backfill: bool = Field(
        True, description="with live.backfill: heal this source's gaps from its venue's REST bars"
    )


class LiveConfig(_Section):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(type="synthetic")],
        description="market-data sources of `quantlab live` (default: one synthetic source)",
    )
    stale_after_s: float = Field(30.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    max_future_s: float = Field(5.0, gt=0, description="reject events this far in the future")
    write_lake: bool = True
    backfill: bool = Field(
        True,
        description="fetch what a disconnect (or a gap in a bar stream) cost a source from its "
        "venue's REST bars, into the lake (alpaca, polygon, coinbase, ccxt sources)",
    )
    backfill_timeframe: str = Field(
        "1m", pattern=r"^[1-9][0-9]*[smhd]$", description="the bars backfilled (a bar stream's own)"
    )
    status_every_s: float = Field(1.0, gt=0)
    monitor_every_s: float = Field(
        0.5, gt=0, description="how often a live engine writes its dashboard snapshot"
    )


class StorageConfig(_Section):
    db_url: str | None = Field(
        None, description="SQLAlchemy URL; unset: a SQLite file inside each run's folder"
    )
    lake_root: str = "var/lake"
    lake_cold_root: str = "var/lake-cold"
    runs_dir: str = "runs"
    state_dir: str = Field(
        "var/state",
        description="live runs: <state_dir>/<paper|live>/ holds the order database and the "
        "risk state, so a restart finds them (backtests keep theirs in the run folder)",
    )


class BusConfig(_Section):
    """The message bus of live runs: in-process (one process) or Redis Streams (processes and
    machines; `quantlab live --role`). Backtests always run on the in-process bus."""

    backend: Literal["memory", "redis"] = Field(
        "memory", description="'memory' (one process) or 'redis' (Redis Streams, multi-process)"
    )
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="the Redis server (password: QUANTLAB_REDIS_PASSWORD, never in the URL)",
    )
    namespace: str = Field(
        "quantlab",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="processes sharing a namespace share topics (one deployment per namespace)",
    )
    maxlen: int | None = Field(
        1_000_000, ge=1000, description="approximate cap on each topic stream's entries"
    )
    batch_size: int = Field(500, ge=1, le=100_000, description="events per stream entry")
    ack_timeout_s: float = Field(
        30.0, gt=0, description="an unacknowledged message is taken over after this long"
    )
    max_deliveries: int = Field(5, ge=1, description="deliveries before the dead-letter stream")

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, v: str) -> str:
        if "@" in v.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError(
                "bus.url must not hold credentials; set QUANTLAB_REDIS_PASSWORD instead"
            )
        return v


class DashboardConfig(_Section):
    address: str = Field("127.0.0.1", description="bind address; not loopback needs auth")
    port: int = Field(5006, ge=1, le=65535)
    trading: Literal["paper", "live"] = Field(
        "paper", description="which engine's state the dashboard follows"
    )
    refresh_ms: int = Field(1000, ge=100, description="how often every page updates")
    stale_after_s: float = Field(
        5.0, gt=0, description="an engine silent this long is shown as not running"
    )
    user: str = Field(
        "quantlab",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="basic-auth user; auth is on when QUANTLAB_DASHBOARD_PASSWORD is set",
    )


class ScheduleConfig(BaseModel):
    """A production notebook run on a cron schedule (`quantlab schedule`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cron: str = Field(description="five-field crontab: minute hour day month day-of-week")
    notebook: str | None = Field(None, description="default: runs.notebook")
    parameters: dict[str, Any] = Field(default_factory=dict)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(
                f"cron must have five fields (minute hour day month day-of-week), got {v!r}"
            )
        return v


class RunsConfig(_Section):
    notebook: str = Field(
        "notebooks/production/production.ipynb",
        description="the production notebook `quantlab run` executes",
    )
    kernel: str = Field("quantlab", description="Jupyter kernel the notebooks run on")
    cell_timeout_s: float = Field(1800.0, gt=0, description="a cell running longer fails")
    start_timeout_s: float = Field(60.0, gt=0, description="kernel start timeout")
    start_retries: int = Field(
        2, ge=0, description="retries of a kernel that fails to start (no cell has run)"
    )
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    dask_scheduler: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ucx)://",
        description="sweeps run on this Dask cluster (tcp://host:8786); unset: a LocalCluster",
    )

    @field_validator("schedules")
    @classmethod
    def _unique_names(cls, v: list[ScheduleConfig]) -> list[ScheduleConfig]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"schedule names must be unique, got {names}")
        return v


class Secrets(BaseSettings):
    """Credentials, read from the environment only."""

    model_config = SettingsConfigDict(env_prefix="QUANTLAB_", extra="ignore", frozen=True)

    alpaca_api_key: SecretStr | None = None
    alpaca_api_secret: SecretStr | None = None
    coinbase_api_key: SecretStr | None = None
    coinbase_api_secret: SecretStr | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    polygon_api_key: SecretStr | None = None
    # The dashboard's basic auth (`quantlab dashboard`): a password and the cookie secret.
    dashboard_password: SecretStr | None = None
    dashboard_cookie_secret: SecretStr | None = None
    # The Redis server of `bus.backend = "redis"`.
    redis_password: SecretStr | None = None

    def values(self) -> list[str]:
        """The non-empty secret values (for scrubbing logs)."""
        out = []
        for name in type(self).model_fields:
            v = getattr(self, name)
            if isinstance(v, SecretStr) and v.get_secret_value():
                out.append(v.get_secret_value())
        return out


class Settings(BaseSettings):
    """Every setting quantlab reads. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="QUANTLAB_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data: DataConfig = DataConfig()
    ingest: IngestConfig = IngestConfig()
    features: FeaturesConfig = FeaturesConfig()
    strategy: StrategyConfig = StrategyConfig()
    patterns: PatternsConfig = PatternsConfig()
    models: ModelsConfig = ModelsConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    portfolio: PortfolioConfig = PortfolioConfig()
    ledger: LedgerConfig = LedgerConfig()
    storage: StorageConfig = StorageConfig()
    live: LiveConfig = LiveConfig()
    bus: BusConfig = BusConfig()
    runs: RunsConfig = RunsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)

    @model_validator(mode="after")
    def _patterns_fit_the_horizon(self) -> Settings:
        st, p = self.strategy, self.patterns
        if st.name == "hedge" and "patterns" in st.experts and st.horizon % p.store_every:
            raise ValueError(
                f"patterns.store_every ({p.store_every}) must divide strategy.horizon "
                f"({st.horizon}): a stored bar's outcome bar must be stored too"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    def masked(self) -> dict[str, Any]:
        """The settings as plain data, secrets shown as '**********' (for `config show`)."""
        out = self.model_dump(mode="json")
        out["secrets"] = {
            name: ("**********" if getattr(self.secrets, name) is not None else None)
            for name in type(self.secrets).model_fields
        }
        return out


def _find_secret_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _find_secret_keys(value, path + ".")
        elif any(word in key.lower() for word in _SECRET_WORDS) and key != "secrets":
            found.append(path)
        if key == "secrets":
            found.append(path)
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), f"not valid TOML: the file is not UTF-8 text ({exc})"
        ) from None
    except RecursionError:
        raise ConfigError(str(path), "not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # a number tomllib cannot convert (more than 4300 digits)
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the configuration file: {exc}") from exc
    secret_keys = _find_secret_keys(tree)
    if secret_keys:
        raise ConfigError(
            secret_keys[0],
            f"secrets may not be written in {path}; set them in the environment "
            f"(QUANTLAB_<NAME>) instead",
        )
    return tree


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (or ``$QUANTLAB_CONFIG``, or ./quantlab.toml if present).

    `overrides` are nested dicts per section, e.g. ``risk={"max_position_notional": 2}``.
    Raises `ConfigError` naming the first bad key.
    """
    explicit = path is not None or "QUANTLAB_CONFIG" in os.environ
    file = Path(path or os.environ.get("QUANTLAB_CONFIG", DEFAULT_CONFIG_FILE))
    tree: dict[str, Any] = {}
    try:
        exists = file.exists()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system
        raise ConfigError(str(file)[:300], f"not a usable configuration path: {exc}") from None
    if exists:
        tree = _read_toml(file)
    elif explicit:
        raise ConfigError(str(file), "configuration file does not exist")
    try:
        env_tree = Settings().model_dump(exclude_unset=True)  # environment only
        merged = _deep_merge(_deep_merge(tree, env_tree), overrides)
        return Settings.model_validate(merged)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        raise ConfigError(key, f"{err['msg']}{shown}") from None


def mask_secrets(text: str, secrets: list[str], replacement: str = "***") -> str:
    """`text` with every (non-empty) secret value in `secrets` replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, replacement)
    return text


class SecretMaskingFilter(logging.Filter):
    """A logging filter that replaces every configured secret value in a record by '***':
    in the message, in the traceback of ``exc_info`` and in ``stack_info``.

    The traceback is formatted here and kept, masked, as the record's ``exc_text`` (which
    every `logging.Formatter` prints); ``exc_info`` is dropped so that no later handler or
    formatter can print the exception again unmasked (an exception's message often holds
    what it failed on: a URL, a request, a key).
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg, record.args = mask_secrets(record.getMessage(), self._secrets), ()
        if record.exc_info and record.exc_info != (None, None, None):
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = text
            record.exc_info = None
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info, self._secrets)
        return True
