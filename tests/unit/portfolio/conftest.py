"""One real backtest (ETH/BTC, January 2018) shared by the equity-curve and tear-sheet tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import polars as pl
import pytest

from quantlab.adapters.sim.data import read_bars
from quantlab.config import load_settings
from quantlab.engine import Node
from quantlab.engine.result import RunResult


@pytest.fixture(scope="session")
def eth_backtest(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunResult, pl.DataFrame]]:
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("QUANTLAB_"):
                mp.delenv(key)
        mp.setenv("QUANTLAB_STORAGE__STATE_DIR", str(tmp_path_factory.mktemp("state")))
        s = load_settings(data={"symbols": ["ETH/BTC"]})
        result = Node(s, run_dir=tmp_path_factory.mktemp("run")).run()
        yield result, read_bars(list(s.data.paths), symbols=s.data.symbols)
