"""Bad input: the files quantlab reads back fuzzed (breaker state, monitor snapshot, symbol
registry, Hedge state, model registry.json, the TOML configuration).

Each is written by quantlab, but also by hand, by an older version, by a process killed
mid-write or by a full disk: its reader must return a valid value or refuse the file with its
documented error (a `QuantlabError` naming the file or key). See `test_fuzz` for the kit.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import strategies as st
from test_fuzz import (
    REFUSED,
    BadResultError,
    Raw,
    Tally,
    fuzz,
    inputs,
    mutate_bytes,
    mutate_doc,
    pick,
)

from quantlab.config import ConfigError, Settings, load_settings
from quantlab.core.enums import BreakerState
from quantlab.core.errors import CodecError, DataError, StorageError
from quantlab.core.registry import SymbolRegistry
from quantlab.engine.monitor import SCHEMA, engine_running, read_snapshot
from quantlab.risk import statefile
from quantlab.signals.ensemble import Hedge
from quantlab.signals.models.onnx_model import ModelError
from quantlab.signals.models.registry import ModelEntry, ModelRegistry

N = 2000  # examples per file format


def test_breaker_state_file_decodes_or_refuses() -> None:
    """The circuit breaker's state file (`risk.statefile.decode`), as written and mutated.
    A decoded record has breaker states, an aware timestamp and integer version and pid;
    a refusal is a `StorageError` naming the file.

    Found: bad UTF-8 inside a string raised UnicodeDecodeError, a nesting deeper than the
    recursion limit RecursionError. (A naive timestamp, which the breaker's `BreakerEvent`
    refuses, is now refused when the file is read.)"""
    record = statefile.BreakerRecord(
        state=BreakerState.HALTED,
        previous=BreakerState.ACTIVE,
        trigger="kill_switch",
        reason="operator",
        timestamp=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        version=3,
        pid=1234,
    )
    seeds = [msgspec.json.decode(statefile.encode(record))]
    tally = Tally("breaker state file (risk.statefile)", (StorageError,))

    def decode(raw: bytes) -> None:
        rec = statefile.decode(raw, "state/breaker.json")
        if not (isinstance(rec.state, BreakerState) and isinstance(rec.previous, BreakerState)):
            raise BadResultError(f"states {rec.state!r}, {rec.previous!r}")
        if rec.timestamp.tzinfo is None:
            raise BadResultError(f"naive timestamp {rec.timestamp}")
        if not all(isinstance(v, int) for v in (rec.version, rec.pid)):
            raise BadResultError(f"version {rec.version!r}, pid {rec.pid!r}")

    fuzz(tally, inputs(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)


def test_monitor_snapshot_reads_or_is_none(tmp_path: Path) -> None:
    """The monitor snapshot (`engine.monitor.read_snapshot`, then `engine_running` as the
    dashboard and CLI ask it), mutated: the reader returns a snapshot dict or None (absent,
    half-written, another schema), and `engine_running` a bool, never an exception.

    Found: a snapshot nested deeper than the recursion limit raised RecursionError and bad
    UTF-8 UnicodeDecodeError in `read_snapshot`; a ``written_at`` or ``pid`` of the wrong
    type (a list, a word) raised TypeError or ValueError in `engine_running`, and a snapshot
    without a pid counted as running (pid -1 is "every process" to ``kill``)."""
    path = tmp_path / "monitor.json"
    seeds = [
        {
            "schema": SCHEMA,
            "status": "running",
            "pid": os.getpid(),
            "host": "localhost",
            "run_id": "r-1",
            "trading": "paper",
            "written_at": 4_000_000_000.0,  # the future: fresh whenever the test runs
            "markets": {"BTC/USD": {"last": 100.5, "bid": 100.0, "ask": 101.0, "ts": 1}},
        }
    ]
    tally = Tally("monitor snapshot file (engine.monitor.read_snapshot)")

    def decode(raw: bytes) -> str | None:
        path.write_bytes(raw)
        snapshot = read_snapshot(path)
        if snapshot is not None and not (
            isinstance(snapshot, dict) and snapshot.get("schema") == SCHEMA
        ):
            raise BadResultError(f"snapshot {snapshot!r:.100}")
        running = engine_running(snapshot)
        if not isinstance(running, bool):
            raise BadResultError(f"engine_running gave {running!r}")
        if running and not isinstance(snapshot and snapshot.get("pid"), int | float | str):
            raise BadResultError(f"running without a pid: {snapshot!r:.200}")
        return REFUSED if snapshot is None else None

    fuzz(tally, inputs(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)


def test_symbol_registry_snapshot_decodes_or_refuses() -> None:
    """A persisted `SymbolRegistry` (``to_bytes``), mutated, through `from_bytes`: a registry
    of distinct non-empty names, or `CodecError`.

    Found: bad UTF-8 raised UnicodeDecodeError; an unknown field nested deeper than the
    recursion limit raised RecursionError."""
    seeds = [msgspec.json.decode(SymbolRegistry(["BTC/USD", "ETH/USD"], ["binance"]).to_bytes())]
    tally = Tally("symbol registry snapshot (core.registry)", (CodecError,))

    def decode(raw: bytes) -> None:
        reg = SymbolRegistry.from_bytes(raw)
        names = reg.symbols
        if len(set(names)) != len(names) or not all(isinstance(s, str) and s for s in names):
            raise BadResultError(f"symbols {names!r}")

    fuzz(tally, inputs(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)


def test_hedge_state_decodes_or_refuses() -> None:
    """The Hedge ensemble's persisted state (`Hedge.from_json`), mutated: a Hedge whose
    weights are a distribution over its experts, or `DataError`.

    Found: log-weights or losses of another length than the experts were accepted, and
    ``weights`` then raised ValueError (``zip(strict=True)``) or the losses did not match the
    experts; bad UTF-8 raised UnicodeDecodeError, a deep nesting RecursionError."""
    hedge = Hedge(["macd", "rsi", "patterns"], eta=0.5)
    hedge.update({"macd": 0.2, "rsi": 0.9, "patterns": 0.0})
    seeds = [msgspec.json.decode(hedge.to_json())]
    tally = Tally("Hedge ensemble state (signals.ensemble)", (DataError,))

    def decode(raw: bytes) -> None:
        h = Hedge.from_json(raw)
        weights = h.weights
        if set(weights) != set(h.experts) or not all(math.isfinite(w) for w in weights.values()):
            raise BadResultError(f"weights {weights!r}")
        if not math.isclose(sum(weights.values()), 1.0, abs_tol=1e-9):
            raise BadResultError(f"weights sum to {sum(weights.values())}")
        if not (len(h.expert_losses) == len(h.experts) and math.isfinite(h.regret())):
            raise BadResultError(f"losses {h.expert_losses!r}")

    fuzz(tally, inputs(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)


def test_model_registry_file_reads_or_refuses(tmp_path: Path) -> None:
    """A model folder's ``registry.json`` (`ModelRegistry.entries`), mutated: a list of
    `ModelEntry`, or `ModelError` naming the file.

    Found: bad UTF-8 raised UnicodeDecodeError; a value nested deeper than the recursion
    limit raised RecursionError."""
    entry = {
        "name": "direction_mlp",
        "version": 1,
        "file": "direction_mlp-v1.onnx",
        "sha256": "0" * 64,
        "kind": "mlp",
        "target": "direction",
        "feature_spec": "default@1",
        "window": 32,
        "channels": ["ret", "range"],
        "horizon": 12,
        "return_scale": 0.01,
        "training": {"start": "2018-01-01", "end": "2018-02-01", "files": ["a"], "rows": 10},
        "metrics": {"accuracy": 0.55, "folds": [0.5, 0.6]},
        "seed": 7,
        "params": {"hidden": [16, 8]},
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    seeds = [{"format": 1, "models": [entry]}]
    registry = ModelRegistry(tmp_path)
    tally = Tally("model registry.json (signals.models.registry)", (ModelError,))

    def decode(raw: bytes) -> None:
        registry.path.write_bytes(raw)
        entries = registry.entries()
        if not all(isinstance(e, ModelEntry) for e in entries):
            raise BadResultError(f"entries {entries!r:.200}")

    fuzz(tally, inputs(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)


# ---- the TOML configuration -------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """`value` as a TOML value (inline tables and arrays; `Raw` as a TOML-specific token)."""
    if isinstance(value, Raw):
        return _TOML_RAW.get(value.json, value.json)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, bytes):
        return json.dumps(value.decode("latin-1"))
    return json.dumps(str(value))


def toml_text(doc: Any) -> bytes:
    if not isinstance(doc, dict):
        return f"value = {toml_value(doc)}\n".encode("utf-8", "surrogatepass")
    lines = [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in doc.items() if v is not None]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


_TOML_RAW = {  # TOML has tokens of its own: dates, hex, underscores, multi-line strings
    "NaN": "nan",
    "Infinity": "+inf",
    "-0.0": "1979-05-27T07:32:00Z",
    "1e-400": "0x7fffffffffffffffff",
    "18446744073709551616": "1_000_000_000_000_000_000_000",
    '"\\ud800"': '"""\nmulti\nline"""',
    '"\\u0000"': "'literal \\ string'",
}


def _config_seeds() -> list[Any]:
    base = Settings().model_dump(mode="json")
    with_schedules = json.loads(json.dumps(base))
    with_schedules["runs"]["schedules"] = [
        {"name": "nightly", "cron": "0 1 * * 1-5", "parameters": {"mode": "backtest"}}
    ]
    with_schedules["portfolio"]["fx"] = {"USD": "1.0"}
    return [base, with_schedules, {"risk": {"collar_bps": 100.0}, "log_level": "INFO"}]


@st.composite
def _toml_files(draw: st.DrawFn, seeds: list[Any]) -> bytes:
    if pick(draw, 10) == 0:
        return draw(st.binary(max_size=300))
    doc = mutate_doc(draw, seeds[pick(draw, len(seeds))])
    return mutate_bytes(draw, toml_text(doc))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic on odd values, if any
def test_config_files_load_or_refuse(tmp_path: Path) -> None:
    """``quantlab.toml`` files (the full default configuration, one with schedules, a short
    one), mutated as TOML: wrong types, unknown keys, huge numbers, nan and inf, TOML dates,
    deep nesting, cut or flipped bytes. `load_settings` returns `Settings` or raises
    `ConfigError` naming the key or file.

    Found: a file that is not UTF-8 raised UnicodeDecodeError (``tomllib.load`` decodes it
    itself); an array nested deeper than the recursion limit raised RecursionError; an
    integer of 5000 digits raised ValueError (Python's int-from-text digit limit)."""
    path = tmp_path / "quantlab.toml"
    seeds = _config_seeds()
    tally = Tally("configuration files, TOML (config.load_settings)", (ConfigError,))

    def decode(raw: bytes) -> None:
        path.write_bytes(raw)
        settings = load_settings(path)
        if not isinstance(settings, Settings):
            raise BadResultError(f"load_settings gave {type(settings).__name__}")
        settings.masked()  # what `config show` prints must be computable

    fuzz(tally, _toml_files(seeds), decode, N)
    tally.report(min_trials=N * 4 // 5)
