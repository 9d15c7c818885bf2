"""The on-disk model registry: versioned ONNX files and a `registry.json` that vouches for them.

Layout of a registry folder::

    registry.json              {"format": 1, "models": [ModelEntry, ...]}
    direction_mlp-v1.onnx      one self-contained ONNX file per version (no sidecar data)

An entry records what a model needs to be used correctly (feature spec, window, channels,
horizon, target), how it was made (kind, seed, parameters, training span and files) and how
it scored in purged walk-forward cross-validation, with the sha256 of its file. `load` hashes
the file's bytes, refuses them if the hash differs from the entry's, refuses bytes that are
not an ONNX protobuf (a pickle, a torch or joblib file: formats that run code when loaded,
which quantlab never loads, whatever their hash) and hands onnxruntime those same bytes
(never a second read of the file). It also refuses a model trained on a different feature
spec or channel list than the caller computes.

Every write goes to a temporary file in the folder, is fsynced, and replaces its target with
`os.replace`, so a reader sees the old or the new registry, never half of one. One writer at a
time is assumed (training is an offline job).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from quantlab.signals.models.onnx_model import ModelError, OnnxModel
from quantlab.signals.windows import CHANNELS

REGISTRY_FILE = "registry.json"
FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class ModelIntegrityError(ModelError):
    """A model file's sha256 differs from the one its registry entry records."""

    def __init__(self, file: Path, expected: str, actual: str) -> None:
        self.file = file
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model file {file} fails its integrity check: registry.json expects sha256 "
            f"{expected}, the file has {actual}; refusing to load it"
        )


class ModelFormatError(ModelError):
    """A model file is not an ONNX model (a pickle, a torch or joblib archive, random bytes);
    it is refused before anything parses it, even when its sha256 is the registered one."""


# Leading bytes of formats a model may come in that execute code when loaded (pickle and
# the formats built on it) or that are simply not ONNX; what the error calls them.
_NOT_ONNX: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (torch.save, joblib or .npz files are; they hold pickles)"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x93NUMPY", "a NumPy .npy file (object arrays in one are pickles)"),
    (b"\x1f\x8b", "gzip-compressed (joblib compresses pickles so)"),
    (b"BZh", "bzip2-compressed (joblib compresses pickles so)"),
    (b"\xfd7zXZ\x00", "xz-compressed (joblib compresses pickles so)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed (joblib compresses pickles so)"),
    (b"\x04\x22\x4d\x18", "lz4-compressed (joblib compresses pickles so)"),
    (b"\x89HDF", "an HDF5 file (Keras)"),
)
_IR_VERSION, _GRAPH = 1, 7  # ModelProto fields every ONNX model has (onnx.proto)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError(f"a truncated or overlong varint at byte {pos}")


def _not_onnx(data: bytes) -> str | None:
    """Why `data` is not a serialized ONNX ModelProto (None when it is one, as far as its
    top-level fields go: onnxruntime parses the rest)."""
    if not data:
        return "is empty"
    if data[0] == 0x80 and len(data) > 1 and 2 <= data[1] <= 5:
        return f"is a Python pickle (protocol {data[1]}), which runs code when loaded"
    for magic, what in _NOT_ONNX:
        if data.startswith(magic):
            return f"is {what}"
    seen: set[int] = set()
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if field == 0:
                raise ValueError(f"field number 0 at byte {pos}")
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                size, pos = _varint(data, pos)
                pos += size
            elif wire == 5:
                pos += 4
            else:  # 3/4 (groups) are not in onnx.proto; 6/7 do not exist
                raise ValueError(f"wire type {wire} at byte {pos}")
            if pos > len(data):
                raise ValueError("a field runs past the end of the file")
            if (field, wire) in ((_IR_VERSION, 0), (_GRAPH, 2)):
                seen.add(field)
    except ValueError as exc:
        return (
            f"is not a protobuf message ({exc}), so not an ONNX model (a protocol 0/1 pickle "
            "or another format)"
        )
    if not {_IR_VERSION, _GRAPH} <= seen:
        return "is a protobuf message but not an ONNX model (no ir_version or no graph)"
    return None


def check_onnx(data: bytes, label: str) -> None:
    """Refuse `data` unless it is an ONNX model (`ModelFormatError` naming `label` and what
    the bytes are); nothing here parses more than the top-level protobuf fields."""
    problem = _not_onnx(data)
    if problem is not None:
        raise ModelFormatError(
            f"{label} {problem}; quantlab loads only ONNX models, never pickled objects, "
            "so it refuses to load it"
        )


class ModelMismatchError(ModelError):
    """A model was trained on other inputs (feature spec, channels) than the caller has."""


class ModelNotFoundError(ModelError):
    """No registered model has the requested name or version."""


class TrainingWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The data a model was fitted on: first and last bar (ISO UTC), files, labelled rows."""

    start: str
    end: str
    files: tuple[str, ...]
    rows: int


class ModelEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One registered model version (a row of registry.json)."""

    name: str
    version: int
    file: str
    sha256: str
    kind: Literal["mlp", "gru"]
    target: Literal["direction", "return"]
    feature_spec: str
    window: int
    channels: tuple[str, ...]
    horizon: int
    return_scale: float
    training: TrainingWindow
    metrics: dict[str, Any]
    seed: int
    params: dict[str, Any]
    created_at: str


