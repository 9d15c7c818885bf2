"""Inference with onnxruntime: production's side of a model trained by `train` (never torch).

The ONNX graph takes raw feature windows: input ``windows`` float32 ``(batch, W, C)`` with a
dynamic batch, output ``output`` float32 ``(batch,)``: the probability of an up move over the
model's horizon (target ``direction``) or the expected forward log return (target ``return``).
The input normalisation is part of the graph, so nothing outside it has to match training.

Sessions run single-threaded (``intra_op_num_threads=1``): the engine scores one or a few rows
per batch, where thread hand-offs cost more than they save.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from quantlab.core.errors import DataError

if TYPE_CHECKING:
    from quantlab.signals.models.registry import ModelEntry

INPUT = "windows"
OUTPUT = "output"


class ModelError(DataError):
    """A model file or its registry entry is unusable; the message names the file."""


class ModelInputError(ModelError):
    """Windows given to a model do not have the shape it was trained on."""


class ModelParityError(ModelError):
    """The exported ONNX graph does not reproduce the trained model's outputs."""


def session(model: bytes, *, label: str = "model") -> ort.InferenceSession:
    """A single-threaded CPU onnxruntime session over the serialized `model`."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        raise ModelError(f"onnxruntime cannot load {label}: {exc}") from exc


class OnnxModel:
    """A registered model ready for inference.

    Built by `ModelRegistry.load` from bytes whose sha256 it has checked against the registry.

    Examples
    --------
    >>> from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
    >>> model = ModelRegistry(BUNDLED_MODELS).load("direction_mlp", feature_spec="default@1")
    >>> model.advice(windows)  # (n, 32, 8) float32 -> (n,) in [-1, 1]  # doctest: +SKIP
    """

    def __init__(self, model: bytes, entry: ModelEntry) -> None:
        self.entry = entry
        self.window = entry.window
        self.channels = len(entry.channels)
        self._label = f"model {entry.name}-v{entry.version} ({entry.file})"
        self._session = session(model, label=self._label)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT] or [o.name for o in outputs] != [OUTPUT]:
            raise ModelError(
                f"{self._label} must have one input {INPUT!r} and one output {OUTPUT!r}, has "
                f"inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}"
            )
        shape = list(inputs[0].shape)
        if len(shape) != 3 or shape[1:] != [self.window, self.channels]:
            raise ModelError(
                f"{self._label} takes input shape {shape}; its registry entry says "
                f"(batch, {self.window}, {self.channels})"
            )
        self._outputs = [OUTPUT]

    def __repr__(self) -> str:
        e = self.entry
        return f"OnnxModel({e.name!r}, v{e.version}, {e.kind}, {e.target}, window={e.window})"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """The model's output for each window: ``(n,)`` float32.

        Parameters
        ----------
        windows
            ``(n, W, C)`` feature windows (or one ``(W, C)`` window), W and C as trained.
        """
        x = np.asarray(windows, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.window, self.channels):
            raise ModelInputError(
                f"{self._label} takes windows of shape (n, {self.window}, {self.channels}), "
                f"got {x.shape}"
            )
        if x.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        out = self._session.run(self._outputs, {INPUT: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def advice(self, windows: np.ndarray) -> np.ndarray:
        """A score in [-1, 1] per window: ``2p - 1`` for a direction model,
        ``tanh(prediction / return_scale)`` for a return model."""
        pred = self.predict(windows)
        if self.entry.target == "direction":
            score = 2.0 * pred - 1.0
        else:
            score = np.tanh(pred / np.float32(self.entry.return_scale))
        return np.clip(score, -1.0, 1.0).astype(np.float32, copy=False)
