"""The FlowNet correlation as a TensorRT plugin written in Python (IPluginV3, TensorRT 10.3 … 11.x).

The plugin (``FlowNet2Correlation`` / version ``1`` / namespace ``flownet2_ros``, see :mod:`.plugin_spec`)
derives from ``IPluginV3``, ``IPluginV3OneCore``, ``IPluginV3OneBuild`` and ``IPluginV3OneRuntime`` — the
class-based API that exists unchanged from TensorRT 10.3 (JetPack 6) to 11.x; the decorator and AOT
plugin APIs of 10.6+/10.9+ are not used. Its ``enqueue`` launches the NVRTC-compiled kernel of
:mod:`flownet2_ros.ops.cuda_correlation` on TensorRT's stream, on TensorRT's device pointers.

Fields (ONNX node attributes → plugin fields): ``pad_size``, ``kernel_size``, ``max_displacement``,
``stride1``, ``stride2`` — integers (INT32, also accepted as INT8/16/64), **required**: a network without
them is a mistake worth a clear error, not a silent FlowNetC default — and ``corr_multiply`` (FLOAT32,
also FLOAT16/64 or an integer type), optional, default 1.0. A field must hold exactly one value; unknown or
repeated fields, even ``kernel_size``, negative padding or displacement and strides < 1 are refused with
a :class:`PluginFieldError` that names the field.

Types and formats: both inputs and the output are LINEAR (NCHW) and share one type, FLOAT or HALF; the
kernel accumulates in fp32. Output shape (B, (2d+1)², H', W') with
``H' = ceil((H + 2·pad − 2·(max_displacement + kernel_size // 2)) / stride1)`` built symbolically from the
input's dimensions (SUM/SUB and CEIL_DIV), so the plugin also works with a dynamic batch.

Timing cache: IPluginV3 plugins are left out of TensorRT's timing cache unless they set
``timing_cache_id`` (TensorRT 10.3: a null ID disables it); this plugin sets it to its parameters
(:func:`timing_cache_id`) — TensorRT prefixes the shapes, formats and types itself — so identical
correlation layers are timed once and rebuilds with ``--timing-cache`` reuse the timing.

The decisions (field parsing, output-size formula, format negotiation) are plain functions
(:func:`params_from_fields`, :func:`output_dims`, :func:`format_combination_supported`) tested without
TensorRT objects; the plugin methods are thin adapters over them, tested with the lean runtime's real
classes and registry. Parts that nothing without a GPU and the full TensorRT can execute, kept minimal:

- ``enqueue`` under a real engine (the kernel launch itself is :func:`~..ops.cuda_correlation.launch_correlation`,
  tested on its own);
- ``get_output_shapes`` with TensorRT's expression builder (needs the builder; the formula is tested);
- the network build and deserialisation that call all of the above (:mod:`.engine_builder`).

An engine holding this plugin deserialises only in a Python process that called :func:`register_plugin`
first (not in ``trtexec`` nor in C++ programs).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..ops.cuda_correlation import CorrelationParams
from .plugin_spec import CORRELATION_ATTRIBUTES, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION

__all__ = [
    "MIN_TENSORRT_VERSION",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "PluginFieldError",
    "TensorRTUnavailableError",
    "format_combination_supported",
    "import_tensorrt",
    "int_op",
    "output_dims",
    "params_from_fields",
    "params_to_fields",
    "plugin_classes",
    "register_plugin",
    "require_tensorrt",
    "tensorrt_version",
    "timing_cache_id",
]

MIN_TENSORRT_VERSION = (10, 3)
REQUIRED_FIELDS = CORRELATION_ATTRIBUTES[:5]
OPTIONAL_FIELDS = {"corr_multiply": 1.0}
_INT_TYPES = ("INT8", "INT16", "INT32", "INT64")
_FLOAT_TYPES = ("FLOAT16", "FLOAT32", "FLOAT64")
_TENSOR_TYPES = {"FLOAT": "float32", "HALF": "float16"}


class PluginFieldError(ValueError):
    """Plugin fields that do not describe a valid correlation."""


class TensorRTUnavailableError(RuntimeError):
    """TensorRT is not installed or too old for the IPluginV3 API."""


# ---------------------------------------------------------------------------------------------- TensorRT


def import_tensorrt() -> Any | None:
    """The TensorRT Python module: ``tensorrt`` (full), else ``tensorrt_lean`` (runtime only), else None."""
    for name in ("tensorrt", "tensorrt_lean"):
        try:
            return __import__(name)
        except ImportError:
            continue
        except Exception:  # a broken installation (missing libnvinfer...) is "not available" here
            continue
    return None


def tensorrt_version(trt: Any) -> tuple[int, ...]:
    """``trt.__version__`` as a tuple of ints (``(10, 3, 0, 26)``); ``()`` when unreadable."""
    parts = []
    for piece in str(getattr(trt, "__version__", "")).split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def require_tensorrt(trt_module: Any | None = None) -> Any:
    """The TensorRT module to use (``trt_module`` or :func:`import_tensorrt`), checked to be ≥ 10.3.

    Raises:
        TensorRTUnavailableError: none installed, or too old.
    """
    trt = trt_module if trt_module is not None else import_tensorrt()
    if trt is None:
        raise TensorRTUnavailableError(
            "TensorRT's Python bindings are not installed (JetPack provides them; on a desktop "
            "pip install tensorrt)"
        )
    version = tensorrt_version(trt)
    if version[:2] < MIN_TENSORRT_VERSION:
        found = getattr(trt, "__version__", "unknown")
        raise TensorRTUnavailableError(
            f"TensorRT {found} is too old: the correlation plugin needs >= "
            f"{'.'.join(map(str, MIN_TENSORRT_VERSION))} (IPluginV3)"
        )
    return trt


# --------------------------------------------------------------------------------------- plain functions


def _enum_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name) if name else str(value).rsplit(".", 1)[-1]


def params_from_fields(fields: Iterable[tuple[str, Any, str]]) -> CorrelationParams:
    """Correlation parameters from plugin fields given as ``(name, data, type_name)``.

    ``data``: the field's values (numpy array, sequence or scalar); ``type_name``: the
    ``PluginFieldType`` member name (``"INT32"``, ``"FLOAT32"``...). See the module docstring for the rules.

    Raises:
        PluginFieldError: unknown, repeated, missing, mistyped or invalid fields.
    """
    values: dict[str, int | float] = {}
    for name, data, type_name in fields:
        if name not in CORRELATION_ATTRIBUTES:
            raise PluginFieldError(
                f"{PLUGIN_NAME}: unknown field {name!r}; expected {', '.join(CORRELATION_ATTRIBUTES)}"
            )
        if name in values:
            raise PluginFieldError(f"{PLUGIN_NAME}: field {name!r} given twice")
        array = np.asarray(data).reshape(-1)
        if array.size != 1:
            raise PluginFieldError(f"{PLUGIN_NAME}: field {name!r} must hold one value, got {array.size}")
        if name == "corr_multiply":
            if type_name not in _FLOAT_TYPES + _INT_TYPES:
                raise PluginFieldError(
                    f"{PLUGIN_NAME}: field 'corr_multiply' must be FLOAT32, got {type_name}"
                )
            number = float(array[0])
            if not math.isfinite(number):
                raise PluginFieldError(f"{PLUGIN_NAME}: field 'corr_multiply' must be finite, got {number}")
            values[name] = number
        else:
            if type_name not in _INT_TYPES:
                raise PluginFieldError(f"{PLUGIN_NAME}: field {name!r} must be INT32, got {type_name}")
            values[name] = int(array[0])
    missing = [name for name in REQUIRED_FIELDS if name not in values]
    if missing:
        raise PluginFieldError(f"{PLUGIN_NAME}: missing field(s) {', '.join(missing)}")
    for name, default in OPTIONAL_FIELDS.items():
        values.setdefault(name, default)
    try:
        return CorrelationParams(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise PluginFieldError(f"{PLUGIN_NAME}: {exc}") from None


def params_to_fields(params: CorrelationParams) -> list[tuple[str, np.ndarray, str]]:
    """The six fields of ``params`` as ``(name, numpy array, type_name)``: INT32 and corr_multiply FLOAT32."""
    fields: list[tuple[str, np.ndarray, str]] = [
        (name, np.array([getattr(params, name)], dtype=np.int32), "INT32") for name in REQUIRED_FIELDS
    ]
    fields.append(("corr_multiply", np.array([params.corr_multiply], dtype=np.float32), "FLOAT32"))
    return fields


D = TypeVar("D")


def output_dims(
    params: CorrelationParams, dims: Sequence[D], const: Callable[[int], D], op: Callable[[str, D, D], D]
) -> list[D]:
    """Output dimensions (B, (2d+1)², H', W') from input dims (B, C, H, W), in any arithmetic.

    ``const(n)`` makes a constant, ``op(kind, a, b)`` applies ``kind`` ∈ {``SUM``, ``SUB``, ``CEIL_DIV``}
    (names of ``trt.DimensionOperation``); only non-negative constants are made. With plain ints
    (``const=int``) this equals :func:`flownet2_ros.ops.correlation_output_size`.
    """
    if len(dims) != 4:
        raise ValueError(f"{PLUGIN_NAME} takes 4-D (B, C, H, W) inputs, got {len(dims)} dimensions")
    border = params.max_displacement + (params.kernel_size - 1) // 2
    delta = 2 * params.pad_size - 2 * border

    def spatial(size: D) -> D:
        if delta > 0:
            size = op("SUM", size, const(delta))
        elif delta < 0:
            size = op("SUB", size, const(-delta))
        if params.stride1 > 1:
            size = op("CEIL_DIV", size, const(params.stride1))
        return size

    return [dims[0], const(params.output_channels), spatial(dims[2]), spatial(dims[3])]


def timing_cache_id(params: CorrelationParams) -> str:
    """The plugin's timing-cache ID: its creation state, e.g. ``"p20k1d20s1s2m1"`` for FlowNetC.

    TensorRT forms the cache key from this suffix plus the inputs' and outputs' shapes, formats and types;
    NVIDIA's samples use ``""``, which would also do (the plugin has one tactic), but naming the parameters
    keeps two differently configured layers of one shape apart.
    """
    return (
        f"p{params.pad_size}k{params.kernel_size}d{params.max_displacement}s{params.stride1}s{params.stride2}"
        f"m{params.corr_multiply:g}"
    )


def int_op(kind: str, a: int, b: int) -> int:
    """:func:`output_dims`'s operations on ints (what TensorRT computes once shapes are known)."""
    if kind == "SUM":
        return a + b
    if kind == "SUB":
        return a - b
    if kind == "CEIL_DIV":
        return -(-a // b)
    raise ValueError(f"unsupported dimension operation {kind!r}")


def format_combination_supported(
    pos: int, formats: Sequence[str], types: Sequence[str], num_inputs: int
) -> bool:
    """TensorRT's ``supports_format_combination`` decision, on names.

    ``formats[i]`` / ``types[i]``: ``TensorFormat`` / ``DataType`` member names of ``in_out[i]`` for
    i ≤ ``pos`` (positions 0, 1: inputs, 2: output). Accepted: LINEAR, FLOAT or HALF, and every tensor of
    the type of input 0.
    """
    if num_inputs != 2 or not 0 <= pos < 3 or len(formats) <= pos or len(types) <= pos:
        return False
    if formats[pos] != "LINEAR" or types[pos] not in _TENSOR_TYPES:
        return False
    return pos == 0 or types[pos] == types[0]


# ------------------------------------------------------------------------------------- TensorRT classes

_class_cache: dict[int, tuple[type, type]] = {}
_class_lock = threading.Lock()


def plugin_classes(trt_module: Any | None = None) -> tuple[type, type]:
    """``(plugin class, creator class)`` built on ``trt_module``'s base classes (once per module)."""
    trt = require_tensorrt(trt_module)
    with _class_lock:
        if id(trt) not in _class_cache:
            _class_cache[id(trt)] = _make_classes(trt)
        return _class_cache[id(trt)]


def _make_classes(trt: Any) -> tuple[type, type]:
    field_type = trt.PluginFieldType

    def collection(fields: Iterable[tuple[str, np.ndarray, str]]) -> Any:
        return trt.PluginFieldCollection(
            [trt.PluginField(name, data, getattr(field_type, kind)) for name, data, kind in fields]
        )

    class CorrelationPlugin(
        trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime
    ):
        """One correlation layer; see the module docstring."""

        def __init__(self, params: CorrelationParams, phase: Any = None) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.plugin_name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.num_outputs = 1
            self.timing_cache_id = timing_cache_id(params)  # else the timing cache skips the plugin
            self.params = params
            self.phase = phase
            self.input_shape: tuple[int, ...] | None = None
            self.dtype = "float32"

        # core / lifetime
        def get_capability_interface(self, type: Any) -> Any:
            return self

        def clone(self) -> Any:
            copy = CorrelationPlugin(self.params, self.phase)
            copy.input_shape, copy.dtype = self.input_shape, self.dtype
            return copy

        # build phase
        def get_output_data_types(self, input_types: Sequence[Any]) -> list[Any]:
            return [input_types[0]]

        def get_output_shapes(
            self, inputs: Sequence[Any], shape_inputs: Sequence[Any], expr_builder: Any
        ) -> list[Any]:
            source = inputs[0]
            dims = output_dims(
                self.params,
                [source[i] for i in range(len(source))],
                expr_builder.constant,
                lambda kind, a, b: expr_builder.operation(getattr(trt.DimensionOperation, kind), a, b),
            )
            out = trt.DimsExprs(source)
            for index, dim in enumerate(dims):
                out[index] = dim
            return [out]

        def supports_format_combination(self, pos: int, in_out: Sequence[Any], num_inputs: int) -> bool:
            if not 0 <= pos < len(in_out):
                return False
            descs = [in_out[i].desc for i in range(pos + 1)]
            return format_combination_supported(
                pos, [_enum_name(d.format) for d in descs], [_enum_name(d.type) for d in descs], num_inputs
            )

        def configure_plugin(self, inp: Sequence[Any], out: Sequence[Any]) -> None:
            self.dtype = _TENSOR_TYPES.get(_enum_name(inp[0].desc.type), "float32")

        def get_workspace_size(self, inp: Sequence[Any], out: Sequence[Any]) -> int:
            return 0

        def get_valid_tactics(self) -> list[int]:
            return []

        def set_tactic(self, tactic: int) -> None:
            pass

        # runtime phase
        def get_fields_to_serialize(self) -> Any:
            # Kept on the plugin: TensorRT reads the fields' numpy buffers after this returns.
            self._serialized_fields = params_to_fields(self.params)
            self._serialized = collection(self._serialized_fields)
            return self._serialized

        def on_shape_change(self, inp: Sequence[Any], out: Sequence[Any]) -> None:
            first, second = tuple(inp[0].dims), tuple(inp[1].dims)
            if first != second:
                raise ValueError(f"{PLUGIN_NAME}: inputs differ in shape, {first} and {second}")
            self.input_shape = first
            self.dtype = _TENSOR_TYPES.get(_enum_name(inp[0].type), "float32")

        def attach_to_context(self, resource_context: Any) -> Any:
            return self.clone()

        def enqueue(
            self,
            input_desc: Sequence[Any],
            output_desc: Sequence[Any],
            inputs: Sequence[int],
            outputs: Sequence[int],
            workspace: int,
            stream: int,
        ) -> None:
            from ..ops.cuda_correlation import launch_correlation

            batch, channels, height, width = (int(v) for v in input_desc[0].dims)
            dtype = _TENSOR_TYPES[_enum_name(input_desc[0].type)]
            launch_correlation(
                inputs[0], inputs[1], outputs[0], batch, channels, height, width, self.params, dtype, stream
            )

    class CorrelationPluginCreator(trt.IPluginCreatorV3One):
        """Creates :class:`CorrelationPlugin` from fields (ONNX attributes or a serialised engine)."""

        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_version = PLUGIN_VERSION
            self.plugin_namespace = PLUGIN_NAMESPACE
            self._empty_fields = [
                (name, np.array([], dtype=np.float32 if name == "corr_multiply" else np.int32), kind)
                for name, _, kind in params_to_fields(CorrelationParams())
            ]
            self.field_names = collection(self._empty_fields)

        def create_plugin(self, name: str, fc: Any, phase: Any) -> Any:
            fields = [(f.name, f.data, _enum_name(f.type)) for f in fc]
            return CorrelationPlugin(params_from_fields(fields), phase)

    return CorrelationPlugin, CorrelationPluginCreator


_registered: dict[int, Any] = {}  # keeps each registered creator alive (the registry holds a raw pointer)
_register_lock = threading.Lock()


def register_plugin(trt_module: Any | None = None) -> Any:
    """Register the correlation plugin creator in TensorRT's global registry; idempotent.

    Returns:
        the creator registered under (PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE).

    Raises:
        TensorRTUnavailableError: TensorRT missing or older than 10.3, or the registry refused it.
    """
    trt = require_tensorrt(trt_module)
    _, creator_class = plugin_classes(trt)
    with _register_lock:
        registry = trt.get_plugin_registry()
        existing = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        if existing is not None:
            return existing
        creator = creator_class()
        if not registry.register_creator(creator, PLUGIN_NAMESPACE):
            raise TensorRTUnavailableError(f"TensorRT refused to register the {PLUGIN_NAME} plugin creator")
        _registered[id(trt)] = creator
        return creator
