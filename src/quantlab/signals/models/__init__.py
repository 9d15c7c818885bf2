"""Models over feature windows: trained with torch offline, served with onnxruntime.

Production imports only this package: labelled windows and purged walk-forward splits
(`dataset`), the hash-checked registry (`registry`) and onnxruntime inference (`onnx_model`).
None of them imports torch; `quantlab.signals.models.train` (the ``ml`` extra) is the only
module that does, and nothing here imports it.

The bundled registry, `BUNDLED_MODELS`, holds ``direction_mlp``: an MLP over 32-row windows of
the ``default@1`` feature spec predicting the direction of the next 12 bars, trained on the
bundled BTC-PERP 1-minute bars of January 2022 (``make model`` retrains it).
"""

from importlib import resources
from pathlib import Path

from quantlab.signals.models.dataset import (
    Fold,
    LabeledWindows,
    information_coefficient,
    label_windows,
    score,
    walk_forward_splits,
)
from quantlab.signals.models.onnx_model import (
    ModelError,
    ModelInputError,
    ModelParityError,
    OnnxModel,
)
from quantlab.signals.models.registry import (
    ModelEntry,
    ModelFormatError,
    ModelIntegrityError,
    ModelMismatchError,
    ModelNotFoundError,
    ModelRegistry,
    TrainingWindow,
)

BUNDLED_MODELS = Path(str(resources.files("quantlab") / "_data" / "models"))

__all__ = [
    "BUNDLED_MODELS",
    "Fold",
    "LabeledWindows",
    "ModelEntry",
    "ModelError",
    "ModelFormatError",
    "ModelInputError",
    "ModelIntegrityError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModelParityError",
    "ModelRegistry",
    "OnnxModel",
    "TrainingWindow",
    "information_coefficient",
    "label_windows",
    "score",
    "walk_forward_splits",
]
