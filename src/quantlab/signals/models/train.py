"""Training: torch models over feature windows, purged walk-forward CV, ONNX export, registry.

The only quantlab module that imports torch (the ``ml`` extra); production loads what it writes
with onnxruntime (`quantlab.signals.models.onnx_model`).

* **Models.** `WindowNet` wraps a body, an MLP over the flattened ``(W, C)`` window or a small
  GRU over its ``W`` steps, with the input normalisation (per-channel mean and std of the
  training windows) baked in as buffers, so the exported graph takes raw windows. Its output is
  ``(batch,)``: ``sigmoid(logit)``, the probability of an up move over `horizon` rows
  (target ``direction``), or the expected forward log return (target ``return``; trained on
  returns divided by their training std, which the graph multiplies back).
* **Reproducible.** Same seed and data give bit-identical weights: the weights are initialised
  under ``torch.manual_seed(seed)`` in a forked RNG (the caller's RNG is untouched), mini-batch
  order comes from a ``torch.Generator`` seeded with `seed`, training runs single-threaded with
  ``torch.use_deterministic_algorithms(True)`` (both restored afterwards), there is no dropout,
  and row subsampling is a fixed stride (no numpy randomness at all).
* **Validation.** `cross_validate` fits one model per purged walk-forward fold
  (`dataset.walk_forward_splits`), normalised with that fold's training rows only, and scores
  it on the fold; `train_and_register` then fits on all rows, exports, checks parity and
  registers.
* **Export.** ``torch.onnx.export(dynamo=True, external_data=False)`` with a dynamic batch;
  `export_onnx` checks onnxruntime against torch on real windows and raises
  `ModelParityError` if any output differs by 1e-5 or more.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxscript  # the dynamo exporter's backend: fail at import, not after training
import polars as pl
import torch
from torch import nn

from quantlab.core.errors import ConfigError, DataError
from quantlab.signals.models.dataset import (
    LabeledWindows,
    label_windows,
    score,
    walk_forward_splits,
)
from quantlab.signals.models.onnx_model import INPUT, OUTPUT, ModelParityError, session
from quantlab.signals.models.registry import ModelEntry, ModelRegistry, TrainingWindow
from quantlab.signals.windows import CHANNELS

PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    The defaults are the bundled ``direction_mlp``; the bundled ``direction_gru`` is
    ``TrainConfig(kind="gru", hidden=16, epochs=2, lr=1e-3)`` (see ``make model``).
    """

    kind: Literal["mlp", "gru"] = "mlp"
    target: Literal["direction", "return"] = "direction"
    window: int = 32
    horizon: int = 12
    hidden: int = 32
    epochs: int = 2
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    stride: int = 1  # train on every stride-th labelled row (tests use larger strides)
    n_splits: int = 4
    embargo: int = 0  # time steps, on top of purging
    seed: int = 7

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "gru"):
            raise ConfigError("kind", f"expected 'mlp' or 'gru', got {self.kind!r}")
        if self.target not in ("direction", "return"):
            raise ConfigError("target", f"expected 'direction' or 'return', got {self.target!r}")
        for key, low in (
            ("window", 2), ("horizon", 1), ("hidden", 1), ("epochs", 1), ("batch_size", 1),
            ("stride", 1), ("n_splits", 1), ("embargo", 0), ("seed", 0),
        ):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")

    def params(self) -> dict[str, Any]:
        return asdict(self)


class WindowNet(nn.Module):
    """Raw ``(batch, W, C)`` windows -> ``(batch,)`` probability or expected return."""

    mean: torch.Tensor
    std: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, body: nn.Module, *, mean: np.ndarray, std: np.ndarray, target: str, scale: float
    ) -> None:
        super().__init__()
        self.body = body
        self.target = target
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def raw(self, windows: torch.Tensor) -> torch.Tensor:
        """The logit (direction) or the scaled return (return), before the output transform."""
        out: torch.Tensor = self.body((windows - self.mean) / self.std)
        return out

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        raw = self.raw(windows)
        return torch.sigmoid(raw) if self.target == "direction" else raw * self.scale


class _Gru(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        out: torch.Tensor = self.head(h[-1]).squeeze(-1)
        return out


def _body(config: TrainConfig, channels: int) -> nn.Module:
    if config.kind == "gru":
        return _Gru(channels, config.hidden)
    h = config.hidden
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(config.window * channels, h), nn.ReLU(),
        nn.Linear(h, h), nn.ReLU(),
        nn.Linear(h, 1), nn.Flatten(0),
    )  # fmt: skip


