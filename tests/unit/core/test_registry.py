"""SymbolRegistry: interning of symbols and exchanges to the ids of the packed record."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.core import CodecError, SymbolRegistry
from quantlab.core import registry as registry_module


def test_symbols_get_ids_in_first_seen_order() -> None:
    reg = SymbolRegistry()
    assert reg.symbol_id("BTC/USD") == 0
    assert reg.symbol_id("ETH/USD") == 1
    assert reg.symbol_id("BTC/USD") == 0
    assert reg.symbol_id("AAPL") == 2
    assert reg.symbols == ["BTC/USD", "ETH/USD", "AAPL"]
    assert len(reg) == 3


def test_interning_is_stable_over_many_lookups() -> None:
    reg = SymbolRegistry()
    first = {s: reg.symbol_id(s) for s in ("A", "B", "C")}
    for _ in range(3):
        for s in ("C", "A", "B", "D"):
            reg.symbol_id(s)
    assert {s: reg.symbol_id(s) for s in ("A", "B", "C")} == first
    assert reg.symbol_id("D") == 3


def test_ids_map_back_to_names() -> None:
    reg = SymbolRegistry(["BTC/USD", "ETH/USD"], ["coinbase", "binance"])
    assert reg.symbol(0) == "BTC/USD"
    assert reg.symbol(1) == "ETH/USD"
    assert reg.exchange(0) == "coinbase"
    assert reg.exchange(1) == "binance"


def test_exchanges_are_numbered_apart_from_symbols() -> None:
    reg = SymbolRegistry()
    assert reg.symbol_id("X") == 0
    assert reg.exchange_id("nyse") == 0
    assert reg.exchange_id("nasdaq") == 1
    assert reg.exchange_id("nyse") == 0
    assert reg.exchanges == ["nyse", "nasdaq"]
    assert len(reg) == 1  # len counts symbols


def test_constructor_lists_intern_in_order_and_dedup() -> None:
    reg = SymbolRegistry(["B", "A", "B"], ["x", "x", "y"])
    assert reg.symbols == ["B", "A"]
    assert reg.exchanges == ["x", "y"]


def test_name_lists_are_copies() -> None:
    reg = SymbolRegistry(["A"], ["x"])
    reg.symbols.append("B")
    reg.exchanges.clear()
    assert reg.symbols == ["A"]
    assert reg.exchanges == ["x"]


def test_empty_symbol_is_refused() -> None:
    with pytest.raises(CodecError, match="empty symbol"):
        SymbolRegistry().symbol_id("")


@pytest.mark.parametrize("bad", [3, 10, 2**32])
def test_unknown_symbol_id_raises_naming_the_id(bad: int) -> None:
    reg = SymbolRegistry(["A", "B", "C"])
    with pytest.raises(CodecError, match=rf"unknown symbol id {bad} \(registry holds 3\)"):
        reg.symbol(bad)


@pytest.mark.parametrize("bad", [2, 65_536])
def test_unknown_exchange_id_raises_naming_the_id(bad: int) -> None:
    reg = SymbolRegistry(exchanges=["x", "y"])
    with pytest.raises(CodecError, match=rf"unknown exchange id {bad} \(registry holds 2\)"):
        reg.exchange(bad)


def test_non_integer_id_raises_codec_error() -> None:
    reg = SymbolRegistry(["A"], ["x"])
    with pytest.raises(CodecError, match="unknown symbol id '0'"):
        reg.symbol("0")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"unknown exchange id 0\.0"):
        reg.exchange(0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("lookup", ["symbol", "exchange"])
def test_negative_id_is_unknown(lookup: str) -> None:
    reg = SymbolRegistry(["A", "B"], ["x", "y"])
    with pytest.raises(CodecError, match="-1"):
        getattr(reg, lookup)(-1)


def test_symbol_registry_full(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink the u32 id space to 3 ids (0, 1, 2) to test the boundary.
    monkeypatch.setattr(registry_module, "_U32_MAX", 2)
    reg = SymbolRegistry(["A", "B", "C"])
    assert reg.symbol_id("C") == 2
    with pytest.raises(CodecError, match=r"registry full.*'D'"):
        reg.symbol_id("D")
    assert reg.symbol_id("A") == 0  # known symbols still resolve


def test_exchange_registry_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_U16_MAX", 1)
    reg = SymbolRegistry(exchanges=["x", "y"])
    with pytest.raises(CodecError, match=r"exchange registry full.*'z'"):
        reg.exchange_id("z")


# -- persistence ---------------------------------------------------------------------------------


def test_round_trip_through_bytes_keeps_every_id() -> None:
    reg = SymbolRegistry()
    for s in ("BTC/USD", "ETH/USD", "AAPL", "BRK.B"):
        reg.symbol_id(s)
    for e in ("coinbase", "nyse"):
        reg.exchange_id(e)

    restored = SymbolRegistry.from_bytes(reg.to_bytes())
    assert restored.symbols == reg.symbols
    assert restored.exchanges == reg.exchanges
    for s in reg.symbols:
        assert restored.symbol_id(s) == reg.symbol_id(s)
    # New names continue the numbering.
    assert restored.symbol_id("MSFT") == 4
    assert restored.exchange_id("binance") == 2


def test_snapshot_is_json_and_deterministic() -> None:
    reg = SymbolRegistry(["B", "A"], ["x"])
    data = reg.to_bytes()
    assert msgspec.json.decode(data) == {"symbols": ["B", "A"], "exchanges": ["x"]}
    assert SymbolRegistry(["B", "A"], ["x"]).to_bytes() == data


def test_empty_registry_round_trips() -> None:
    restored = SymbolRegistry.from_bytes(SymbolRegistry().to_bytes())
    assert restored.symbols == []
    assert restored.exchanges == []


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[1, 2]", b'{"symbols": ["A"]}', b'{"symbols": [1], "exchanges": []}'],
)
def test_from_bytes_of_garbage_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError, match="not a symbol registry snapshot"):
        SymbolRegistry.from_bytes(data)


def test_from_bytes_refuses_a_snapshot_with_duplicates() -> None:
    with pytest.raises(CodecError):
        SymbolRegistry.from_bytes(b'{"symbols": ["A", "A", "B"], "exchanges": []}')


_names = st.text(min_size=1, max_size=12)


@settings(deadline=None)
@given(
    symbols=st.lists(_names, max_size=40),
    exchanges=st.lists(st.text(min_size=1, max_size=8), max_size=10),
)
def test_ids_are_first_seen_positions_and_survive_persistence(
    symbols: list[str], exchanges: list[str]
) -> None:
    reg = SymbolRegistry()
    ids = [reg.symbol_id(s) for s in symbols]
    ex_ids = [reg.exchange_id(e) for e in exchanges]

    unique = list(dict.fromkeys(symbols))
    assert ids == [unique.index(s) for s in symbols]
    assert ex_ids == [list(dict.fromkeys(exchanges)).index(e) for e in exchanges]

    restored = SymbolRegistry.from_bytes(reg.to_bytes())
    assert [restored.symbol(i) for i in ids] == symbols
    assert [restored.exchange(i) for i in ex_ids] == exchanges
