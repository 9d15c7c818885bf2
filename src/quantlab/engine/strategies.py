"""Builds the configured strategy with its experts: rule experts, the ONNX model from the
registry (sha256-checked) and the pattern memory in Chroma."""

from __future__ import annotations

from pathlib import Path

from quantlab.config import Settings
from quantlab.signals import EmaCross
from quantlab.signals.experts import RULE_EXPERTS, ModelExpert, PatternExpert
from quantlab.signals.hedge_strategy import Expert, HedgeStrategy
from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
from quantlab.signals.patterns import Embedder, PatternMemory
from quantlab.signals.windows import CHANNELS
from quantlab.storage.vectors import ChromaVectorStore, make_client


def pattern_memory(s: Settings, run_dir: Path) -> PatternMemory:
    """The strategy's pattern memory: Chroma at `patterns.url`, or at `patterns.path`, or (by
    default) a PersistentClient inside the run's folder."""
    p = s.patterns
    client = make_client(url=p.url) if p.url else make_client(path=p.path or run_dir / "chroma")
    store = ChromaVectorStore(client, f"{p.collection}-{s.strategy.id}", p.dim)
    memory = PatternMemory(
        store,
        strategy_id=s.strategy.id,
        dim=p.dim,
        window=p.window,
        horizon=s.strategy.horizon,
        k=p.k,
        ttl_days=p.ttl_days,
        search=p.search,
    )
    memory.load()
    return memory


def build_strategy(s: Settings, *, feature_spec: str, run_dir: Path) -> EmaCross | HedgeStrategy:
    """The strategy `s.strategy` names, its experts built and its saved weights restored."""
    if s.strategy.name != "hedge":
        return EmaCross(s.features.fast, s.features.slow, strategy_id=s.strategy.id)
    experts: dict[str, Expert] = {}
    for name in s.strategy.experts:
        if name in RULE_EXPERTS:
            experts[name] = RULE_EXPERTS[name]
        elif name == "model":
            registry = ModelRegistry(Path(s.models.registry or BUNDLED_MODELS))
            model = registry.load(s.models.name, s.models.version, feature_spec=feature_spec)
            experts[name] = ModelExpert(model, name=name)
        elif name == "patterns":
            memory = pattern_memory(s, run_dir)
            embedder = Embedder(
                window=s.patterns.window, channels=len(CHANNELS), dim=s.patterns.dim
            )
            experts[name] = PatternExpert(
                memory,
                embedder,
                query_every=s.patterns.query_every,
                store_every=s.patterns.store_every,
            )
    hedge = HedgeStrategy(
        experts,
        strategy_id=s.strategy.id,
        horizon=s.strategy.horizon,
        min_strength=s.strategy.min_strength,
        eta=s.strategy.eta,
    )
    if s.strategy.state_file:
        hedge.load(s.strategy.state_file)
    return hedge
