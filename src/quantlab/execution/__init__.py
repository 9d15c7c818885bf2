"""Execution: order builder, router, order tracker and the execution engine; venue ports."""

from quantlab.execution.builder import OrderBuilder, limit_price
from quantlab.execution.engine import ExecutionEngine
from quantlab.execution.ports import (
    OrderRecord,
    OrderStore,
    Venue,
    VenueError,
    VenueListener,
    VenueOrderState,
    VenueRejectedError,
    VenueReport,
    VenueUnknownError,
)
from quantlab.execution.router import Router
from quantlab.execution.tracker import TRANSITIONS, OrderTracker, check_transition

__all__ = [
    "TRANSITIONS",
    "ExecutionEngine",
    "OrderBuilder",
    "OrderRecord",
    "OrderStore",
    "OrderTracker",
    "Router",
    "Venue",
    "VenueError",
    "VenueListener",
    "VenueOrderState",
    "VenueRejectedError",
    "VenueReport",
    "VenueUnknownError",
    "check_transition",
    "limit_price",
]
