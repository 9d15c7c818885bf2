"""Building market-data sources from configuration (`[[live.sources]]`)."""

from __future__ import annotations

from typing import Any

from quantlab.adapters.sim import ReplaySource, SyntheticSource
from quantlab.config import Settings, SourceConfig
from quantlab.core.clock import Clock
from quantlab.core.errors import ConfigError
from quantlab.ingest.ports import MarketDataSource


def build_source(spec: SourceConfig, settings: Settings, clock: Clock) -> MarketDataSource:
    """The adapter `spec.type` names, configured with the spec's other keys."""
    options: dict[str, Any] = dict(spec.model_extra or {})
    name = spec.name or spec.type
    where = f"live.sources[{spec.type}]"
    try:
        if spec.type == "synthetic":
            return SyntheticSource(name=name, clock=clock, **options)
        if spec.type == "replay":
            paths = options.pop("paths", list(settings.data.paths))
            return ReplaySource(paths, name=name, **options)
    except TypeError as exc:  # an unknown option: name it
        raise ConfigError(where, str(exc)) from exc
    raise ConfigError(where, f"source type {spec.type!r} is not available in this build")


def build_sources(settings: Settings, clock: Clock) -> list[MarketDataSource]:
    sources = [build_source(spec, settings, clock) for spec in settings.live.sources]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("live.sources", f"source names must be unique, got {names}")
    return sources
