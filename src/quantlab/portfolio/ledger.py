"""The payments ledger: double-entry bookkeeping in `Decimal` of trading cash flows and of every
cost the system's agents incur (strategies, data sources, model inference, venues).

Pure logic, no I/O; persistence comes later through a port.

Conventions
-----------
* An account is named hierarchically, ``root:segment:...``; the root gives its type:
  ``assets``, ``liabilities``, ``equity``, ``income``, ``expenses``. Every account holds ONE
  currency, fixed by its first posting; the helpers end account names with the currency
  (``assets:cash:BTC``, ``expenses:fees:binance:USDT``) so that is never ambiguous.
* Amounts are signed, **debit positive, credit negative**. `Ledger.balance` returns the signed
  debit balance: assets and expenses are normally positive, liabilities, equity and income
  normally negative. A short position is a negative ``assets:positions:<BASE>`` balance.
* Every entry's postings sum to zero per currency; a trade exchanges currencies through the
  ``equity:trading:<CUR>`` accounts (the "trading account" method), so each currency balances
  on its own. Holdings of a currency are ``assets:cash:<CUR>`` plus ``assets:positions:<CUR>``.
* Arithmetic is exact: any operation that would round raises instead of silently unbalancing.
* Fees are always paid from ``assets:cash:<fee currency>`` (quote, base or a third currency),
  so a position account equals the signed sum of fill quantities exactly.

Standard accounts used by the helpers::

    assets:cash:<CUR>                    cash
    assets:positions:<BASE>              traded positions (signed quantity)
    equity:trading:<CUR>                 currency exchange of trades
    equity:capital:<CUR>                 funding (deposits, withdrawals)
    expenses:fees:<venue>:<CUR>          trading fees (negative fee = rebate)
    expenses:<kind>:<agent>:<CUR>        data / API / inference costs
    liabilities:payable:<agent>:<CUR>    costs incurred but not paid yet
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from quantlab.core.errors import QuantlabError
from quantlab.core.ids import NAMESPACE
from quantlab.core.instruments import split_symbol
from quantlab.core.messages import Fill

ZERO = Decimal(0)
ONE = Decimal(1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Exact arithmetic: enough digits for any money amount, and a trap on any rounding.
_EXACT = decimal.Context(
    prec=120,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[
        decimal.Inexact,
        decimal.InvalidOperation,
        decimal.Overflow,
        decimal.DivisionByZero,
    ],
)


class LedgerError(QuantlabError, ValueError):
    """A journal entry, posting, account or budget is invalid; the message names it."""


class UnbalancedEntryError(LedgerError):
    """An entry's postings do not sum to zero in some currency."""


class DuplicateEntryError(LedgerError):
    """A different entry was posted under an id already in the ledger."""


def _add(a: Decimal, b: Decimal) -> Decimal:
    try:
        return _EXACT.add(a, b)
    except decimal.DecimalException as exc:  # pragma: no cover - needs > 120 digits
        raise LedgerError(f"cannot add {a} and {b} exactly: {exc!r}") from exc


def _mul(a: Decimal, b: Decimal) -> Decimal:
    try:
        return _EXACT.multiply(a, b)
    except decimal.DecimalException as exc:  # pragma: no cover - needs > 120 digits
        raise LedgerError(f"cannot multiply {a} by {b} exactly: {exc!r}") from exc


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for v in values:
        total = _add(total, v)
    return total


