"""Simulation adapters: the synthetic source, the replay source and the paper venue."""

from quantlab.adapters.sim.data import bundled_dir, bundled_files, read_bars, resolve
from quantlab.adapters.sim.paper import PaperVenue, PaperVenueConfig
from quantlab.adapters.sim.replay import ReplaySource
from quantlab.adapters.sim.synthetic import SyntheticSource

__all__ = [
    "PaperVenue",
    "PaperVenueConfig",
    "ReplaySource",
    "SyntheticSource",
    "bundled_dir",
    "bundled_files",
    "read_bars",
    "resolve",
]
