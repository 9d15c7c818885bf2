"""News as a source: an HTTP news endpoint (Alpaca or Polygon shape) polled into `NewsEvent`s."""

from quantlab.adapters.news.config import SHAPES, NewsDataConfig
from quantlab.adapters.news.data import NewsSource, SeenIds
from quantlab.adapters.news.parser import (
    HTTP_STATUS,
    HTTP_TIMEOUT,
    HTTP_TRANSPORT,
    RATE_LIMITED,
    NewsPage,
    parse_news,
)

__all__ = [
    "HTTP_STATUS",
    "HTTP_TIMEOUT",
    "HTTP_TRANSPORT",
    "RATE_LIMITED",
    "SHAPES",
    "NewsDataConfig",
    "NewsPage",
    "NewsSource",
    "SeenIds",
    "parse_news",
]