def _amount(what: str, value: object) -> Decimal:
    """`value` as a finite Decimal; floats, NaN and infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise LedgerError(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    d = Decimal(value)
    if not d.is_finite():
        raise LedgerError(f"{what} must be finite, got {d}")
    return d


def _segment(what: str, value: str) -> str:
    if not value or ":" in value or value != value.strip():
        raise LedgerError(f"{what} must be a non-empty name without ':' or edge spaces: {value!r}")
    return value


def _aware(what: str, value: dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise LedgerError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


class AccountType(StrEnum):
    """The type of an account, named by the root of its name."""

    ASSET = "assets"
    LIABILITY = "liabilities"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expenses"


def account_type(name: str) -> AccountType:
    """The type of account `name` (from its root); refuses malformed names."""
    parts = name.split(":")
    if len(parts) < 2 or any(not p or p != p.strip() for p in parts):
        raise LedgerError(
            f"account name {name!r} must be 'root:segment[:...]' with non-empty segments"
        )
    try:
        return AccountType(parts[0])
    except ValueError:
        roots = ", ".join(t.value for t in AccountType)
        raise LedgerError(f"account {name!r} has unknown root {parts[0]!r}; use {roots}") from None


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ":")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    type: AccountType
    currency: str


@dataclass(frozen=True, slots=True)
class Posting:
    """One leg of an entry: `amount` (debit positive) of `currency` on `account`."""

    account: str
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        account_type(self.account)
        _segment(f"currency of posting to {self.account}", self.currency)
        object.__setattr__(self, "amount", _amount(f"amount on {self.account}", self.amount))

    @property
    def type(self) -> AccountType:
        return account_type(self.account)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A balanced set of postings. `id` is deterministic, so a replayed event posts once."""

    id: str
    timestamp: dt.datetime
    memo: str
    agent: str
    postings: tuple[Posting, ...]
    strategy: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise LedgerError("journal entry id must not be empty")
        _aware(f"timestamp of entry {self.id!r}", self.timestamp)
        postings = tuple(self.postings)
        object.__setattr__(self, "postings", postings)
        if not postings:
            raise LedgerError(f"entry {self.id!r} has no postings")
        currencies: dict[str, str] = {}
        for p in postings:
            if not isinstance(p, Posting):
                raise LedgerError(f"entry {self.id!r}: {p!r} is not a Posting")
            seen = currencies.setdefault(p.account, p.currency)
            if seen != p.currency:
                raise LedgerError(
                    f"entry {self.id!r} posts account {p.account} in both {seen} and {p.currency}"
                )
        imbalance = self.imbalance()
        if imbalance:
            shown = ", ".join(f"{c} {v:+}" for c, v in sorted(imbalance.items()))
            raise UnbalancedEntryError(
                f"entry {self.id!r} ({self.memo!r}) does not balance: postings sum to {shown}"
            )

    def imbalance(self) -> dict[str, Decimal]:
        """Currencies whose postings do not sum to zero, with their sums (empty if balanced)."""
        sums: dict[str, Decimal] = {}
        for p in self.postings:
            sums[p.currency] = _add(sums.get(p.currency, ZERO), p.amount)
        return {c: v for c, v in sums.items() if v != 0}


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit for one agent or one strategy, in one currency.

    Spend is the net of the expense postings in `currency` of the entries whose `agent` (or
    `strategy`) matches. `period` None is a lifetime budget; a timedelta makes tumbling
    windows ``[anchor + k*period, anchor + (k+1)*period)`` (the entry's timestamp picks the
    window), so a daily budget rolls over at UTC midnight. Exhaustion (fraction 1) is always
    watched, whether or not `alert_at` lists it.
    """

    currency: str
    limit: Decimal
    agent: str | None = None
    strategy: str | None = None
    period: dt.timedelta | None = None
    alert_at: tuple[Decimal | float, ...] = (0.5, 0.8, 1.0)
    anchor: dt.datetime = EPOCH
    levels: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)
    """The alert levels as Decimals, ascending, always ending with 1."""

    def __post_init__(self) -> None:
        if (self.agent is None) == (self.strategy is None):
            raise LedgerError(
                f"a budget needs exactly one of agent or strategy, got agent={self.agent!r}, "
                f"strategy={self.strategy!r}"
            )
        limit = _amount(f"limit of budget for {self.key}", self.limit)
        if limit <= 0:
            raise LedgerError(f"limit of budget for {self.key} must be > 0, got {limit}")
        object.__setattr__(self, "limit", limit)
        if self.period is not None and self.period <= dt.timedelta(0):
            raise LedgerError(f"period of budget for {self.key} must be > 0, got {self.period}")
        _aware(f"anchor of budget for {self.key}", self.anchor)
        levels: list[Decimal] = []
        for a in self.alert_at:
            if isinstance(a, bool) or not isinstance(a, Decimal | float | int):
                raise LedgerError(f"alert level of budget for {self.key} must be a number: {a!r}")
            level = Decimal(str(a)) if isinstance(a, float) else Decimal(a)
            if not (level.is_finite() and 0 < level <= 1):
                raise LedgerError(f"alert level of budget for {self.key} must be in (0, 1]: {a!r}")
            levels.append(level)
        object.__setattr__(self, "levels", tuple(sorted(set(levels) | {ONE})))

    @property
    def key(self) -> str:
        """The agent or strategy the budget is for."""
        return self.agent if self.agent is not None else f"strategy {self.strategy}"

    def matches(self, entry: JournalEntry) -> bool:
        if self.agent is not None:
            return entry.agent == self.agent
        return entry.strategy == self.strategy

    def window(self, at: dt.datetime) -> tuple[int, dt.datetime | None]:
        """The index and start of the period holding `at` (0 and None for a lifetime budget)."""
        if self.period is None:
            return 0, None
        k = (at - self.anchor) // self.period
        return k, self.anchor + k * self.period

    def spend(self, entry: JournalEntry) -> Decimal:
        """What `entry` adds to this budget's spend (zero if it does not match)."""
        if not self.matches(entry):
            return ZERO
        return _sum(
            p.amount
            for p in entry.postings
            if p.currency == self.currency and p.type is AccountType.EXPENSE
        )


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """`spent` reached `fraction` of `limit` in the period starting `period_start`.

    `agent` is the budget's agent, or its strategy for a strategy budget. `exhausted` is True
    on the alert of fraction 1 (spent >= limit): the engine trips that agent's breaker.
    """

    agent: str
    spent: Decimal
    limit: Decimal
    fraction: Decimal
    exhausted: bool
    currency: str
    period_start: dt.datetime | None
    entry_id: str
    budget: Budget