@contextmanager
def _deterministic(seed: int) -> Iterator[torch.Generator]:
    """Single thread, deterministic kernels, a forked global RNG seeded with `seed`."""
    threads = torch.get_num_threads()
    strict = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(strict)
        torch.set_num_threads(threads)


def fit(data: LabeledWindows, config: TrainConfig) -> WindowNet:
    """A model fitted on all of `data` (in eval mode). Deterministic given ``config.seed``."""
    if len(data) < 2:
        raise DataError(f"training needs at least 2 labelled rows, got {len(data)}")
    if data.window != config.window or data.windows.shape[2] != len(CHANNELS):
        raise DataError(
            f"windows of shape {data.windows.shape[1:]} do not match the config's window "
            f"{config.window} x {len(CHANNELS)} channels"
        )
    flat = data.windows.reshape(-1, data.windows.shape[2])
    mean = flat.mean(axis=0, dtype=np.float64)
    std = flat.std(axis=0, dtype=np.float64)
    std[~(std > 1e-12)] = 1.0
    scale = float(np.std(data.returns))
    scale = scale if scale > 1e-12 else 1.0
    labels = data.labels(config.target)
    if config.target == "return":
        labels = (labels / np.float32(scale)).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(data.windows, dtype=np.float32))
    y = torch.from_numpy(labels)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if config.target == "direction" else nn.MSELoss()
    n = len(y)
    with _deterministic(config.seed) as gen:
        model = WindowNet(
            _body(config, x.shape[2]), mean=mean, std=std, target=config.target, scale=scale
        )
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        model.train()
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model.raw(x[idx]), y[idx])
                loss.backward()
                opt.step()
    model.eval()
    return model


