"""The sidecar JSON written next to every TensorRT engine, and the checks made before deserialising one.

A serialised engine runs only with the TensorRT version and the GPU model it was built with, at the one
input size and precision it was built for, and for batch sizes within its optimization profile.
``<engine>.json`` (``model.engine`` → ``model.engine.json``) records those facts plus where the weights
came from, so that a mismatch is reported as a sentence (:class:`EngineMismatchError`) instead of a
deserialisation failure or silently wrong flow. :class:`BatchProfile` is the batch range (``MIN:OPT:MAX``;
``1:1:1`` for a static export; sidecars written before it existed read as ``1:1:1``).
:func:`engine_cache_path` names a rebuilt engine deterministically from the fields that make it valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_KEY_FIELDS",
    "SCHEMA_VERSION",
    "STATIC_BATCH",
    "BatchProfile",
    "EngineExpectation",
    "EngineMetadata",
    "EngineMismatchError",
    "check_engine",
    "engine_cache_path",
    "file_sha256",
    "now_iso",
    "read_metadata",
    "sidecar_path",
    "write_metadata",
]

SCHEMA_VERSION = 2  # 2: batch_min/batch_opt/batch_max (absent in 1, meaning 1:1:1)
#: Fields that decide whether an engine can be reused; they form the cache key.
CACHE_KEY_FIELDS = (
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "precision",
    "input_height",
    "input_width",
    "stack",
    "source_sha256",
    "plugin",
)


class EngineMismatchError(RuntimeError):
    """An engine that must not be used here: missing/corrupt file or sidecar, or built for other conditions."""


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes an engine accepts: TensorRT's optimization profile for the batch dimension.

    ``min_batch`` ≤ ``opt_batch`` (the size TensorRT tunes for) ≤ ``max_batch``, all ≥ 1.

    Raises:
        ValueError: not positive ints, or not ordered.
    """

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1

    def __post_init__(self) -> None:
        values = (self.min_batch, self.opt_batch, self.max_batch)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"batch sizes must be positive ints, got {':'.join(map(str, values))}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch profile must satisfy MIN <= OPT <= MAX, got {self}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"MIN:OPT:MAX"`` (e.g. ``"1:2:4"``) → BatchProfile (ValueError with the expected form)."""
        parts = str(text).strip().split(":")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"batch profile must be MIN:OPT:MAX such as 1:2:4, got {text!r}")
        return cls(*(int(p) for p in parts))

    @property
    def is_static(self) -> bool:
        """True for ``1:1:1`` (what a static export is built with)."""
        return self == STATIC_BATCH

    def __str__(self) -> str:
        return f"{self.min_batch}:{self.opt_batch}:{self.max_batch}"


STATIC_BATCH = BatchProfile(1, 1, 1)


