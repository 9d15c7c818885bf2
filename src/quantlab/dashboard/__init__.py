"""The live dashboard: `data` turns the engine's monitor snapshot into frames, `app` lays
them out in Panel (`quantlab dashboard` serves ``apps/dashboard.py``)."""

from quantlab.dashboard.app import Dashboard, create_dashboard

__all__ = ["Dashboard", "create_dashboard"]