class BudgetWatch:
    """Tracks spend per budget and period; reports each threshold once per period."""

    def __init__(self, budgets: Iterable[Budget] = ()) -> None:
        self._budgets: list[Budget] = []
        self._spent: dict[tuple[int, int], Decimal] = {}
        self._fired: dict[tuple[int, int], set[Decimal]] = {}
        for b in budgets:
            self.add(b)

    @property
    def budgets(self) -> tuple[Budget, ...]:
        return tuple(self._budgets)

    def add(self, budget: Budget, history: Iterable[JournalEntry] = ()) -> list[BudgetAlert]:
        """Watch `budget`, counting the already posted `history`; returns its crossings."""
        self._budgets.append(budget)
        index = len(self._budgets) - 1
        alerts: list[BudgetAlert] = []
        for entry in history:
            alerts.extend(self._observe_one(index, budget, entry))
        return alerts

    def spent(self, budget: Budget, at: dt.datetime | None = None) -> Decimal:
        """Spend of `budget` in the period holding `at` (any time for a lifetime budget)."""
        index = self._budgets.index(budget)
        if at is None and budget.period is not None:
            raise LedgerError(f"budget for {budget.key} is windowed: give the time `at`")
        k = budget.window(at)[0] if at is not None else 0
        return self._spent.get((index, k), ZERO)

    def observe(self, entry: JournalEntry) -> list[BudgetAlert]:
        """Count a newly posted entry; the thresholds it crossed, lowest first, per budget."""
        alerts: list[BudgetAlert] = []
        for index, budget in enumerate(self._budgets):
            alerts.extend(self._observe_one(index, budget, entry))
        return alerts

    def _observe_one(self, index: int, budget: Budget, entry: JournalEntry) -> list[BudgetAlert]:
        if not budget.matches(entry):
            return []
        amount = budget.spend(entry)
        k, start = budget.window(entry.timestamp)
        key = (index, k)
        spent = _add(self._spent.get(key, ZERO), amount)
        self._spent[key] = spent
        fired = self._fired.setdefault(key, set())
        alerts = []
        for level in budget.levels:
            if level not in fired and spent >= _mul(level, budget.limit):
                fired.add(level)
                alerts.append(
                    BudgetAlert(
                        agent=budget.agent if budget.agent is not None else str(budget.strategy),
                        spent=spent,
                        limit=budget.limit,
                        fraction=level,
                        exhausted=level == ONE,
                        currency=budget.currency,
                        period_start=start,
                        entry_id=entry.id,
                        budget=budget,
                    )
                )
        return alerts


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """Posts balanced entries, keeps balances, reports budget crossings (`pop_alerts`)."""

    def __init__(self, budgets: Iterable[Budget] = ()) -> None:
        self._entries: dict[str, JournalEntry] = {}
        self._accounts: dict[str, Account] = {}
        self._balances: dict[str, Decimal] = {}
        self._watch = BudgetWatch(budgets)
        self._alerts: list[BudgetAlert] = []

    def __repr__(self) -> str:
        return f"Ledger({len(self._entries)} entries, {len(self._accounts)} accounts)"

    @property
    def budgets(self) -> tuple[Budget, ...]:
        return self._watch.budgets

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._entries

    def __iter__(self) -> Iterator[JournalEntry]:
        return iter(self._entries.values())

    # --- posting

    def post(self, entry: JournalEntry) -> bool:
        """Post `entry`; False (nothing done) if this very entry is already posted.

        Raises `DuplicateEntryError` for a different entry under a posted id, and
        `LedgerError` if a posting's currency differs from its account's; either way nothing
        is posted. Budget crossings are queued for `pop_alerts`.
        """
        if not isinstance(entry, JournalEntry):
            raise LedgerError(f"can only post a JournalEntry, got {type(entry).__name__}")
        posted = self._entries.get(entry.id)
        if posted is not None:
            if posted == entry:
                return False
            raise DuplicateEntryError(
                f"entry id {entry.id!r} is already posted with different content: "
                f"posted {posted!r}, now {entry!r}"
            )
        imbalance = entry.imbalance()  # re-checked: the entry is frozen but not sealed
        if imbalance:
            raise UnbalancedEntryError(f"entry {entry.id!r} does not balance: {imbalance}")
        for p in entry.postings:
            account = self._accounts.get(p.account)
            if account is not None and account.currency != p.currency:
                raise LedgerError(
                    f"entry {entry.id!r} posts {p.amount} {p.currency} to {p.account}, "
                    f"an account in {account.currency}"
                )
        balances: dict[str, Decimal] = {}  # computed whole before anything changes
        for p in entry.postings:  # several postings may hit one account: fold in order
            before = balances.get(p.account, self._balances.get(p.account, ZERO))
            balances[p.account] = _add(before, p.amount)
        for p in entry.postings:
            if p.account not in self._accounts:
                self._accounts[p.account] = Account(p.account, p.type, p.currency)
        self._balances.update(balances)
        self._entries[entry.id] = entry
        self._alerts.extend(self._watch.observe(entry))
        return True

    def post_all(self, entries: Iterable[JournalEntry]) -> int:
        """Post each entry in turn; the number actually posted (replays count zero)."""
        return sum(1 for e in entries if self.post(e))

    # --- budgets

    def add_budget(self, budget: Budget) -> list[BudgetAlert]:
        """Watch `budget` from now on, counting entries already posted; returns its crossings."""
        return self._watch.add(budget, self._entries.values())

    def spent(self, budget: Budget, at: dt.datetime | None = None) -> Decimal:
        return self._watch.spent(budget, at)

    def pop_alerts(self) -> list[BudgetAlert]:
        """Budget crossings since the last call, in posting order."""
        alerts, self._alerts = self._alerts, []
        return alerts

    # --- queries

    def get(self, entry_id: str) -> JournalEntry | None:
        return self._entries.get(entry_id)

    def account(self, name: str) -> Account | None:
        return self._accounts.get(name)

    def accounts(self, prefix: str | None = None) -> list[Account]:
        return [a for n, a in sorted(self._accounts.items()) if prefix is None or _under(n, prefix)]

    def balance(self, account: str) -> Decimal:
        """Signed debit balance of `account` (zero if never posted)."""
        return self._balances.get(account, ZERO)

    def balances(self, prefix: str | None = None) -> dict[str, Decimal]:
        """Balances of the accounts at or under `prefix` (by whole segment), sorted by name."""
        return {
            n: b for n, b in sorted(self._balances.items()) if prefix is None or _under(n, prefix)
        }

    def totals(self, prefix: str | None = None) -> dict[str, Decimal]:
        """Sum of the balances at or under `prefix`, per currency."""
        out: dict[str, Decimal] = {}
        for name, value in self.balances(prefix).items():
            cur = self._accounts[name].currency
            out[cur] = _add(out.get(cur, ZERO), value)
        return out

    def trial_balance(self) -> dict[str, Decimal]:
        """Sum of all balances per currency; every value is zero in a sound ledger."""
        return self.totals()

    def cash(self, currency: str) -> Decimal:
        return self.balance(f"assets:cash:{currency}")

    def position(self, currency: str) -> Decimal:
        return self.balance(f"assets:positions:{currency}")

    def entries(
        self,
        agent: str | None = None,
        strategy: str | None = None,
        since: dt.datetime | None = None,
    ) -> list[JournalEntry]:
        """Posted entries in posting order, filtered by agent, strategy, timestamp >= since."""
        return [
            e
            for e in self._entries.values()
            if (agent is None or e.agent == agent)
            and (strategy is None or e.strategy == strategy)
            and (since is None or e.timestamp >= since)
        ]


