"""The payments ledger: double entry per currency, idempotent posting, budgets, by property."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import ids
from quantlab.core.enums import Liquidity, Side
from quantlab.core.errors import ValidationError
from quantlab.core.messages import Fill
from quantlab.portfolio.ledger import (
    AccountType,
    Budget,
    BudgetAlert,
    BudgetWatch,
    DuplicateEntryError,
    JournalEntry,
    Ledger,
    LedgerError,
    Posting,
    UnbalancedEntryError,
    account_type,
    cost_entry,
    expense_summary,
    fill_entry,
    funding_entry,
    payment_entry,
    reconcile_expenses,
)

# Same examples on every run (no example database, no random seed): deterministic tests.
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)

ZERO = Decimal(0)
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

SYMBOLS = {"ETH/USDT": ("ETH", "USDT"), "BTC/USDT": ("BTC", "USDT"), "ETH/BTC": ("ETH", "BTC")}


def make_fill(
    n: int,
    symbol: str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    fee: Decimal = ZERO,
    fee_currency: str = "USDT",
    *,
    venue: str = "binance",
    strategy: str = "mom",
    at: dt.datetime = T0,
) -> Fill:
    trade_id = f"t{n}"
    return Fill(
        fill_id=ids.fill_id(venue, trade_id),
        order_id=ids.order_id(f"c{n}"),
        client_order_id=f"c{n}",
        symbol=symbol,
        side=side,
        price=price,
        quantity=qty,
        fee=fee,
        fee_currency=fee_currency,
        liquidity=Liquidity.TAKER,
        timestamp=at,
        venue=venue,
        trade_id=trade_id,
        strategy_id=strategy,
    )


# --- strategies

eight = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000"), places=8)
prices = st.one_of(
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("0.1"), places=8),
    st.decimals(min_value=Decimal("1"), max_value=Decimal("70000"), places=8),
)
fees = st.one_of(
    st.just(ZERO), st.decimals(min_value=Decimal("-1"), max_value=Decimal("10"), places=8)
)


class FillOp(NamedTuple):
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str


class CostOp(NamedTuple):
    agent: str
    kind: str
    amount: Decimal
    currency: str
    payable: bool


@st.composite
def fill_ops(draw: st.DrawFn) -> FillOp:
    symbol = draw(st.sampled_from(sorted(SYMBOLS)))
    base, quote = SYMBOLS[symbol]
    fee_ccy = draw(st.sampled_from([quote, base, "BNB"]))
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    return FillOp(symbol, side, draw(eight), draw(prices), draw(fees), fee_ccy)


@st.composite
def cost_ops(draw: st.DrawFn) -> CostOp:
    agent = draw(st.sampled_from(["polygon", "direction_mlp", "alpaca"]))
    kind = draw(st.sampled_from(["data", "inference", "api"]))
    amount = draw(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("500"), places=8))
    currency = draw(st.sampled_from(["USD", "USDT", "BTC"]))
    return CostOp(agent, kind, amount, currency, draw(st.booleans()))


ops = st.lists(st.one_of(fill_ops(), cost_ops()), min_size=1, max_size=30)
Ops = list[FillOp | CostOp]


def build(seq: Ops) -> tuple[list[JournalEntry], list[Fill], list[CostOp]]:
    entries: list[JournalEntry] = []
    fills: list[Fill] = []
    costs: list[CostOp] = []
    for n, op in enumerate(seq):
        at = T0 + dt.timedelta(minutes=n)
        if isinstance(op, FillOp):
            f = make_fill(n, op.symbol, op.side, op.qty, op.price, op.fee, op.fee_currency, at=at)
            fills.append(f)
            entries.append(fill_entry(f))
        else:
            costs.append(op)
            entries.append(
                cost_entry(
                    op.agent, op.kind, op.amount, op.currency, at, f"op {n}", payable=op.payable
                )
            )
    return entries, fills, costs


def snapshot(ledger: Ledger) -> tuple[object, ...]:
    return (len(ledger), list(ledger), ledger.balances(), ledger.accounts())


# --- double entry, by property


@settings(DETERMINISTIC, max_examples=150)
@given(ops)
def test_random_fills_and_costs_keep_books_exact(seq: Ops) -> None:
    entries, fills, costs = build(seq)
    ledger = Ledger()
    assert ledger.post_all(entries) == len(entries)

    # Every currency's trial balance is exactly zero.
    assert all(v == 0 for v in ledger.trial_balance().values())

    # Positions are the signed sum of fill quantities per base currency; cash is the
    # independently computed cash flow (notional in quote, fees in their currency, costs).
    positions: dict[str, Decimal] = {}
    cash: dict[str, Decimal] = {}
    payable: dict[str, Decimal] = {}
    for f in fills:
        base, quote = SYMBOLS[f.symbol]
        positions[base] = positions.get(base, ZERO) + f.side.sign * f.quantity
        cash[quote] = cash.get(quote, ZERO) - f.side.sign * f.quantity * f.price
        cash[f.fee_currency] = cash.get(f.fee_currency, ZERO) - f.fee
    for agent, _kind, amount, currency, on_credit in costs:
        if on_credit:
            payable[agent + currency] = payable.get(agent + currency, ZERO) - amount
        else:
            cash[currency] = cash.get(currency, ZERO) - amount
    for cur in {"ETH", "BTC", "USDT", "BNB", "USD"}:
        assert ledger.position(cur) == positions.get(cur, ZERO)
        assert ledger.cash(cur) == cash.get(cur, ZERO)
    for agent in ("polygon", "direction_mlp", "alpaca"):
        for cur in ("USD", "USDT", "BTC"):
            owed = ledger.balance(f"liabilities:payable:{agent}:{cur}")
            assert owed == payable.get(agent + cur, ZERO)

    # Total expenses equal fees + costs, per currency.
    diff = reconcile_expenses(ledger, fills, [(c.amount, c.currency) for c in costs])
    assert all(v == 0 for v in diff.values())
    summary = expense_summary(ledger)
    for row in summary.values():
        assert row["total"] == sum((v for k, v in row.items() if k != "total"), ZERO)

    # Each account holds one currency; its type is its root.
    for account in ledger.accounts():
        assert account.type is account_type(account.name)

    # Replaying the same fills and costs (entries rebuilt from scratch) posts nothing new.
    before = snapshot(ledger)
    replay, _, _ = build(seq)
    assert ledger.post_all(replay) == 0
    assert not any(ledger.post(e) for e in entries)
    assert snapshot(ledger) == before


@settings(DETERMINISTIC, max_examples=60)
@given(ops, st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("5"), places=8))
def test_refused_entries_leave_ledger_unchanged(seq: Ops, off: Decimal) -> None:
    entries, _, _ = build(seq)
    ledger = Ledger()
    ledger.post_all(entries)
    before = snapshot(ledger)

    # Unbalanced: one leg off by `off`.
    with pytest.raises(UnbalancedEntryError, match=r"entry 'bad'.*does not balance.*USD"):
        JournalEntry(
            id="bad",
            timestamp=T0,
            memo="typo",
            agent="polygon",
            postings=(
                Posting("expenses:data:polygon:USD", Decimal(10) + off, "USD"),
                Posting("assets:cash:USD", Decimal(-10), "USD"),
            ),
        )
    # A reused id with different content.
    first = entries[0]
    changed = JournalEntry(
        id=first.id,
        timestamp=first.timestamp,
        memo=first.memo + " (changed)",
        agent=first.agent,
        postings=first.postings,
        strategy=first.strategy,
    )
    with pytest.raises(DuplicateEntryError, match="already posted"):
        ledger.post(changed)
    # A balanced entry whose second leg hits an existing account in the wrong currency.
    account = ledger.accounts()[-1]
    other = "XAU" if account.currency != "XAU" else "XAG"
    wrong = JournalEntry(
        id="wrong-currency",
        timestamp=T0,
        memo="",
        agent="x",
        postings=(
            Posting(f"equity:capital:{other}", off, other),
            Posting(account.name, off.copy_negate(), other),
        ),
    )
    with pytest.raises(LedgerError, match=f"an account in {account.currency}"):
        ledger.post(wrong)
    assert snapshot(ledger) == before
    assert "wrong-currency" not in ledger


# --- entries, examples


def test_buy_and_sell_postings() -> None:
    buy = make_fill(1, "ETH/USDT", Side.BUY, Decimal("2"), Decimal("3000.5"), Decimal("1.2"))
    e = fill_entry(buy)
    assert e.id == f"fill:{buy.fill_id}"
    assert (e.agent, e.strategy) == ("mom", "mom")
    assert [(p.account, p.amount, p.currency) for p in e.postings] == [
        ("assets:positions:ETH", Decimal(2), "ETH"),
        ("equity:trading:ETH", Decimal(-2), "ETH"),
        ("equity:trading:USDT", Decimal("6001.0"), "USDT"),
        ("assets:cash:USDT", Decimal("-6001.0"), "USDT"),
        ("expenses:fees:binance:USDT", Decimal("1.2"), "USDT"),
        ("assets:cash:USDT", Decimal("-1.2"), "USDT"),
    ]
    ledger = Ledger()
    ledger.post(e)
    assert ledger.cash("USDT") == Decimal("-6002.2")  # price*qty + fee
    assert ledger.position("ETH") == 2

    # Sell with the fee in a third currency.
    sell = make_fill(
        2, "ETH/USDT", Side.SELL, Decimal("0.5"), Decimal("3100"), Decimal("0.01"), "BNB"
    )
    ledger.post(fill_entry(sell))
    assert ledger.position("ETH") == Decimal("1.5")
    assert ledger.cash("USDT") == Decimal("-6002.2") + Decimal("1550")
    assert ledger.cash("BNB") == Decimal("-0.01")
    assert ledger.balances("expenses") == {
        "expenses:fees:binance:BNB": Decimal("0.01"),
        "expenses:fees:binance:USDT": Decimal("1.2"),
    }
    assert ledger.account("expenses:fees:binance:BNB").type is AccountType.EXPENSE  # type: ignore[union-attr]
    assert all(v == 0 for v in ledger.trial_balance().values())


def test_fill_base_quote_override_and_agent() -> None:
    f = make_fill(3, "XBTUSD", Side.BUY, Decimal(1), Decimal(100), strategy="")
    with pytest.raises(ValidationError, match="XBTUSD"):
        fill_entry(f)
    e = fill_entry(f, "BTC", "USD")
    assert (e.agent, e.strategy) == ("binance", None)
    assert fill_entry(f, "BTC", "USD", agent="desk").agent == "desk"


def test_costs_payables_and_funding() -> None:
    ledger = Ledger()
    ledger.post(funding_entry("USD", Decimal(1000), T0))
    ledger.post(cost_entry("polygon", "data", Decimal("49.99"), "USD", T0, "plan"))
    ledger.post(
        cost_entry("direction_mlp", "inference", Decimal("0.02"), "USD", T0, "gpu", payable=True)
    )
    ledger.post(payment_entry("direction_mlp", Decimal("0.01"), "USD", T0 + DAY))
    assert ledger.cash("USD") == Decimal("950.00")
    assert ledger.balance("equity:capital:USD") == -1000
    assert ledger.balance("liabilities:payable:direction_mlp:USD") == Decimal("-0.01")
    assert ledger.balances("expenses:data") == {"expenses:data:polygon:USD": Decimal("49.99")}
    assert ledger.balances("expenses:dat") == {}  # prefixes match whole segments
    assert expense_summary(ledger) == {
        "USD": {"total": Decimal("50.01"), "data": Decimal("49.99"), "inference": Decimal("0.02")}
    }
    assert [e.agent for e in ledger.entries(since=T0 + DAY)] == ["direction_mlp"]
    assert len(ledger.entries(agent="polygon")) == 1
    assert ledger.trial_balance() == {"USD": 0}
    with pytest.raises(LedgerError, match="must be > 0"):
        cost_entry("polygon", "data", Decimal(0), "USD", T0)
    with pytest.raises(LedgerError, match="nonzero"):
        funding_entry("USD", Decimal(0), T0)


def test_entries_filter_by_strategy() -> None:
    ledger = Ledger()
    ledger.post(fill_entry(make_fill(1, "ETH/BTC", Side.BUY, Decimal(1), Decimal("0.05"))))
    ledger.post(cost_entry("direction_mlp", "inference", Decimal(1), "USD", T0, strategy="mom"))
    ledger.post(cost_entry("polygon", "data", Decimal(1), "USD", T0))
    assert len(ledger.entries(strategy="mom")) == 2
    assert len(ledger.entries(agent="mom")) == 1
    assert len(ledger.entries()) == 3


@pytest.mark.parametrize(
    "amount", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN"), 1.5]
)
def test_non_finite_and_float_amounts_refused(amount: object) -> None:
    with pytest.raises(LedgerError, match="assets:cash:USD"):
        Posting("assets:cash:USD", amount, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("account", "message"),
    [("cash", "root:segment"), ("assets::USD", "root:segment"), ("revenue:x", "unknown root")],
)
def test_bad_account_names_refused(account: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        Posting(account, Decimal(1), "USD")


def test_bad_entries_refused() -> None:
    leg = Posting("assets:cash:USD", ZERO, "USD")
    with pytest.raises(LedgerError, match="no postings"):
        JournalEntry(id="e", timestamp=T0, memo="", agent="a", postings=())
    naive = dt.datetime(2024, 1, 1)  # naive on purpose
    with pytest.raises(LedgerError, match="timezone-aware"):
        JournalEntry(id="e", timestamp=naive, memo="", agent="a", postings=(leg,))
    with pytest.raises(LedgerError, match="both USD and EUR"):
        JournalEntry(
            id="e",
            timestamp=T0,
            memo="",
            agent="a",
            postings=(leg, Posting("assets:cash:USD", ZERO, "EUR")),
        )
    with pytest.raises(UnbalancedEntryError, match=r"EUR \+1.*USD -1"):
        JournalEntry(
            id="e",
            timestamp=T0,
            memo="",
            agent="a",
            postings=(
                Posting("assets:cash:USD", Decimal(-1), "USD"),
                Posting("assets:cash:EUR", Decimal(1), "EUR"),
            ),
        )


# --- budgets


def costs_of(
    agent: str, amounts: list[Decimal], days: list[int] | None = None
) -> list[JournalEntry]:
    return [
        cost_entry(
            agent,
            "inference",
            a,
            "USD",
            T0 + (days[i] if days else 0) * DAY + dt.timedelta(seconds=i),
            f"call {i}",
        )
        for i, a in enumerate(amounts)
    ]


amounts = st.lists(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("40"), places=2), max_size=40
)


@settings(DETERMINISTIC, max_examples=150)
@given(amounts)
def test_lifetime_budget_alerts_each_threshold_once(spends: list[Decimal]) -> None:
    budget = Budget(currency="USD", limit=Decimal(100), agent="direction_mlp")
    ledger = Ledger(budgets=[budget])
    ledger.post(cost_entry("polygon", "inference", Decimal(1000), "USD", T0))  # not this agent
    seen: list[BudgetAlert] = []
    total = ZERO
    for entry, spend in zip(costs_of("direction_mlp", spends), spends, strict=True):
        before = total
        total += spend
        ledger.post(entry)
        ledger.post(entry)  # a replay neither spends nor alerts
        alerts = ledger.pop_alerts()
        expected = [
            lvl
            for lvl in (Decimal("0.5"), Decimal("0.8"), Decimal(1))
            if before < lvl * 100 <= total
        ]
        assert [a.fraction for a in alerts] == expected
        for a in alerts:
            assert (a.agent, a.spent, a.limit, a.entry_id) == (
                "direction_mlp",
                total,
                Decimal(100),
                entry.id,
            )
            assert a.exhausted == (a.fraction == 1)
            assert a.period_start is None
        seen += alerts
    assert ledger.spent(budget) == total
    assert len(seen) == len({a.fraction for a in seen})
    assert any(a.exhausted for a in seen) == (total >= 100)


@settings(DETERMINISTIC, max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4),
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("30"), places=2),
        ),
        max_size=40,
    )
)
def test_windowed_budget_rolls_over(spends: list[tuple[int, Decimal]]) -> None:
    budget = Budget(
        currency="USD", limit=Decimal(50), agent="polygon", period=DAY, alert_at=(0.5, 0.8)
    )
    watch = BudgetWatch([budget])
    per_day: dict[int, Decimal] = {}
    fired: dict[int, list[Decimal]] = {}
    days = [d for d, _ in spends]
    for (day, spend), entry in zip(
        spends, costs_of("polygon", [s for _, s in spends], days), strict=True
    ):
        before = per_day.get(day, ZERO)
        per_day[day] = before + spend
        alerts = watch.observe(entry)
        expected = [
            lvl
            for lvl in (Decimal("0.5"), Decimal("0.8"), Decimal(1))
            if before < lvl * 50 <= per_day[day]
        ]
        assert [a.fraction for a in alerts] == expected
        start = dt.datetime(2024, 3, 1 + day, tzinfo=dt.UTC)  # windows start at UTC midnight
        assert all(a.period_start == start and a.spent == per_day[day] for a in alerts)
        fired.setdefault(day, []).extend(a.fraction for a in alerts)
    for day, levels in fired.items():
        assert len(levels) == len(set(levels))  # once per threshold per period
        assert (Decimal(1) in levels) == (per_day[day] >= 50)
        assert watch.spent(budget, T0 + day * DAY) == per_day[day]


def test_strategy_budget_counts_fees_and_late_budget_sees_history() -> None:
    ledger = Ledger()
    f = make_fill(1, "ETH/USDT", Side.BUY, Decimal(1), Decimal(3000), Decimal(6), "USDT")
    ledger.post(fill_entry(f))
    ledger.post(cost_entry("direction_mlp", "inference", Decimal(5), "USDT", T0, strategy="mom"))
    budget = Budget(currency="USDT", limit=Decimal(10), strategy="mom")
    alerts = ledger.add_budget(budget)
    assert [(a.agent, a.fraction, a.exhausted) for a in alerts] == [
        ("mom", Decimal("0.5"), False),
        ("mom", Decimal("0.8"), False),
        ("mom", Decimal(1), True),
    ]
    assert alerts[-1].spent == 11
    assert ledger.pop_alerts() == []  # returned, not queued
    ledger.post(cost_entry("direction_mlp", "inference", Decimal(5), "USDT", T0 + DAY))
    assert ledger.pop_alerts() == []  # already exhausted in this lifetime budget; other strategy


def test_rebate_lowers_spend_without_refiring() -> None:
    budget = Budget(currency="USDT", limit=Decimal(10), agent="mom", alert_at=(Decimal("0.5"),))
    ledger = Ledger(budgets=[budget])
    fee = make_fill(1, "ETH/USDT", Side.BUY, Decimal(1), Decimal(1), Decimal(6))
    rebate = make_fill(2, "ETH/USDT", Side.SELL, Decimal(1), Decimal(1), Decimal(-2))
    again = make_fill(3, "ETH/USDT", Side.BUY, Decimal(1), Decimal(1), Decimal(1))
    ledger.post(fill_entry(fee))
    assert [a.fraction for a in ledger.pop_alerts()] == [Decimal("0.5")]
    ledger.post(fill_entry(rebate))
    ledger.post(fill_entry(again))
    assert ledger.pop_alerts() == []
    assert ledger.spent(budget) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of agent or strategy"),
        ({"agent": "a", "strategy": "s"}, "exactly one of agent or strategy"),
        ({"agent": "a", "limit": Decimal(0)}, "must be > 0"),
        ({"agent": "a", "limit": 10.0}, "must be a Decimal"),
        ({"agent": "a", "period": dt.timedelta(0)}, "period"),
        ({"agent": "a", "alert_at": (1.5,)}, r"in \(0, 1\]"),
    ],
)
def test_bad_budgets_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"currency": "USD", "limit": Decimal(10)} | kwargs
    with pytest.raises(LedgerError, match=message):
        Budget(**args)  # type: ignore[arg-type]


def test_windowed_spent_needs_a_time() -> None:
    budget = Budget(currency="USD", limit=Decimal(1), agent="a", period=DAY)
    with pytest.raises(LedgerError, match="give the time"):
        BudgetWatch([budget]).spent(budget)
