"""Execution: order builder, router, order tracker and the execution engine; venue ports."""

from quantlab.execution.builder import OrderBuilder, limit_price
from quantlab.execution.engine import ExecutionEngine
from quantlab.execution.ports import OrderRecord, OrderStore, Venue, VenueListener, VenueReport
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
    "VenueListener",
    "VenueReport",
    "check_transition",
    "limit_price",
]