# --------------------------------------------------------------------------- entry builders


def _entry_id(kind: str, *parts: object) -> str:
    name = json.dumps([kind, *(str(p) for p in parts)], separators=(",", ":"))
    return f"{kind}:{uuid.uuid5(NAMESPACE, name)}"


def fill_entry(
    fill: Fill,
    base: str | None = None,
    quote: str | None = None,
    *,
    agent: str | None = None,
) -> JournalEntry:
    """The entry of a trade; its id is ``fill:<fill_id>`` so a replayed fill posts once.

    A buy of q at p: ``assets:positions:<base>`` +q and ``assets:cash:<quote>`` -p*q, through
    ``equity:trading:<base>`` / ``equity:trading:<quote>``; a sell is the mirror. A nonzero fee
    goes to ``expenses:fees:<venue>:<fee currency>`` against ``assets:cash:<fee currency>``.
    `base`/`quote` default to `split_symbol(fill.symbol)`; `agent` defaults to the fill's
    strategy, else its venue.
    """
    if base is None or quote is None:
        b, q = split_symbol(fill.symbol)
        base = b if base is None else base
        quote = q if quote is None else quote
    _segment(f"base currency of {fill.symbol}", base)
    _segment(f"quote currency of {fill.symbol}", quote)
    if base == quote:
        raise LedgerError(f"fill {fill.fill_id} on {fill.symbol}: base and quote are both {base}")
    venue = _segment(f"venue of fill {fill.fill_id}", fill.venue)
    qty = _amount(f"quantity of fill {fill.fill_id}", fill.quantity)
    notional = _mul(_amount(f"price of fill {fill.fill_id}", fill.price), qty)
    fee = _amount(f"fee of fill {fill.fill_id}", fill.fee)
    if fill.side.sign < 0:
        qty, notional = qty.copy_negate(), notional.copy_negate()
    postings = [
        Posting(f"assets:positions:{base}", qty, base),
        Posting(f"equity:trading:{base}", qty.copy_negate(), base),
        Posting(f"equity:trading:{quote}", notional, quote),
        Posting(f"assets:cash:{quote}", notional.copy_negate(), quote),
    ]
    if fee != 0:
        fee_ccy = _segment(f"fee currency of fill {fill.fill_id}", fill.fee_currency)
        postings += [
            Posting(f"expenses:fees:{venue}:{fee_ccy}", fee, fee_ccy),
            Posting(f"assets:cash:{fee_ccy}", fee.copy_negate(), fee_ccy),
        ]
    side = "buy" if fill.side.sign > 0 else "sell"
    return JournalEntry(
        id=f"fill:{fill.fill_id}",
        timestamp=fill.timestamp,
        memo=f"{side} {fill.quantity} {fill.symbol} @ {fill.price} on {venue}",
        agent=agent or fill.strategy_id or venue,
        strategy=fill.strategy_id or None,
        postings=tuple(postings),
    )


