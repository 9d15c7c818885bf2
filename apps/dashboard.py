"""The live dashboard app served by `quantlab dashboard` (`panel serve apps/dashboard.py`)."""

from quantlab.dashboard import create_dashboard

create_dashboard().servable(title="quantlab")
