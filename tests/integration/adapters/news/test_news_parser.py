"""News parser: Alpaca's and Polygon's documented shapes, and every kind of bad input."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.adapters.news import NewsDataConfig, SeenIds, parse_news
from quantlab.core.errors import ConfigError
from quantlab.core.messages import NewsEvent
from quantlab.ingest.items import (
    MALFORMED_JSON,
    TRUNCATED_FRAME,
    UNKNOWN_SYMBOL,
    WRONG_TYPE,
    Reject,
)

SYMBOLS = {"AAPL": "AAPL", "TSLA": "TSLA"}
# Alpaca's documented example (GET /v1beta1/news).
ALPACA = {
    "id": 24843171,
    "headline": "Apple Leader in Phone Sales in China for Second Straight Month in November",
    "author": "Bibhu Pattnaik",
    "created_at": "2021-12-31T11:08:42Z",
    "updated_at": "2021-12-31T11:08:43Z",
    "summary": "This ad-free experience was provided by Benzinga Pro.",
    "content": "",
    "images": [],
    "url": "https://www.benzinga.com/news/21/12/24843171/apple-leader-in-phone-sales",
    "symbols": ["AAPL"],
    "source": "benzinga",
}
# Polygon's documented example (GET /v2/reference/news), trimmed.
POLYGON = {
    "id": "8ec638777ca03b553ae516761c2a22ba2fdd2f37befae3ab6fdab74e9e5193eb",
    "publisher": {"name": "Investing.com", "homepage_url": "https://www.investing.com/"},
    "title": "Markets are underestimating Fed cuts: UBS By Investing.com - Investing.com UK",
    "author": "Sam Boughedda",
    "published_utc": "2024-06-24T18:33:53Z",
    "article_url": "https://uk.investing.com/news/stock-market-news/markets-are-underestimating",
    "tickers": ["UBS", "AAPL"],
    "description": "UBS analysts warn that markets are underestimating ...",
}


def alpaca(*articles: object, token: object = None) -> bytes:
    return msgspec.json.encode({"news": list(articles), "next_page_token": token})


def polygon(*articles: object, next_url: object = None) -> bytes:
    return msgspec.json.encode({"results": list(articles), "status": "OK", "next_url": next_url})


def events(items: list[NewsEvent | Reject]) -> list[NewsEvent]:
    return [i for i in items if isinstance(i, NewsEvent)]


def reasons(items: list[NewsEvent | Reject]) -> list[str]:
    return [i.reason for i in items if isinstance(i, Reject)]


def test_alpaca_sample() -> None:
    page = parse_news(alpaca(ALPACA), "alpaca", SYMBOLS)
    assert page.valid
    assert page.cursor is None
    assert page.items == [
        NewsEvent(
            id="24843171",
            symbols=["AAPL"],
            headline=ALPACA["headline"],  # type: ignore[arg-type]
            source="benzinga",
            url=ALPACA["url"],  # type: ignore[arg-type]
            timestamp=dt.datetime(2021, 12, 31, 11, 8, 42, tzinfo=dt.UTC),
        )
    ]


def test_polygon_sample_keeps_only_our_symbols() -> None:
    body = polygon(POLYGON, next_url="https://api.polygon.io/x?cursor=1")
    page = parse_news(body, "polygon", SYMBOLS)
    [event] = events(page.items)
    assert event.id == POLYGON["id"]
    assert event.symbols == ["AAPL"]  # UBS is not one of ours
    assert (event.headline, event.source) == (POLYGON["title"], "Investing.com")
    assert event.url == POLYGON["article_url"]
    assert event.timestamp == dt.datetime(2024, 6, 24, 18, 33, 53, tzinfo=dt.UTC)
    assert page.cursor == "https://api.polygon.io/x?cursor=1"


def test_alpaca_cursor_and_several_symbols() -> None:
    article = {**ALPACA, "symbols": ["TSLA", "NIO", "AAPL", "TSLA"]}
    page = parse_news(alpaca(article, token="abc"), "alpaca", SYMBOLS)  # noqa: S106
    assert events(page.items)[0].symbols == ["TSLA", "AAPL"]
    assert page.cursor == "abc"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2021-12-31T11:08:42Z", dt.datetime(2021, 12, 31, 11, 8, 42, tzinfo=dt.UTC)),
        ("2021-12-31T06:08:42-05:00", dt.datetime(2021, 12, 31, 11, 8, 42, tzinfo=dt.UTC)),
        ("2021-12-31T11:08:42", dt.datetime(2021, 12, 31, 11, 8, 42, tzinfo=dt.UTC)),
        ("2021-12-31T11:08:42.123Z", dt.datetime(2021, 12, 31, 11, 8, 42, 123000, tzinfo=dt.UTC)),
    ],
)
def test_times_become_aware_utc(stamp: str, expected: dt.datetime) -> None:
    [event] = events(parse_news(alpaca({**ALPACA, "created_at": stamp}), "alpaca", SYMBOLS).items)
    assert event.timestamp == expected
    assert event.timestamp.tzinfo is dt.UTC


def test_optional_fields_may_be_missing() -> None:
    article = {k: v for k, v in ALPACA.items() if k not in ("url", "source", "author")}
    [event] = events(parse_news(alpaca(article), "alpaca", SYMBOLS).items)
    assert (event.url, event.source) == ("", "")
    pg = {k: v for k, v in POLYGON.items() if k not in ("publisher", "article_url")}
    [event] = events(parse_news(polygon(pg), "polygon", SYMBOLS).items)
    assert (event.url, event.source) == ("", "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", MALFORMED_JSON),
        (b'{"news": [{"id": 1', TRUNCATED_FRAME),
        (b"", TRUNCATED_FRAME),
        (b"[]", WRONG_TYPE),
        (b'{"news": {"id": 1}}', WRONG_TYPE),
        (b'"news"', WRONG_TYPE),
    ],
)
def test_bad_bodies_are_one_reject_and_invalid(body: bytes, reason: str) -> None:
    page = parse_news(body, "alpaca", SYMBOLS)
    assert not page.valid
    assert reasons(page.items) == [reason]
    assert page.items[0].raw == body  # type: ignore[union-attr]


def test_body_without_the_list_is_an_empty_page() -> None:
    page = parse_news(b'{"next_page_token": null}', "alpaca", SYMBOLS)
    assert page.valid
    assert page.items == []


@pytest.mark.parametrize(
    ("article", "reason"),
    [
        ({**ALPACA, "symbols": ["NIO"]}, UNKNOWN_SYMBOL),
        ({**ALPACA, "symbols": []}, UNKNOWN_SYMBOL),
        ({**ALPACA, "symbols": "AAPL"}, WRONG_TYPE),
        ({**ALPACA, "symbols": [1]}, WRONG_TYPE),
        ({**ALPACA, "id": None}, WRONG_TYPE),
        ({**ALPACA, "id": True}, WRONG_TYPE),
        ({**ALPACA, "id": ""}, WRONG_TYPE),
        ({**ALPACA, "headline": ""}, WRONG_TYPE),
        ({**ALPACA, "headline": 5}, WRONG_TYPE),
        ({k: v for k, v in ALPACA.items() if k != "headline"}, WRONG_TYPE),
        ({**ALPACA, "created_at": "yesterday"}, WRONG_TYPE),
        ({**ALPACA, "created_at": 1640948922}, WRONG_TYPE),
        ({**ALPACA, "created_at": "0001-01-01T00:00:00+05:00"}, WRONG_TYPE),
        ({**ALPACA, "url": 3}, WRONG_TYPE),
        ("an article", WRONG_TYPE),
        (None, WRONG_TYPE),
    ],
)
def test_bad_article_is_rejected_and_the_others_kept(article: object, reason: str) -> None:
    good = {**ALPACA, "id": 1}
    page = parse_news(alpaca(good, article), "alpaca", SYMBOLS)
    assert page.valid
    assert reasons(page.items) == [reason]
    assert [e.id for e in events(page.items)] == ["1"]


@pytest.mark.parametrize(
    "article",
    [
        {**POLYGON, "tickers": None},
        {**POLYGON, "title": None},
        {**POLYGON, "publisher": {"name": 7}},
        {**POLYGON, "published_utc": "2024-13-45"},
    ],
)
def test_bad_polygon_article(article: object) -> None:
    page = parse_news(polygon(article, POLYGON), "polygon", SYMBOLS)
    assert reasons(page.items) == [WRONG_TYPE]
    assert len(events(page.items)) == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=25),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=15,
)
_article = st.fixed_dictionaries(
    {},
    optional={
        k: _json | st.just(v) for k, v in {**ALPACA, **POLYGON, "publisher": {"name": "x"}}.items()
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_article | _json, max_size=4), st.sampled_from(["alpaca", "polygon"]))
def test_parser_never_raises(articles: list[object], shape: str) -> None:
    key = "news" if shape == "alpaca" else "results"
    page = parse_news(msgspec.json.encode({key: articles}), shape, SYMBOLS)
    assert all(isinstance(i, NewsEvent | Reject) for i in page.items)


def test_seen_ids_are_bounded_oldest_first() -> None:
    seen = SeenIds(3)
    assert [seen.add(x) for x in "abca"] == [True, True, True, False]
    assert seen.add("d")  # forgets "a"
    assert len(seen) == 3
    assert seen.add("a")
    assert not seen.add("d")


def test_config_rejects_typos_and_bad_values() -> None:
    typo = {"url": "http://x", "symbols": ["AAPL"], "pol_interval_s": 1}
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert(typo, NewsDataConfig)
    cfg = msgspec.convert(
        {"url": "http://x/n", "symbols": ["AAPL"], "start": "2024-01-02T00:00:00Z"},
        NewsDataConfig,
    )
    assert cfg.start == dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="shape"):
        NewsDataConfig(url="http://x", symbols=("AAPL",), shape="reuters")
    with pytest.raises(ConfigError, match="symbols"):
        NewsDataConfig(url="http://x", symbols=("news.*",))
    with pytest.raises(ConfigError, match="poll_interval_s"):
        NewsDataConfig(url="http://x", symbols=("AAPL",), poll_interval_s=0)
    with pytest.raises(ConfigError, match="start"):
        NewsDataConfig(url="http://x", symbols=("AAPL",), start=dt.datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="url"):
        NewsDataConfig(url="ftp://x", symbols=("AAPL",))
