"""The correlation TensorRT plugin: plain decision functions, and the plugin/creator on TensorRT's real
classes and registry (the lean runtime ``tensorrt_lean`` suffices; no GPU, no builder).

Tests marked ``tensorrt`` build and run a one-layer network and need the full TensorRT with a GPU.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from flownet2_ros.export import trt_plugin as tp
from flownet2_ros.export.plugin_spec import (
    CORRELATION_ATTRIBUTES,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from flownet2_ros.ops.correlation import correlation, correlation_output_size
from flownet2_ros.ops.cuda_correlation import CorrelationParams

FLOWNETC_FIELDS = [
    ("pad_size", np.array([20], np.int32), "INT32"),
    ("kernel_size", np.array([1], np.int32), "INT32"),
    ("max_displacement", np.array([20], np.int32), "INT32"),
    ("stride1", np.array([1], np.int32), "INT32"),
    ("stride2", np.array([2], np.int32), "INT32"),
    ("corr_multiply", np.array([1.0], np.float32), "FLOAT32"),
]


@pytest.fixture(scope="module")
def trt() -> Any:
    module = tp.import_tensorrt()
    if module is None:
        pytest.skip("hardware/toolchain: no TensorRT Python bindings (pip install tensorrt-lean-cu12)")
    return module


@pytest.fixture(scope="module")
def creator(trt: Any) -> Any:
    return tp.register_plugin(trt)


def _collection(trt: Any, fields: list[tuple[str, Any, str]]) -> Any:
    return trt.PluginFieldCollection(
        [
            trt.PluginField(name, np.asarray(data), getattr(trt.PluginFieldType, kind))
            for name, data, kind in fields
        ]
    )


def _create(trt: Any, fields: list[tuple[str, Any, str]], phase: str = "BUILD") -> Any:
    creator = trt.get_plugin_registry().get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
    return creator.create_plugin("corr", _collection(trt, fields), getattr(trt.TensorRTPhase, phase))


def _replace(name: str, data: Any, kind: str = "INT32") -> list[tuple[str, Any, str]]:
    return [(n, data, kind) if n == name else (n, d, k) for n, d, k in FLOWNETC_FIELDS]


# ------------------------------------------------------------------------------------ plain functions


def test_params_from_fields_flownetc() -> None:
    assert tp.params_from_fields(FLOWNETC_FIELDS) == CorrelationParams()


def test_params_fields_round_trip() -> None:
    params = CorrelationParams(3, 3, 7, 2, 3, 0.25)
    assert tp.params_from_fields(tp.params_to_fields(params)) == params
    assert [name for name, _, _ in tp.params_to_fields(params)] == list(CORRELATION_ATTRIBUTES)


def test_corr_multiply_is_optional() -> None:
    fields = [f for f in FLOWNETC_FIELDS if f[0] != "corr_multiply"]
    assert tp.params_from_fields(fields).corr_multiply == 1.0


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([f for f in FLOWNETC_FIELDS if f[0] != "pad_size"], "missing field.*pad_size"),
        (_replace("kernel_size", np.array([2], np.int32)), "kernel_size must be odd"),
        (_replace("pad_size", np.array([-1], np.int32)), "pad_size must be >= 0"),
        (_replace("stride1", np.array([0], np.int32)), "stride1 must be >= 1"),
        (_replace("stride2", np.array([2.0], np.float32), "FLOAT32"), "'stride2' must be INT32"),
        (_replace("max_displacement", np.array([4, 4], np.int32)), "one value, got 2"),
        (_replace("corr_multiply", np.array([np.nan], np.float32), "FLOAT32"), "finite"),
        (_replace("corr_multiply", np.array([1], np.int8), "CHAR"), "must be FLOAT32"),
        ([*FLOWNETC_FIELDS, ("bogus", np.array([1], np.int32), "INT32")], "unknown field 'bogus'"),
        ([*FLOWNETC_FIELDS, FLOWNETC_FIELDS[0]], "'pad_size' given twice"),
    ],
)
def test_params_from_fields_errors(fields: list[tuple[str, Any, str]], match: str) -> None:
    with pytest.raises(tp.PluginFieldError, match=match) as info:
        tp.params_from_fields(fields)
    assert str(info.value).startswith(PLUGIN_NAME)


def test_output_dims_match_reference_formula() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for pad, k, md, s1, s2 in itertools.product(
        [0, 1, 4, 20], [1, 3, 5], [0, 2, 5, 20], [1, 2, 3], [1, 2, 3]
    ):
        params = CorrelationParams(pad, k, md, s1, s2)
        for _ in range(3):
            h, w = (int(v) for v in rng.integers(1, 120, size=2))
            try:
                want = correlation_output_size(h, w, pad, k, md, s1, s2)
            except ValueError:
                continue
            got = tp.output_dims(params, [2, 7, h, w], int, tp.int_op)
            assert got == [2, *want], (pad, k, md, s1, s2, h, w)
            checked += 1
    assert checked > 300


def test_output_dims_symbolic_operations() -> None:
    """Only SUM/SUB/CEIL_DIV on non-negative constants; the batch dimension passes through untouched."""
    ops: list[tuple[str, Any, Any]] = []

    def const(value: int) -> Any:
        assert value >= 0
        return ("const", value)

    def op(kind: str, a: Any, b: Any) -> Any:
        ops.append((kind, a, b))
        return (kind, a, b)

    symbols: list[Any] = ["B", "C", "H", "W"]
    dims = tp.output_dims(CorrelationParams(20, 1, 20, 1, 2), symbols, const, op)
    assert dims == ["B", ("const", 441), "H", "W"] and not ops  # FlowNetC: H' = H
    dims = tp.output_dims(CorrelationParams(0, 3, 4, 2, 1), symbols, const, op)
    assert dims[2] == ("CEIL_DIV", ("SUB", "H", ("const", 10)), ("const", 2))
    assert {kind for kind, _, _ in ops} == {"SUB", "CEIL_DIV"}
    with pytest.raises(ValueError, match="4-D"):
        tp.output_dims(CorrelationParams(), symbols[:3], const, op)


@pytest.mark.parametrize(
    ("pos", "formats", "types", "expected"),
    [
        (0, ["LINEAR"], ["FLOAT"], True),
        (0, ["LINEAR"], ["HALF"], True),
        (0, ["LINEAR"], ["INT8"], False),
        (0, ["LINEAR"], ["BF16"], False),
        (0, ["CHW32"], ["FLOAT"], False),
        (1, ["LINEAR", "LINEAR"], ["HALF", "HALF"], True),
        (1, ["LINEAR", "LINEAR"], ["FLOAT", "HALF"], False),
        (2, ["LINEAR"] * 3, ["FLOAT"] * 3, True),
        (2, ["LINEAR", "LINEAR", "HWC8"], ["HALF"] * 3, False),
        (2, ["LINEAR"] * 3, ["HALF", "HALF", "FLOAT"], False),
        (3, ["LINEAR"] * 4, ["FLOAT"] * 4, False),
    ],
)
def test_format_combination(pos: int, formats: list[str], types: list[str], expected: bool) -> None:
    assert tp.format_combination_supported(pos, formats, types, 2) is expected


def test_format_combination_needs_two_inputs() -> None:
    assert not tp.format_combination_supported(0, ["LINEAR"], ["FLOAT"], 1)


def test_require_tensorrt_version_checks() -> None:
    old = SimpleNamespace(__version__="10.2.0.19", __name__="tensorrt")
    with pytest.raises(tp.TensorRTUnavailableError, match=r"10\.2\.0\.19 is too old.*10\.3"):
        tp.require_tensorrt(old)
    assert tp.tensorrt_version(SimpleNamespace(__version__="10.3.0.26")) == (10, 3, 0, 26)
    assert tp.tensorrt_version(SimpleNamespace(__version__="11.4.0.106rc1")) == (11, 4, 0, 106)


def test_require_tensorrt_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tp, "import_tensorrt", lambda: None)
    with pytest.raises(tp.TensorRTUnavailableError, match="not installed"):
        tp.require_tensorrt()


# ------------------------------------------------------------------------- real classes and registry


def test_registration_is_idempotent(trt: Any, creator: Any) -> None:
    registry = trt.get_plugin_registry()
    assert registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is creator
    assert tp.register_plugin(trt) is creator
    assert tp.register_plugin() is creator  # default module lookup finds the same registration
    assert (creator.name, creator.plugin_version, creator.plugin_namespace) == (
        PLUGIN_NAME,
        PLUGIN_VERSION,
        PLUGIN_NAMESPACE,
    )
    assert [f.name for f in creator.field_names] == list(CORRELATION_ATTRIBUTES)
    names = [getattr(c, "name", None) for c in registry.all_creators]
    assert names.count(PLUGIN_NAME) == 1


def test_create_plugin_through_registry(trt: Any, creator: Any) -> None:
    fields = _replace("max_displacement", np.array([8], np.int32))
    plugin = _create(trt, fields)
    assert isinstance(plugin, trt.IPluginV3)
    assert plugin.params == CorrelationParams(max_displacement=8)
    assert (plugin.plugin_name, plugin.plugin_version, plugin.plugin_namespace) == (
        PLUGIN_NAME,
        PLUGIN_VERSION,
        PLUGIN_NAMESPACE,
    )
    assert plugin.num_outputs == 1
    for kind in ("CORE", "BUILD", "RUNTIME"):
        assert plugin.get_capability_interface(getattr(trt.PluginCapabilityType, kind)) is plugin
    assert plugin.get_workspace_size([], []) == 0


def test_timing_cache_id_is_set(trt: Any, creator: Any) -> None:
    """A null ID leaves the plugin out of the timing cache (TensorRT 10.3); the ID names the parameters."""
    ids = {tp.timing_cache_id(CorrelationParams(max_displacement=d)) for d in (4, 8, 20)}
    assert len(ids) == 3 and all(ids)
    assert tp.timing_cache_id(CorrelationParams()) == "p20k1d20s1s2m1"
    plugin = _create(trt, _replace("max_displacement", np.array([8], np.int32)))
    assert isinstance(plugin, trt.IPluginV3OneBuild)
    assert plugin.timing_cache_id == tp.timing_cache_id(CorrelationParams(max_displacement=8))
    assert plugin.clone().timing_cache_id == plugin.timing_cache_id


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ([f for f in FLOWNETC_FIELDS if f[0] != "stride2"], "missing field.*stride2"),
        (_replace("kernel_size", np.array([4], np.int32)), "odd"),
        (_replace("pad_size", np.array([1.5], np.float32), "FLOAT32"), "must be INT32"),
    ],
)
def test_create_plugin_bad_fields(
    trt: Any, creator: Any, fields: list[tuple[str, Any, str]], match: str
) -> None:
    with pytest.raises(tp.PluginFieldError, match=match):
        _create(trt, fields)


def test_clone_and_serialize_round_trip(trt: Any, creator: Any) -> None:
    fields = [
        ("pad_size", np.array([3], np.int32), "INT32"),
        ("kernel_size", np.array([3], np.int32), "INT32"),
        ("max_displacement", np.array([6], np.int32), "INT32"),
        ("stride1", np.array([2], np.int32), "INT32"),
        ("stride2", np.array([3], np.int32), "INT32"),
        ("corr_multiply", np.array([0.5], np.float32), "FLOAT32"),
    ]
    plugin = _create(trt, fields)
    clone = plugin.clone()
    assert (
        clone is not plugin and clone.params == plugin.params and isinstance(clone, trt.IPluginV3OneRuntime)
    )
    serialized = plugin.get_fields_to_serialize()
    assert [f.name for f in serialized] == list(CORRELATION_ATTRIBUTES)
    assert [f.type for f in serialized][:5] == [trt.PluginFieldType.INT32] * 5
    assert serialized[5].type == trt.PluginFieldType.FLOAT32
    again = creator.create_plugin("corr", serialized, trt.TensorRTPhase.RUNTIME)
    assert again.params == plugin.params == CorrelationParams(3, 3, 6, 2, 3, 0.5)
    assert again.phase == trt.TensorRTPhase.RUNTIME
    assert plugin.attach_to_context(None).params == plugin.params


def _desc(trt: Any, dtype: str, dims: tuple[int, ...]) -> Any:
    desc = trt.PluginTensorDesc()
    desc.type = getattr(trt.DataType, dtype)
    desc.dims = trt.Dims(list(dims))
    return desc


def test_output_data_types(trt: Any, creator: Any) -> None:
    plugin = _create(trt, FLOWNETC_FIELDS)
    half = trt.DataType.HALF
    assert plugin.get_output_data_types([half, half]) == [half]


def test_supports_format_combination_method(trt: Any, creator: Any) -> None:
    plugin = _create(trt, FLOWNETC_FIELDS)

    def io(*specs: tuple[str, str]) -> list[Any]:
        # The lean bindings cannot read TensorFormat values, so the format is a stand-in with a name.
        return [
            SimpleNamespace(
                desc=SimpleNamespace(format=SimpleNamespace(name=fmt), type=getattr(trt.DataType, t))
            )
            for fmt, t in specs
        ]

    assert plugin.supports_format_combination(0, io(("LINEAR", "HALF")), 2)
    assert plugin.supports_format_combination(
        2, io(("LINEAR", "FLOAT"), ("LINEAR", "FLOAT"), ("LINEAR", "FLOAT")), 2
    )
    assert not plugin.supports_format_combination(1, io(("LINEAR", "HALF"), ("LINEAR", "FLOAT")), 2)
    assert not plugin.supports_format_combination(0, io(("CHW4", "FLOAT")), 2)
    assert not plugin.supports_format_combination(0, io(("LINEAR", "INT8")), 2)
    assert not plugin.supports_format_combination(5, io(("LINEAR", "FLOAT")), 2)


def test_on_shape_change_and_configure(trt: Any, creator: Any) -> None:
    plugin = _create(trt, FLOWNETC_FIELDS)
    a, b = _desc(trt, "HALF", (1, 256, 48, 64)), _desc(trt, "HALF", (1, 256, 48, 64))
    out = _desc(trt, "HALF", (1, 441, 48, 64))
    plugin.on_shape_change([a, b], [out])
    assert plugin.input_shape == (1, 256, 48, 64) and plugin.dtype == "float16"
    with pytest.raises(ValueError, match="differ in shape"):
        plugin.on_shape_change([a, _desc(trt, "HALF", (1, 256, 48, 32))], [out])
    dyn = trt.DynamicPluginTensorDesc()
    dyn.desc = _desc(trt, "FLOAT", (1, 256, 48, 64))
    plugin.configure_plugin([dyn, dyn], [dyn])
    assert plugin.dtype == "float32"


def test_enqueue_forwards_to_kernel_launch(trt: Any, creator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flownet2_ros.ops import cuda_correlation

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cuda_correlation, "launch_correlation", lambda *args, **kw: calls.append((args, kw)))
    plugin = _create(trt, _replace("max_displacement", np.array([10], np.int32)))
    a = _desc(trt, "HALF", (2, 64, 24, 40))
    plugin.enqueue([a, a], [_desc(trt, "HALF", (2, 121, 24, 40))], [0x1000, 0x2000], [0x3000], 0, 0xBEEF)
    ((args, kwargs),) = calls
    assert args == (
        0x1000,
        0x2000,
        0x3000,
        2,
        64,
        24,
        40,
        CorrelationParams(max_displacement=10),
        "float16",
        0xBEEF,
    )
    assert kwargs == {}


# ------------------------------------------------------------------------------ full TensorRT with a GPU


def _full_tensorrt_or_skip() -> Any:
    module = tp.import_tensorrt()
    if module is None or not hasattr(module, "Builder") or not torch.cuda.is_available():
        pytest.skip("hardware: full TensorRT with a GPU not available")
    return module


@pytest.mark.tensorrt
@pytest.mark.parametrize("dtype", ["FLOAT", "HALF"])
def test_plugin_in_a_built_network(dtype: str) -> None:
    trt = _full_tensorrt_or_skip()
    tp.register_plugin(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    shape = (1, 32, 24, 40)
    data_type = getattr(trt.DataType, dtype)
    x1 = network.add_input("x1", data_type, shape)
    x2 = network.add_input("x2", data_type, shape)
    plugin = _create(trt, FLOWNETC_FIELDS)
    layer = network.add_plugin_v3([x1, x2], [], plugin)
    network.mark_output(layer.get_output(0))
    config = builder.create_builder_config()
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    torch_dtype = torch.float32 if dtype == "FLOAT" else torch.float16
    a = torch.randn(shape, device="cuda", dtype=torch_dtype)
    b = torch.randn(shape, device="cuda", dtype=torch_dtype)
    out = torch.empty((1, 441, 24, 40), device="cuda", dtype=torch_dtype)
    for name, tensor in (("x1", a), ("x2", b), (layer.get_output(0).name, out)):
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    want = correlation(a.float(), b.float())
    torch.testing.assert_close(out.float(), want, rtol=0, atol=1e-5 if dtype == "FLOAT" else 2e-3)