def predict(model: nn.Module, windows: np.ndarray, batch: int = 8192) -> np.ndarray:
    """The torch model's outputs for `windows` as float32 ``(n,)``."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch]))
            out.append(model(chunk).numpy().reshape(-1))
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class CvReport:
    """Per-fold metrics of a purged walk-forward cross-validation and their means."""

    folds: list[dict[str, Any]]
    mean: dict[str, float]
    n_splits: int
    embargo: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "folds": self.folds, "n_splits": self.n_splits,
                "embargo": self.embargo}  # fmt: skip


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="s") + "Z"


def cross_validate(data: LabeledWindows, config: TrainConfig) -> CvReport:
    """Fit and score one model per purged walk-forward fold of `data`."""
    folds = walk_forward_splits(
        data.timestamps, config.n_splits, config.horizon, config.embargo, label_end=data.label_end
    )
    rows: list[dict[str, Any]] = []
    for fold in folds:
        train = data.take(fold.train[:: config.stride])
        test = data.take(fold.test)
        metrics = score(config.target, predict(fit(train, config), test.windows), test.returns)
        rows.append(
            {
                "fold": fold.index,
                "train_rows": len(train),
                "test_rows": len(test),
                "purged": fold.purged,
                "embargoed": fold.embargoed,
                "test_start": _iso(fold.test_start),
                "test_end": _iso(fold.test_end),
                **metrics,
            }
        )
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return CvReport(rows, mean, config.n_splits, config.embargo)


# Known, harmless warnings of the dynamo exporter in torch 2.13 (silenced only around export).
_EXPORT_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    (FutureWarning, r"_check_is_size will be removed"),
    (UserWarning, r"The tensor attributes self\.body\.gru\._flat_weights"),
)


@contextmanager
def _quiet_export() -> Iterator[None]:
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    try:
        with warnings.catch_warnings():
            for category, message in _EXPORT_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        registration.setLevel(level)


_STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _strip_stack_traces(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node Python stack traces: they hold absolute source paths and
    line numbers, so the bytes (and their sha256) would depend on where and from which
    revision of this file the model was exported."""

    def nodes(graph_nodes: Iterable[onnx.NodeProto]) -> None:
        for node in graph_nodes:
            keep = [p for p in node.metadata_props if p.key != _STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
            for attr in node.attribute:
                subgraphs = [attr.g] if attr.HasField("g") else []
                for sub in [*subgraphs, *attr.graphs]:
                    nodes(sub.node)

    nodes(model.graph.node)
    for function in model.functions:
        nodes(function.node)


def export_onnx(
    model: WindowNet, windows: np.ndarray, *, tolerance: float = PARITY_TOLERANCE
) -> tuple[bytes, float]:
    """Serialize `model` to ONNX and check it against torch on `windows`.

    Parameters
    ----------
    model
        A fitted model.
    windows
        Real ``(n, W, C)`` windows, n >= 2; up to 4,096 of them (evenly spread) and the first
        one alone are compared.

    Returns
    -------
    (bytes, float)
        The self-contained ONNX model and the largest absolute torch/onnxruntime difference.
    """
    if windows.ndim != 3 or len(windows) < 2:
        raise DataError(f"export needs at least 2 real windows (n, W, C), got {windows.shape}")
    model.eval()
    sample = torch.from_numpy(np.ascontiguousarray(windows[:2], dtype=np.float32))
    with _quiet_export(), torch.no_grad():
        program = torch.onnx.export(
            model,
            (sample,),
            dynamo=True,
            external_data=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"windows": {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    if program is None:  # only without dynamo
        raise ModelParityError("torch.onnx.export returned no program")
    proto = program.model_proto
    _strip_stack_traces(proto)
    data: bytes = proto.SerializeToString()
    step = max(1, len(windows) // 4096)
    probe = np.ascontiguousarray(windows[::step][:4096], dtype=np.float32)
    sess = session(data, label="the exported model")
    expected = predict(model, probe)
    got = np.asarray(sess.run([OUTPUT], {INPUT: probe})[0]).reshape(-1)
    single = np.asarray(sess.run([OUTPUT], {INPUT: probe[:1]})[0]).reshape(-1)
    if got.shape != expected.shape or single.shape != (1,):
        raise ModelParityError(
            f"the exported model returns shape {got.shape} for {len(probe)} windows, "
            f"expected {expected.shape}"
        )
    diff = float(max(np.max(np.abs(got - expected)), abs(float(single[0] - expected[0]))))
    if not diff < tolerance:
        raise ModelParityError(
            f"onnxruntime differs from torch by up to {diff:.3g} on {len(probe)} real windows "
            f"(tolerance {tolerance:g}); refusing to export"
        )
    return data, diff


@dataclass(frozen=True)
class TrainResult:
    """What `train_and_register` made: the entry, the torch model, its CV and export figures."""

    entry: ModelEntry
    model: WindowNet = field(repr=False)
    cv: CvReport
    parity: float
    seconds: float


def train_and_register(
    features: pl.DataFrame,
    *,
    feature_spec: str,
    registry: ModelRegistry | str | Path,
    name: str = "direction_mlp",
    config: TrainConfig | None = None,
    data_files: Sequence[str] = (),
) -> TrainResult:
    """Cross-validate, fit on all labelled rows, export with a parity check, and register.

    Parameters
    ----------
    features
        A feature frame from ``quantlab.features.compute(bars, spec)`` (signals may not import
        features, so the caller computes it), in time order.
    feature_spec
        The id (``name@version``) of the spec that computed `features`.
    registry
        The registry (or its folder) to add the model to; `BUNDLED_MODELS` for the bundled one.
    name
        The registered name; the version is the next free one (or the latest, unchanged, if
        the exported bytes are identical to it).
    config
        Hyper-parameters (default `TrainConfig()`: the bundled ``direction_mlp``).
    data_files
        The files the bars came from, recorded as provenance.

    Examples
    --------
    >>> from quantlab.features import compute, get_spec
    >>> spec = get_spec("default")
    >>> result = train_and_register(compute(bars, spec), feature_spec=spec.id,
    ...                             registry="var/models")  # doctest: +SKIP
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    data = label_windows(features, window=config.window, horizon=config.horizon)
    if len(data) == 0:
        raise DataError(
            f"no row of the {features.height:,} given has a full {config.window}-row window "
            f"and an outcome {config.horizon} rows later"
        )
    cv = cross_validate(data, config)
    train = data.take(np.arange(0, len(data), config.stride))
    model = fit(train, config)
    onnx_bytes, parity = export_onnx(model, data.windows)
    reg = registry if isinstance(registry, ModelRegistry) else ModelRegistry(registry)
    stamps = features["timestamp"].dt.cast_time_unit("ns").to_physical().to_numpy()
    first, last = stamps.min(), stamps.max()
    entry = reg.register(
        onnx_bytes,
        name=name,
        kind=config.kind,
        target=config.target,
        feature_spec=feature_spec,
        window=config.window,
        channels=CHANNELS,
        horizon=config.horizon,
        return_scale=float(model.scale),
        training=TrainingWindow(
            start=_iso(int(first)),
            end=_iso(int(last)),
            files=tuple(data_files),
            rows=len(train),
        ),
        metrics={"cv": cv.as_dict(), "onnx_parity_max_abs": parity},
        seed=config.seed,
        params={
            **config.params(),
            "torch": str(torch.__version__),
            "onnxscript": str(onnxscript.__version__),
        },
    )
    return TrainResult(entry, model, cv, parity, time.perf_counter() - started)
