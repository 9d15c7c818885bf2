"""Interning of symbols and exchanges to the small integer ids of the packed record."""

from __future__ import annotations

import msgspec

from quantlab.core.errors import CodecError

_U32_MAX = 2**32 - 1
_U16_MAX = 2**16 - 1


class _Snapshot(msgspec.Struct, frozen=True):
    symbols: list[str]
    exchanges: list[str]


class SymbolRegistry:
    """Two-way maps symbol <-> u32 id and exchange <-> u16 id, in first-seen order.

    Ids are positions in insertion order, so a registry persisted with the data (`to_bytes`)
    decodes the same records to the same names forever.
    """

    def __init__(self, symbols: list[str] | None = None, exchanges: list[str] | None = None):
        self._symbols: list[str] = []
        self._symbol_ids: dict[str, int] = {}
        self._exchanges: list[str] = []
        self._exchange_ids: dict[str, int] = {}
        for s in symbols or []:
            self.symbol_id(s)
        for e in exchanges or []:
            self.exchange_id(e)

    def symbol_id(self, symbol: str) -> int:
        """The id of `symbol`, interning it if new."""
        found = self._symbol_ids.get(symbol)
        if found is not None:
            return found
        if not symbol:
            raise CodecError("cannot intern an empty symbol")
        if len(self._symbols) > _U32_MAX:
            raise CodecError(f"symbol registry full ({_U32_MAX + 1} ids), cannot add {symbol!r}")
        self._symbol_ids[symbol] = len(self._symbols)
        self._symbols.append(symbol)
        return len(self._symbols) - 1

    def exchange_id(self, exchange: str) -> int:
        found = self._exchange_ids.get(exchange)
        if found is not None:
            return found
        if not exchange:
            raise CodecError("cannot intern an empty exchange name")
        if len(self._exchanges) > _U16_MAX:
            raise CodecError(f"exchange registry full, cannot add {exchange!r}")
        self._exchange_ids[exchange] = len(self._exchanges)
        self._exchanges.append(exchange)
        return len(self._exchanges) - 1

    def symbol(self, symbol_id: int) -> str:
        if not isinstance(symbol_id, int) or not 0 <= symbol_id < len(self._symbols):
            raise CodecError(
                f"unknown symbol id {symbol_id!r} (registry holds {len(self._symbols)})"
            )
        return self._symbols[symbol_id]

    def exchange(self, exchange_id: int) -> str:
        if not isinstance(exchange_id, int) or not 0 <= exchange_id < len(self._exchanges):
            raise CodecError(
                f"unknown exchange id {exchange_id!r} (registry holds {len(self._exchanges)})"
            )
        return self._exchanges[exchange_id]

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    @property
    def exchanges(self) -> list[str]:
        return list(self._exchanges)

    def __len__(self) -> int:
        return len(self._symbols)

    def to_bytes(self) -> bytes:
        """Serialise (JSON) for persisting beside the data it encodes."""
        return msgspec.json.encode(_Snapshot(self._symbols, self._exchanges))

    @classmethod
    def from_bytes(cls, data: bytes) -> SymbolRegistry:
        try:
            snap = msgspec.json.decode(data, type=_Snapshot)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # msgspec raises the last two for bad UTF-8 and a nesting deeper than its limit.
            raise CodecError(f"not a symbol registry snapshot: {exc}") from None
        for what, names in (("symbol", snap.symbols), ("exchange", snap.exchanges)):
            if len(set(names)) != len(names):
                dupes = sorted({n for n in names if names.count(n) > 1})
                raise CodecError(f"registry snapshot repeats {what} names {dupes}")
        return cls(snap.symbols, snap.exchanges)
