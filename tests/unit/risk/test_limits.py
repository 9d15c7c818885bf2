"""Pre-trade limits: the pure checks (`check_order`, `check_values`, `check_limits`)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from riskkit import make_order

from quantlab.core.enums import Side
from quantlab.core.errors import ConfigError
from quantlab.risk.limits import REASONS, RiskLimits, check_limits, check_order, check_values

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

LIMITS = RiskLimits(max_position_notional=Decimal("10"), max_order_notional=Decimal("4"))


# -- check_order ----------------------------------------------------------------------------


def test_within_limits_is_allowed() -> None:
    assert check_order(make_order(Side.BUY, "80"), Decimal(0), LIMITS, "BTC") is None  # 4 BTC


def test_order_notional_denial_names_the_values() -> None:
    denial = check_order(make_order(Side.BUY, "80.02"), Decimal(0), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "order_notional"
    assert "ETH/BTC" in denial.detail
    assert "order notional 4.001" in denial.detail  # 80.02 x 0.05
    assert "limit 4 BTC" in denial.detail


def test_position_limit_denial_names_the_values() -> None:
    denial = check_order(make_order(Side.BUY, "60"), Decimal("150"), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "position_limit"
    assert "ETH/BTC" in denial.detail
    assert "projected position 210" in denial.detail
    assert "x 0.05" in denial.detail
    assert "= 10.5" in denial.detail  # 210 x 0.05
    assert "limit 10 BTC" in denial.detail
    # Short side too.
    denial = check_order(make_order(Side.SELL, "60"), Decimal("-150"), LIMITS, "BTC")
    assert denial is not None
    assert "projected position -210" in denial.detail


def test_reducing_orders_are_allowed_even_beyond_the_position_limit() -> None:
    # Long 1000 (50 BTC, far beyond the limit): selling some is allowed, so is buying back
    # from short, and so is a flip to a smaller opposite position.
    assert check_order(make_order(Side.SELL, "80"), Decimal("1000"), LIMITS, "BTC") is None
    assert check_order(make_order(Side.BUY, "80"), Decimal("-1000"), LIMITS, "BTC") is None
    assert check_order(make_order(Side.SELL, "80"), Decimal("50"), LIMITS, "BTC") is None


def test_the_order_notional_limit_applies_to_reducing_orders_too() -> None:
    # A fat-finger check, not a position check: a 5 BTC sell is refused even when it reduces.
    denial = check_order(make_order(Side.SELL, "100"), Decimal("1000"), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "order_notional"


def test_a_market_order_without_a_mid_is_denied_bad_price() -> None:
    order = make_order(Side.BUY, "1", price=None)
    denial = check_order(order, Decimal(0), LIMITS, "BTC")
    assert denial is not None
    assert denial.reason == "bad_price"
    assert "market order" in denial.detail
    assert "no mid" in denial.detail


def test_a_market_order_is_valued_at_the_mid() -> None:
    order = make_order(Side.BUY, "100", price=None)  # 100 x 0.05 = 5 BTC > 4
    denial = check_order(order, Decimal(0), LIMITS, "BTC", mid=0.05)
    assert denial is not None
    assert denial.reason == "order_notional"
    assert "order notional 5.00 BTC" in denial.detail
    assert (
        check_order(make_order(Side.BUY, "80", price=None), Decimal(0), LIMITS, "BTC", mid=0.05)
        is None
    )


@settings(DETERMINISTIC, max_examples=300)
@given(
    st.sampled_from([Side.BUY, Side.SELL]),
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("500"), places=3),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("1"), places=4),
    st.decimals(min_value=Decimal("-500"), max_value=Decimal("500"), places=3),
)
def test_check_order_matches_its_specification(
    side: Side, quantity: Decimal, price: Decimal, exposure: Decimal
) -> None:
    denial = check_order(make_order(side, quantity, price), exposure, LIMITS, "BTC")
    notional = quantity * price
    projected = exposure + side.sign * quantity
    reduces = abs(projected) <= abs(exposure)
    if notional > LIMITS.max_order_notional:
        assert denial is not None
        assert denial.reason == "order_notional"
    elif not reduces and abs(projected) * price > LIMITS.max_position_notional:
        assert denial is not None
        assert denial.reason == "position_limit"
    else:
        assert denial is None
    if reduces:  # a reducing order is never refused for the position
        assert denial is None or denial.reason != "position_limit"


# -- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity", "0", "-0", "-3"])
def test_a_bad_quantity_is_denied_naming_it(value: str) -> None:
    order = make_order(Side.BUY, value)
    for denial in (check_values(order), check_order(order, Decimal(0), LIMITS, "BTC")):
        assert denial is not None
        assert denial.reason == "bad_quantity"
        assert f"quantity {Decimal(value)} must be a finite number > 0" in denial.detail
        assert "ETH/BTC" in denial.detail
        assert order.client_order_id in denial.detail


@pytest.mark.parametrize("value", ["NaN", "Infinity", "0", "-0.05"])
def test_a_bad_price_is_denied_naming_it(value: str) -> None:
    order = make_order(Side.SELL, "1", price=value)
    denial = check_order(order, Decimal(0), LIMITS, "BTC", mid=0.05)
    assert denial is not None
    assert denial.reason == "bad_price"
    assert f"price {Decimal(value)} must be a finite number > 0" in denial.detail


def test_the_quantity_is_checked_before_the_price() -> None:
    denial = check_values(make_order(Side.BUY, "NaN", price="NaN"))
    assert denial is not None
    assert denial.reason == "bad_quantity"


# -- order quantity, collar, gross ----------------------------------------------------------


def test_order_quantity_limit_names_the_values() -> None:
    limits = RiskLimits(
        max_position_notional=Decimal(10),
        max_order_notional=Decimal(4),
        max_order_quantity=Decimal("50"),
    )
    denial = check_order(make_order(Side.BUY, "50.5"), Decimal(0), limits, "BTC")
    assert denial is not None
    assert denial.reason == "order_quantity"
    assert "order quantity 50.5 > limit 50" in denial.detail
    assert check_order(make_order(Side.BUY, "50"), Decimal(0), limits, "BTC") is None


def test_price_collar_names_the_distance_from_the_mid() -> None:
    # 0.0526 is 520 bps above the mid 0.05; the default collar is 500 bps.
    denial = check_order(make_order(Side.BUY, "1", "0.0526"), Decimal(0), LIMITS, "BTC", mid=0.05)
    assert denial is not None
    assert denial.reason == "price_collar"
    assert "limit price 0.0526 is 520.0 bps from mid 0.05 > collar 500 bps" in denial.detail
    # Below the mid too; 4.9% away is within.
    denial = check_order(make_order(Side.SELL, "1", "0.0474"), Decimal(0), LIMITS, "BTC", mid=0.05)
    assert denial is not None
    assert "520.0 bps" in denial.detail
    assert (
        check_order(make_order(Side.BUY, "1", "0.05245"), Decimal(0), LIMITS, "BTC", mid=0.05)
        is None
    )
    # Without a mid (or with the collar off) there is nothing to compare with.
    assert check_order(make_order(Side.BUY, "1", "0.0526"), Decimal(0), LIMITS, "BTC") is None
    off = RiskLimits(
        max_position_notional=Decimal(10), max_order_notional=Decimal(4), collar_bps=None
    )
    assert (
        check_order(make_order(Side.BUY, "1", "0.0526"), Decimal(0), off, "BTC", mid=0.05) is None
    )


def test_gross_limit_counts_both_sides_of_open_orders() -> None:
    limits = RiskLimits(
        max_position_notional=Decimal(10),
        max_order_notional=Decimal(4),
        max_gross_notional=Decimal(12),
    )
    # Net +20 (0.05 x 20 = 1 BTC) but 220 open on both sides: +20 more makes 240 x 0.05 = 12.0 (ok),
    # +21 makes 241 x 0.05 = 12.05 > 12.
    assert (
        check_limits(make_order(Side.BUY, "20"), Decimal(20), limits, "BTC", gross=Decimal(220))
        is None
    )
    denial = check_limits(
        make_order(Side.BUY, "21"), Decimal(20), limits, "BTC", gross=Decimal(220)
    )
    assert denial is not None
    assert denial.reason == "position_limit"
    assert (
        "projected gross open exposure 241 x 0.05 = 12.05 BTC > gross limit 12 BTC" in denial.detail
    )
    # An order that reduces the net exposure is never refused for the position, gross either.
    assert (
        check_limits(make_order(Side.SELL, "20"), Decimal(20), limits, "BTC", gross=Decimal(400))
        is None
    )


def test_limits_are_validated_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"risk\.max_order_notional"):
        RiskLimits(max_position_notional=Decimal(1), max_order_notional=Decimal(-1))
    with pytest.raises(ConfigError, match=r"risk\.collar_bps"):
        RiskLimits(max_position_notional=Decimal(1), max_order_notional=Decimal(1), collar_bps=0)
    with pytest.raises(ConfigError, match=r"risk\.burst"):
        RiskLimits(max_position_notional=Decimal(1), max_order_notional=Decimal(1), burst=0)


def test_reasons_are_listed_in_check_order() -> None:
    assert REASONS[0] == "halted"
    assert REASONS[-1] == "var_limit"
    assert len(set(REASONS)) == len(REASONS) == 12