class _RegistryFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: int
    models: list[ModelEntry]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these files are shared artefacts
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    """A folder of versioned ONNX models and the `registry.json` describing them.

    Examples
    --------
    >>> from quantlab.signals.models import BUNDLED_MODELS, ModelRegistry
    >>> registry = ModelRegistry(BUNDLED_MODELS)
    >>> registry.latest("direction_mlp").version  # doctest: +SKIP
    1
    >>> model = registry.load("direction_mlp", feature_spec="default@1")  # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / REGISTRY_FILE

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"

    def entries(self) -> list[ModelEntry]:
        """Every registered version, in registration order (empty if there is no registry)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            doc = msgspec.json.decode(raw, type=_RegistryFile)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            # ValidationError is a DecodeError; msgspec raises the other two for bad UTF-8
            # and a nesting deeper than its limit.
            raise ModelError(f"model registry {self.path} is not valid: {exc}") from None
        if doc.format != FORMAT:
            raise ModelError(
                f"model registry {self.path} has format {doc.format}; this quantlab reads {FORMAT}"
            )
        return doc.models

    def entry(self, name: str, version: int | None = None) -> ModelEntry:
        """The entry of `name` at `version` (the latest when None)."""
        mine = [e for e in self.entries() if e.name == name]
        if not mine:
            known = sorted({e.name for e in self.entries()})
            raise ModelNotFoundError(f"no model {name!r} in {self.path}; registered: {known}")
        if version is None:
            return max(mine, key=lambda e: e.version)
        for e in mine:
            if e.version == version:
                return e
        have = sorted(e.version for e in mine)
        raise ModelNotFoundError(f"model {name!r} has no version {version} in {self.path}: {have}")

    def latest(self, name: str) -> ModelEntry:
        """The highest registered version of `name`."""
        return self.entry(name)

    def load(
        self,
        name: str,
        version: int | None = None,
        *,
        feature_spec: str,
        channels: Sequence[str] = CHANNELS,
    ) -> OnnxModel:
        """Verify and load a model for inference.

        Parameters
        ----------
        name, version
            The registered model (latest version when `version` is None).
        feature_spec
            The id (``name@version``) of the feature spec the caller computes; it must be the
            one the model was trained on.
        channels
            The window channels the caller builds (default: `quantlab.signals.windows.CHANNELS`).

        Raises
        ------
        ModelIntegrityError
            The file's sha256 is not the registered one.
        ModelFormatError
            The file is not an ONNX model (a pickle, a torch archive...), whatever its sha256.
        ModelMismatchError
            The model was trained on another feature spec or channel list.
        """
        entry = self.entry(name, version)
        label = f"model {entry.name}-v{entry.version}"
        if entry.feature_spec != feature_spec:
            raise ModelMismatchError(
                f"{label} was trained on feature spec {entry.feature_spec!r}, "
                f"the caller computes {feature_spec!r}"
            )
        if tuple(entry.channels) != tuple(channels):
            raise ModelMismatchError(
                f"{label} was trained on window channels {list(entry.channels)}, "
                f"the caller builds {list(channels)}"
            )
        file = self._file(entry)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{label}: its file {file} is missing") from None
        actual = sha256_hex(data)
        if actual != entry.sha256:
            raise ModelIntegrityError(file, entry.sha256, actual)
        check_onnx(data, f"{label}: its file {file}")
        return OnnxModel(data, entry)

    def _file(self, entry: ModelEntry) -> Path:
        # registry.json is data: never let it point outside the folder.
        if Path(entry.file).name != entry.file or entry.file in ("", ".", ".."):
            raise ModelError(f"registry {self.path}: model file {entry.file!r} is not a plain name")
        return self.root / entry.file

    def register(
        self,
        model: bytes,
        *,
        name: str,
        kind: Literal["mlp", "gru"],
        target: Literal["direction", "return"],
        feature_spec: str,
        window: int,
        channels: Sequence[str],
        horizon: int,
        return_scale: float,
        training: TrainingWindow,
        metrics: dict[str, Any],
        seed: int,
        params: dict[str, Any] | None = None,
    ) -> ModelEntry:
        """Add `model` (serialized ONNX) as the next version of `name` and return its entry.

        Registering the same bytes as the latest version of `name` again returns that entry
        without a new version, so retraining with the same seed and data is a no-op. The
        model is loaded into onnxruntime first, so an unloadable or misshapen file is never
        registered.
        """
        if not _NAME.match(name):
            raise ModelError(
                f"model name {name!r} must be 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        if kind not in ("mlp", "gru") or target not in ("direction", "return"):
            raise ModelError(
                f"kind must be mlp|gru and target direction|return, got {kind}, {target}"
            )
        if window < 2 or horizon < 1 or not channels:
            raise ModelError(
                f"a model needs window >= 2, horizon >= 1 and channels, got {window}, "
                f"{horizon}, {list(channels)}"
            )
        if not (math.isfinite(return_scale) and return_scale > 0):
            raise ModelError(f"return_scale must be a finite number > 0, got {return_scale}")
        entries = self.entries()
        mine = [e for e in entries if e.name == name]
        digest = sha256_hex(model)
        latest = max(mine, key=lambda e: e.version) if mine else None
        if latest is not None and latest.sha256 == digest:
            return latest
        version = latest.version + 1 if latest is not None else 1
        entry = ModelEntry(
            name=name,
            version=version,
            file=f"{name}-v{version}.onnx",
            sha256=digest,
            kind=kind,
            target=target,
            feature_spec=feature_spec,
            window=window,
            channels=tuple(channels),
            horizon=horizon,
            return_scale=float(return_scale),
            training=training,
            metrics=metrics,
            seed=seed,
            params=dict(params or {}),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        OnnxModel(model, entry)  # refuses bytes onnxruntime cannot run with this entry
        doc = _RegistryFile(format=FORMAT, models=[*entries, entry])
        try:
            text = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
        except (TypeError, msgspec.EncodeError) as exc:
            raise ModelError(f"entry of model {name!r} cannot be written as JSON: {exc}") from exc
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / entry.file, model)  # the file first: no entry without it
        _write_atomic(self.path, text)
        return entry
