"""The Hedge ensemble over all experts (rules, the ONNX model, the pattern memory) on real
features: reproducible, weights published, neighbours explained, nothing from the future."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl
import pytest

from quantlab.core.clock import SimulatedClock
from quantlab.features import compute, get_spec
from quantlab.signals.experts import RULE_EXPERTS, ModelExpert, PatternExpert
from quantlab.signals.hedge_strategy import Expert, HedgeStrategy
from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
from quantlab.signals.patterns import Embedder, PatternMemory
from quantlab.signals.strategy import StrategyContext
from quantlab.signals.windows import CHANNELS
from quantlab.storage.vectors import ChromaVectorStore, make_client

CTX = StrategyContext(clock=SimulatedClock(0), assumed_spread_bps=5.0)


@pytest.fixture(scope="module")
def features(data_dir: Path) -> pl.DataFrame:
    bars = pl.read_parquet(data_dir / "binance_btc_pairs_5m_2018-01.parquet")
    keep = ["ETH/BTC", "LTC/BTC", "XMR/BTC"]
    return compute(bars.filter(pl.col("symbol").is_in(keep)).sort("timestamp"))


def strategy(tmp_path: Path, *, query_every: int = 1) -> HedgeStrategy:
    model = ModelRegistry(BUNDLED_MODELS).load("direction_mlp", feature_spec=get_spec("default").id)
    store = ChromaVectorStore(make_client(path=tmp_path / "chroma"), "patterns-test", 512)
    memory = PatternMemory(store, strategy_id="hedge", dim=512, window=64, horizon=12, k=10)
    experts: dict[str, Expert] = {
        **RULE_EXPERTS,
        "model": ModelExpert(model),
        "patterns": PatternExpert(
            memory, Embedder(64, len(CHANNELS), 512), query_every=query_every
        ),
    }
    return HedgeStrategy(experts, strategy_id="hedge", horizon=12)


def run(strat: HedgeStrategy, features: pl.DataFrame, rows: int = 300) -> list:
    out = []
    for chunk in features.iter_slices(rows):
        out += strat.on_features(chunk, CTX)
    return out


def test_all_experts_trade_learn_and_reproduce(features: pl.DataFrame, tmp_path: Path) -> None:
    frame = features.head(9_000)
    a = strategy(tmp_path / "a")
    signals = run(a, frame)
    assert signals
    assert set(a.weights) == {*RULE_EXPERTS, "model", "patterns"}
    assert sum(a.weights.values()) == pytest.approx(1.0)
    assert a.hedge.rounds == 30  # one round per batch, each with resolved outcomes
    m = a.metrics()["experts"]
    assert m["patterns"]["queries"] > 0
    assert m["patterns"]["size"] > 0
    assert m["model"]["rows"] > 0
    # every signal's features: the score, then each expert's advice in [-1, 1]
    for s in signals:
        assert len(s.features) == 1 + len(a.experts)
        assert all(-1.0 <= v <= 1.0 for v in s.features[1:])
    explained = [s for s in signals if "pattern_neighbours" in s.metadata]
    assert explained, "signals made on a fresh pattern query name their neighbours"
    for s in explained:
        ts = s.timestamp.timestamp()
        for pid in s.metadata["pattern_neighbours"].split(","):
            # strategy:{id}:pattern:{ts_ns}:{symbol}: the neighbour lies in the past
            assert pid.startswith("strategy:hedge:pattern:")
            assert int(pid.split(":")[3]) / 1e9 < ts
    # same data, same experts -> the very same signals
    b = strategy(tmp_path / "b")
    again = run(b, frame)
    assert [s.signal_id for s in again] == [s.signal_id for s in signals]
    assert again == signals
    assert b.weights == a.weights


def test_weights_are_published_after_each_round(features: pl.DataFrame, tmp_path: Path) -> None:
    strat = strategy(tmp_path)
    now = CTX.clock.now()
    published = []
    for chunk in itertools.islice(features.iter_slices(300), 6):
        strat.on_features(chunk, CTX)
        msg = strat.weights_message(now)
        if msg is not None:
            published.append(msg)
        assert strat.weights_message(now) is None  # once per round
    assert [m.rounds for m in published] == list(range(1, len(published) + 1))
    assert published[-1].weights == strat.weights
    assert set(published[-1].advice) == set(strat.experts)


def test_a_symbol_is_queried_once_per_batch_at_its_latest_row(
    features: pl.DataFrame, tmp_path: Path
) -> None:
    strat = strategy(tmp_path, query_every=1)
    expert = strat.experts["patterns"]
    assert isinstance(expert, PatternExpert)
    run(strat, features.head(3_000), rows=300)
    # 10 batches x 3 symbols, minus batches before the first full 64-row window
    assert 3 * 8 <= expert.queries <= 3 * 10