def cost_entry(
    agent: str,
    kind: str,
    amount: Decimal,
    currency: str,
    at: dt.datetime,
    memo: str = "",
    strategy: str | None = None,
    *,
    payable: bool = False,
    entry_id: str | None = None,
) -> JournalEntry:
    """A cost `agent` incurred (``kind``: data, api, inference, ...).

    Debits ``expenses:<kind>:<agent>:<currency>``; credits ``assets:cash:<currency>``, or
    ``liabilities:payable:<agent>:<currency>`` when `payable` (settle it with `payment_entry`).
    `amount` must be > 0. The default id is derived from all the arguments: two identical
    costs at the same instant need distinct `entry_id`s (an invoice or request id).
    """
    _segment("agent", agent)
    _segment("cost kind", kind)
    _segment("currency", currency)
    value = _amount(f"{kind} cost of {agent}", amount)
    if value <= 0:
        raise LedgerError(f"{kind} cost of {agent} must be > 0, got {value}")
    _aware(f"time of {kind} cost of {agent}", at)
    credit = f"liabilities:payable:{agent}:{currency}" if payable else f"assets:cash:{currency}"
    return JournalEntry(
        id=entry_id
        or _entry_id("cost", agent, kind, value, currency, at.isoformat(), memo, strategy, payable),
        timestamp=at,
        memo=memo or f"{kind} cost of {agent}",
        agent=agent,
        strategy=strategy,
        postings=(
            Posting(f"expenses:{kind}:{agent}:{currency}", value, currency),
            Posting(credit, value.copy_negate(), currency),
        ),
    )