@dataclass(frozen=True)
class EngineMetadata:
    """What an engine was built from and for (the sidecar's content)."""

    tensorrt_version: str  # full version string, e.g. "10.3.0.30"
    gpu_name: str  # e.g. "Orin (nvgpu)", "NVIDIA H200"
    compute_capability: str  # "8.7"
    precision: str  # "fp32" | "fp16"
    input_height: int
    input_width: int
    stack: str  # FlowNet2, FlowNet2C, ...
    source_sha256: str  # weights (state_dict) SHA-256, else the ONNX file's SHA-256
    source_kind: str  # "weights" | "onnx"
    plugin: str  # "FlowNet2Correlation/1/flownet2_ros", "" when the engine has no plugin
    package_version: str
    created: str = ""  # ISO 8601 UTC
    engine_sha256: str = ""  # of the engine file (detects a replaced or truncated engine)
    engine_size: int = 0
    onnx_sha256: str = ""
    batch_min: int = 1  # the optimization profile of the batch dimension (1:1:1 for a static export)
    batch_opt: int = 1
    batch_max: int = 1
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, got {self.precision!r}")
        for name in ("input_height", "input_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        BatchProfile(self.batch_min, self.batch_opt, self.batch_max)  # validates

    @property
    def batch_profile(self) -> BatchProfile:
        """The batch sizes the engine accepts."""
        return BatchProfile(self.batch_min, self.batch_opt, self.batch_max)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the engine's inputs."""
        return self.input_height, self.input_width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineMetadata:
        """Strict: every field without a default must be present; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
        if missing:
            raise ValueError(f"missing key(s) {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def cache_key(self) -> str:
        """SHA-256 over :data:`CACHE_KEY_FIELDS` (canonical JSON), plus the batch profile unless 1:1:1
        (so keys of static engines are those of sidecars without a profile)."""
        relevant: dict[str, Any] = {name: getattr(self, name) for name in CACHE_KEY_FIELDS}
        if not self.batch_profile.is_static:
            relevant["batch"] = str(self.batch_profile)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EngineExpectation:
    """What the engine must have been built for; None fields are not checked."""

    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    precision: str | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    stack: str | None = None
    source_sha256: str | None = None
    plugin: str | None = None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sidecar_path(engine_path: str | Path) -> Path:
    """``<engine>.json`` next to the engine."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_metadata(engine_path: str | Path, metadata: EngineMetadata) -> Path:
    """Write the sidecar atomically; returns its path."""
    path = sidecar_path(engine_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_metadata(engine_path: str | Path) -> EngineMetadata:
    """The sidecar of ``engine_path``.

    Raises:
        EngineMismatchError: sidecar missing, unreadable, not JSON, or missing fields.
    """
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"engine metadata {path} not found: the engine cannot be checked against this machine; "
            "rebuild it with flownet2-build-engine"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return EngineMetadata.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise EngineMismatchError(f"engine metadata {path} is corrupt ({exc}); rebuild the engine") from None


def _differs(what: str, built: object, here: object, engine: Path) -> EngineMismatchError:
    return EngineMismatchError(
        f"engine {engine.name} was built for {what} {built}, but {here} is needed here; rebuild it "
        "(flownet2-build-engine) or allow a rebuild into the cache"
    )


def check_engine(
    engine_path: str | Path, expected: EngineExpectation, *, verify_hash: bool = True
) -> EngineMetadata:
    """Check an engine file and its sidecar against ``expected``; returns the metadata.

    Raises:
        EngineMismatchError: engine missing, empty or changed since it was built (size/SHA-256 differ);
            sidecar missing or corrupt; TensorRT version, GPU, compute capability, precision, input size,
            stack, weights or plugin differ from ``expected``.
    """
    engine = Path(engine_path)
    if not engine.is_file():
        raise EngineMismatchError(f"engine file {engine} not found")
    size = engine.stat().st_size
    if size == 0:
        raise EngineMismatchError(f"engine file {engine} is empty (corrupt)")
    meta = read_metadata(engine)
    if meta.engine_size and meta.engine_size != size:
        raise EngineMismatchError(
            f"engine file {engine} is {size} bytes but was written as {meta.engine_size} (corrupt or replaced)"
        )
    if verify_hash and meta.engine_sha256 and file_sha256(engine) != meta.engine_sha256:
        raise EngineMismatchError(
            f"engine file {engine} does not match its metadata's SHA-256 (corrupt or replaced)"
        )
    if expected.tensorrt_version is not None and meta.tensorrt_version != expected.tensorrt_version:
        raise _differs("TensorRT", meta.tensorrt_version, f"TensorRT {expected.tensorrt_version}", engine)
    if expected.gpu_name is not None and meta.gpu_name != expected.gpu_name:
        raise _differs("the GPU", meta.gpu_name, expected.gpu_name, engine)
    if expected.compute_capability is not None and meta.compute_capability != expected.compute_capability:
        raise _differs(
            "compute capability",
            meta.compute_capability,
            f"compute capability {expected.compute_capability}",
            engine,
        )
    if expected.precision is not None and meta.precision != expected.precision:
        raise _differs("precision", meta.precision, expected.precision, engine)
    if expected.input_size is not None and meta.input_size != tuple(expected.input_size):
        built = f"{meta.input_width}x{meta.input_height}"
        here = f"{expected.input_size[1]}x{expected.input_size[0]} (WxH)"
        raise _differs("input size", built, here, engine)
    if expected.stack is not None and meta.stack != expected.stack:
        raise _differs("the stack", meta.stack, expected.stack, engine)
    if expected.source_sha256 is not None and meta.source_sha256 != expected.source_sha256:
        raise _differs("weights", meta.source_sha256[:12], f"weights {expected.source_sha256[:12]}", engine)
    if expected.plugin is not None and meta.plugin != expected.plugin:
        raise _differs("plugin", meta.plugin or "(none)", expected.plugin or "(none)", engine)
    return meta


def engine_cache_path(cache_dir: str | Path, metadata: EngineMetadata) -> Path:
    """Deterministic engine path in ``cache_dir`` for these build conditions.

    ``<stack>_<W>x<H>_<precision>_<first 16 hex of the cache key>.engine``; the key covers TensorRT version,
    GPU, compute capability, precision, size, stack, weights, plugin and a batch profile other than 1:1:1,
    and nothing else (not the time).
    """
    safe_stack = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in metadata.stack) or "model"
    name = (
        f"{safe_stack}_{metadata.input_width}x{metadata.input_height}_{metadata.precision}_"
        f"{metadata.cache_key()[:16]}.engine"
    )
    return Path(cache_dir) / name
