"""The `Component` protocol: a stage that subscribes and publishes on the bus."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from quantlab.bus.base import Bus


@runtime_checkable
class Component(Protocol):
    name: str

    async def start(self, bus: Bus) -> None:
        """Subscribe to what it consumes; keep `bus` to publish."""
        ...

    async def stop(self) -> None:
        """Flush and release what it holds."""
        ...