def payment_entry(
    agent: str,
    amount: Decimal,
    currency: str,
    at: dt.datetime,
    memo: str = "",
    *,
    entry_id: str | None = None,
) -> JournalEntry:
    """Pay (part of) what is owed to `agent`: debit its payable, credit cash. Not a new cost."""
    _segment("agent", agent)
    _segment("currency", currency)
    value = _amount(f"payment to {agent}", amount)
    if value <= 0:
        raise LedgerError(f"payment to {agent} must be > 0, got {value}")
    _aware(f"time of payment to {agent}", at)
    return JournalEntry(
        id=entry_id or _entry_id("payment", agent, value, currency, at.isoformat(), memo),
        timestamp=at,
        memo=memo or f"payment to {agent}",
        agent=agent,
        postings=(
            Posting(f"liabilities:payable:{agent}:{currency}", value, currency),
            Posting(f"assets:cash:{currency}", value.copy_negate(), currency),
        ),
    )


def funding_entry(
    currency: str,
    amount: Decimal,
    at: dt.datetime,
    memo: str = "",
    *,
    agent: str = "treasury",
    entry_id: str | None = None,
) -> JournalEntry:
    """Capital in (amount > 0) or out (amount < 0): ``assets:cash`` against
    ``equity:capital``."""
    _segment("currency", currency)
    value = _amount(f"funding in {currency}", amount)
    if value == 0:
        raise LedgerError(f"funding in {currency} must be nonzero")
    _aware(f"time of funding in {currency}", at)
    return JournalEntry(
        id=entry_id or _entry_id("funding", currency, value, at.isoformat(), memo, agent),
        timestamp=at,
        memo=memo or ("deposit" if value > 0 else "withdrawal") + f" of {abs(value)} {currency}",
        agent=agent,
        postings=(
            Posting(f"assets:cash:{currency}", value, currency),
            Posting(f"equity:capital:{currency}", value.copy_negate(), currency),
        ),
    )


# --------------------------------------------------------------------------- reconciliation


def expense_summary(ledger: Ledger) -> dict[str, dict[str, Decimal]]:
    """Per currency: expenses by kind (``fees``, ``data``, ...) and their ``total``."""
    out: dict[str, dict[str, Decimal]] = {}
    for account in ledger.accounts("expenses"):
        kind = account.name.split(":")[1]
        row = out.setdefault(account.currency, {"total": ZERO})
        value = ledger.balance(account.name)
        row[kind] = _add(row.get(kind, ZERO), value)
        row["total"] = _add(row["total"], value)
    return out


def reconcile_expenses(
    ledger: Ledger,
    fills: Iterable[Fill] = (),
    costs: Iterable[tuple[Decimal, str]] = (),
) -> dict[str, Decimal]:
    """Per currency, total ledger expenses minus (fees of `fills` + `costs` (amount, currency)).

    Pass every fill and cost posted: the ledger reconciles when every value is zero. Any
    currency that appears on either side is listed.
    """
    out = {cur: row["total"] for cur, row in expense_summary(ledger).items()}
    for fill in fills:
        if fill.fee != 0:
            out[fill.fee_currency] = _add(out.get(fill.fee_currency, ZERO), fill.fee.copy_negate())
    for amount, currency in costs:
        out[currency] = _add(out.get(currency, ZERO), amount.copy_negate())
    return out
