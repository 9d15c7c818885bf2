"""Research helpers for models: train with purged walk-forward validation, export to ONNX,
register, and load back for inference with onnxruntime.

Training needs torch (the ``ml`` extra); it is imported only inside `train_model`, so
importing this module (and production) never imports torch. A research registry is a folder of
its own (default ``var/research/models``); the registry bundled with quantlab is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from quantlab.core.errors import DataError
from quantlab.features import compute, get_spec
from quantlab.signals.models import (
    BUNDLED_MODELS,
    LabeledWindows,
    ModelEntry,
    ModelRegistry,
    OnnxModel,
    label_windows,
    score,
)

__all__ = [
    "TrainedModel",
    "labelled_windows",
    "list_models",
    "load_model",
    "model_path",
    "score_predictions",
    "train_model",
]


def _registry(registry: str | Path | None) -> Path:
    if registry is None:
        from quantlab.research.data import research_dir

        return research_dir("models")
    root = Path(registry).expanduser().resolve()
    if root == BUNDLED_MODELS.resolve():
        raise DataError(
            f"registry {str(registry)!r} is the registry bundled with quantlab; research models "
            "go to a folder of their own (default var/research/models)"
        )
    return root


@dataclass(frozen=True)
class TrainedModel:
    """What `train_model` registered.

    Attributes
    ----------
    entry : the registry entry (name, version, file, sha256, spec, window, horizon, metrics).
    registry : the registry folder.
    folds : per walk-forward fold: rows, purged, test period and its metrics.
    cv : the folds' mean metrics (``accuracy``, ``log_loss``, ``up_rate``, ``ic`` for a
        direction model; ``mse``, ``mse_zero``, ``accuracy``, ``ic`` for a return model).
    parity : largest |torch - onnxruntime| difference on real windows at export.
    seconds : wall time of cross-validation, fit, export and registration.
    """

    entry: ModelEntry
    registry: Path
    folds: pl.DataFrame
    cv: dict[str, float]
    parity: float
    seconds: float

    @property
    def path(self) -> Path:
        """The registered ONNX file."""
        return self.registry / self.entry.file


def train_model(
    bars: pl.DataFrame,
    *,
    registry: str | Path | None = None,
    name: str = "research_mlp",
    kind: Literal["mlp", "gru"] = "mlp",
    target: Literal["direction", "return"] = "direction",
    window: int = 32,
    horizon: int = 12,
    hidden: int = 32,
    epochs: int = 2,
    lr: float = 3e-4,
    n_splits: int = 4,
    embargo: int = 0,
    stride: int = 1,
    seed: int = 7,
    spec: str = "default",
    data_files: tuple[str, ...] = (),
) -> TrainedModel:
    """Train a model on `bars` as ``quantlab model train`` does, and register it.

    Computes the spec's features, labels every full window with the forward log return
    `horizon` rows later, cross-validates one model per purged walk-forward fold, fits on all
    labelled rows, exports to ONNX (checking onnxruntime against torch) and registers it.
    Deterministic for a given `seed` and data. Imports torch (the ``ml`` extra).

    Parameters
    ----------
    bars
        Bars in time order (e.g. `load_bars`); a subset keeps training quick.
    registry
        The registry folder (default ``var/research/models``; the bundled one is refused).
    name
        Registered name; the version is the next free one (or the latest, if the model's
        bytes are identical to it).
    kind, target, window, horizon, hidden, epochs, lr, n_splits, embargo, stride, seed
        Hyper-parameters (``TrainConfig``); `stride` trains on every stride-th labelled row.
    spec
        The feature spec.
    data_files
        Provenance recorded in the registry.

    Returns
    -------
    TrainedModel

    Examples
    --------
    >>> bars = load_bars("bundled:btc_perp_1m_2022-01.parquet", start="2022-01-20")
    >>> trained = train_model(bars, hidden=8, epochs=1, n_splits=3)  # doctest: +SKIP
    >>> trained.cv["accuracy"]  # doctest: +SKIP
    """
    root = _registry(registry)  # refuse the bundled registry before importing torch
    from quantlab.signals.models.train import TrainConfig, train_and_register

    config = TrainConfig(
        kind=kind, target=target, window=window, horizon=horizon, hidden=hidden, epochs=epochs,
        lr=lr, n_splits=n_splits, embargo=embargo, stride=stride, seed=seed,
    )  # fmt: skip
    found = get_spec(spec)
    result = train_and_register(
        compute(bars, found),
        feature_spec=found.id,
        registry=root,
        name=name,
        config=config,
        data_files=data_files,
    )
    return TrainedModel(
        entry=result.entry,
        registry=root,
        folds=pl.DataFrame(result.cv.folds),
        cv=dict(result.cv.mean),
        parity=result.parity,
        seconds=result.seconds,
    )


def list_models(registry: str | Path | None = None) -> pl.DataFrame:
    """The registered models: name, version, kind, target, spec, window, horizon, mean CV
    accuracy and IC, training period and file.

    Examples
    --------
    >>> list_models().columns[:3]
    ['name', 'version', 'kind']
    """
    reg = ModelRegistry(_registry(registry))
    rows: list[dict[str, Any]] = []
    for e in reg.entries():
        mean = (e.metrics.get("cv") or {}).get("mean") or {}
        rows.append(
            {
                "name": e.name,
                "version": e.version,
                "kind": e.kind,
                "target": e.target,
                "feature_spec": e.feature_spec,
                "window": e.window,
                "horizon": e.horizon,
                "cv_accuracy": mean.get("accuracy"),
                "cv_ic": mean.get("ic"),
                "train_start": e.training.start,
                "train_end": e.training.end,
                "file": e.file,
            }
        )
    schema = {
        "name": pl.String, "version": pl.Int64, "kind": pl.String, "target": pl.String,
        "feature_spec": pl.String, "window": pl.Int64, "horizon": pl.Int64,
        "cv_accuracy": pl.Float64, "cv_ic": pl.Float64, "train_start": pl.String,
        "train_end": pl.String, "file": pl.String,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def model_path(
    name: str, version: int | None = None, *, registry: str | Path | None = None
) -> Path:
    """The ONNX file of a registered model (latest version when `version` is None).

    Open it with ``onnxruntime.InferenceSession(str(path))``: input ``windows`` of shape
    ``(batch, window, 8)`` float32, output ``output`` of shape ``(batch,)``.
    """
    root = _registry(registry)
    return root / ModelRegistry(root).entry(name, version).file


def load_model(
    name: str,
    version: int | None = None,
    *,
    registry: str | Path | None = None,
    spec: str = "default",
) -> OnnxModel:
    """A registered model loaded for inference (onnxruntime), its sha256 checked.

    ``.predict(windows)`` gives the raw output (probability of an up move, or the expected
    return), ``.advice(windows)`` a score in [-1, 1]; ``.entry`` is its registry entry.

    Examples
    --------
    >>> model = load_model("research_mlp")  # doctest: +SKIP
    >>> model.predict(labelled_windows(features, window=32).windows[-5:])  # doctest: +SKIP
    """
    return ModelRegistry(_registry(registry)).load(name, version, feature_spec=get_spec(spec).id)


def labelled_windows(
    features: pl.DataFrame, *, window: int = 32, horizon: int = 12
) -> LabeledWindows:
    """Every row of `features` that has a full `window` of history and an outcome `horizon`
    rows later: ``.windows`` ``(n, window, 8)`` float32 (the channels models read),
    ``.returns`` (forward log returns), ``.timestamps`` (int ns), ``.symbols``.

    Examples
    --------
    >>> data = labelled_windows(compute_features(bars), window=32, horizon=12)
    >>> data.windows.shape[1:]
    (32, 8)
    """
    if not isinstance(window, int) or window < 2:
        raise DataError(f"window must be an integer >= 2, got {window!r}")
    return label_windows(features, window=window, horizon=horizon)


def score_predictions(
    prediction: np.ndarray, realized: np.ndarray, *, target: str = "direction"
) -> dict[str, float]:
    """The walk-forward fold metrics for predictions against realized forward log returns.

    ``direction`` (probabilities): ``accuracy``, ``log_loss``, ``up_rate``, ``ic``;
    ``return``: ``mse``, ``mse_zero``, ``accuracy`` (of the sign), ``ic``.

    Examples
    --------
    >>> score_predictions(np.array([0.9, 0.1]), np.array([0.01, -0.02]))["accuracy"]
    1.0
    """
    return score(target, np.asarray(prediction), np.asarray(realized))
