"""Enums, errors, market-data frame schemas and the public namespace of core and bus."""

from __future__ import annotations

import polars as pl
import pytest

import quantlab.bus
import quantlab.core
from quantlab.core import (
    Aggressor,
    ConfigError,
    EventType,
    OrderStatus,
    QuantlabError,
    Side,
    TimeInForce,
)
from quantlab.core.schemas import PRICE_COLUMN, SCHEMAS, TIMESTAMP


def test_side_sign_and_opposite() -> None:
    assert (Side.BUY.sign, Side.SELL.sign) == (1, -1)
    assert Side.BUY.opposite is Side.SELL
    assert Side.SELL.opposite is Side.BUY


def test_string_enums_read_as_lower_case_strings() -> None:
    assert Side("buy") is Side.BUY
    assert TimeInForce.GTC == "gtc"
    assert {t.value for t in TimeInForce} == {"gtc", "day", "ioc"}


def test_terminal_order_statuses() -> None:
    terminal = {s for s in OrderStatus if s.is_terminal}
    assert terminal == {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    }


def test_event_type_bytes_and_topic_names() -> None:
    assert [(e.value, e.topic_name) for e in EventType] == [(1, "quote"), (2, "trade"), (3, "bar")]
    assert [a.value for a in Aggressor] == [0, 1, 2]


def test_config_error_names_the_key() -> None:
    err = ConfigError("bus.maxsize", "must be >= 1, got 0")
    assert (err.key, err.reason) == ("bus.maxsize", "must be >= 1, got 0")
    assert str(err) == "invalid configuration 'bus.maxsize': must be >= 1, got 0"
    assert isinstance(err, QuantlabError)


def test_every_error_is_a_quantlab_error() -> None:
    errors = [getattr(quantlab.core, n) for n in quantlab.core.__all__ if n.endswith("Error")]
    assert len(errors) >= 8
    assert all(issubclass(e, QuantlabError) for e in errors)


@pytest.mark.parametrize("module", [quantlab.core, quantlab.bus], ids=["core", "bus"])
def test_public_names_resolve_and_are_unique(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("kind", list(EventType))
def test_every_kind_has_a_schema_with_a_utc_ns_timestamp(kind: EventType) -> None:
    schema = SCHEMAS[kind]
    assert schema["timestamp"] == TIMESTAMP == pl.Datetime("ns", "UTC")
    assert schema["symbol"] == pl.String
    assert PRICE_COLUMN[kind] in schema
    assert schema[PRICE_COLUMN[kind]] == pl.Float64
    pl.DataFrame(schema=schema)  # a valid Polars schema
