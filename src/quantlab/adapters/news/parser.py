"""Pure parsing of news pages (Alpaca and Polygon shapes) into `NewsEvent`s and rejects.

Alpaca ``/v1beta1/news``: ``{"news": [{"id": 24843171, "headline", "created_at", "url",
"symbols", "source", ...}], "next_page_token": ...}``. Polygon ``/v2/reference/news``:
``{"results": [{"id": "...", "title", "published_utc", "article_url", "tickers",
"publisher": {"name"}}], "next_url": ...}``. Times are RFC 3339 (a missing offset means
UTC). Nothing here raises on bad input: a bad body is one reject, a bad article is one reject
and the others are kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from quantlab.core.messages import NewsEvent
from quantlab.ingest.items import (
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Reject,
    decode_error_reason,
    reject,
)

# Transport-level reasons (the request failed; nothing was parsed).
HTTP_STATUS: Final = "http_status"
HTTP_TIMEOUT: Final = "http_timeout"
HTTP_TRANSPORT: Final = "http_transport"
RATE_LIMITED: Final = "rate_limited"


class NewsPage(msgspec.Struct, frozen=True):
    """One page: articles and rejects, the cursor of the next page, and whether the body
    itself was usable (``valid=False``: the page is one reject)."""

    items: list[NewsEvent | Reject]
    cursor: str | None
    valid: bool = True


class _ArticleError(Exception):
    """An article field is missing or has the wrong type (a `wrong_type` reject)."""


def parse_news(body: bytes | str, shape: str, symbols: Mapping[str, str]) -> NewsPage:
    """Parse one page of `shape` (``"alpaca"`` or ``"polygon"``).

    `symbols` maps vendor tickers to quantlab symbols; an article's other tickers are
    dropped, and an article naming none of ours is rejected ``unknown_symbol``.
    The cursor is Alpaca's ``next_page_token`` or Polygon's ``next_url``.
    """
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        detail = f"{shape} news body: {exc}"
        return NewsPage([reject(decode_error_reason(exc), detail, body)], None, valid=False)
    key, cursor_key = ("news", "next_page_token") if shape == "alpaca" else ("results", "next_url")
    if not isinstance(doc, dict) or not isinstance(doc.get(key, []), list):
        detail = f"{shape} news body must be an object with a '{key}' list"
        return NewsPage([reject(WRONG_TYPE, detail, body)], None, valid=False)
    cursor = doc.get(cursor_key)
    items: list[NewsEvent | Reject] = []
    for article in doc.get(key, []):
        try:
            event = _alpaca(article) if shape == "alpaca" else _polygon(article)
        except _ArticleError as exc:
            items.append(reject(WRONG_TYPE, f"{shape} news article: {exc}", article))
            continue
        ours = [symbols[s] for s in event.symbols if s in symbols]
        if not ours:
            detail = f"news {event.id} names none of our symbols: {event.symbols[:10]}"
            items.append(reject(UNKNOWN_SYMBOL, detail, article))
            continue
        items.append(msgspec.structs.replace(event, symbols=list(dict.fromkeys(ours))))
    return NewsPage(items, cursor if isinstance(cursor, str) and cursor else None)


def _alpaca(article: Any) -> NewsEvent:
    if not isinstance(article, dict):
        raise _ArticleError(f"expected an object, got {type(article).__name__}")
    return NewsEvent(
        id=_id(article.get("id")),
        symbols=_symbols(article.get("symbols")),
        headline=_text(article, "headline"),
        source=_text(article, "source", required=False),
        url=_text(article, "url", required=False),
        timestamp=_time(article.get("created_at")),
    )


def _polygon(article: Any) -> NewsEvent:
    if not isinstance(article, dict):
        raise _ArticleError(f"expected an object, got {type(article).__name__}")
    publisher = article.get("publisher")
    source = _text(publisher, "name", required=False) if isinstance(publisher, dict) else ""
    return NewsEvent(
        id=_id(article.get("id")),
        symbols=_symbols(article.get("tickers")),
        headline=_text(article, "title"),
        source=source,
        url=_text(article, "article_url", required=False),
        timestamp=_time(article.get("published_utc")),
    )


def _id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise _ArticleError(f"'id' must be a non-empty string or integer, got {value!r}")
    return str(value)


def _text(article: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = article.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _ArticleError(f"{key!r} must be a {'non-empty ' if required else ''}string")
    return value


def _symbols(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _ArticleError(f"symbols must be a list of strings, got {value!r}")
    return value


def _time(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _ArticleError(f"time must be an RFC 3339 string, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value)
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise _ArticleError(f"time {value!r} is not an RFC 3339 UTC time") from None
