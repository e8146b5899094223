"""ONNX export (correlation as the FlowNet2Correlation plugin node or decomposed), fp16 graphs, parity on
ONNX Runtime with the Python custom op, restoration of the model, and the flownet2-export-onnx CLI.

Weights: random init from torch.manual_seed with every ``predict_flow2``/``predict_flow0`` weight ×20, so
that the flows are tens of pixels (plain random init gives ~0.1-1 px, which would make any tolerance
meaningless) and the warps move pixels. Sizes are small (64×128) to keep the file ≲ 30 s on 2 cores.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from flownet2_ros.cli import export_onnx as cli
from flownet2_ros.export import onnx_export
from flownet2_ros.export.onnx_export import (
    ExportInfo,
    correlation_decomposed,
    export_correlation_as,
    export_onnx,
    state_dict_sha256,
)
from flownet2_ros.export.ort_correlation import (
    make_ort_session,
    run_onnx,
    validate_against_torch,
    validation_images,
)
from flownet2_ros.export.plugin_spec import (
    CORRELATION_ATTRIBUTES,
    PLUGIN_DOMAIN,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from flownet2_ros.models import build, stacks
from flownet2_ros.ops import Correlation, correlation

H, W = 64, 128
# float32: different summation orders (ORT's GEMMs vs torch's, the banded correlation) differ by ~1e-7
# relative; bilinear warps and four chained networks amplify that, so the bound grows with the flow.
FP32_ATOL = 1e-3  # px, plus FP32_RTOL × the largest flow
FP32_RTOL = 5e-5


def _model(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(name, **options)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith(("predict_flow2.weight", "predict_flow0.weight")):
                param.mul_(20.0)
    return model.eval()


def _correlations(model):
    return [m for m in model.modules() if isinstance(m, Correlation)]


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def flownet2c():
    """Full-width FlowNet2C (39 M parameters)."""
    return _model("FlowNet2C")


@pytest.fixture(scope="module")
def flownet2_thin():
    """FlowNet2 at the paper's thin width 3/8 (23 M parameters; full width would be 650 MB per file)."""
    return _model("FlowNet2", thin=True)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, flownet2c, flownet2_thin):
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for key, model, options in (
        ("c_plugin", flownet2c, {}),
        ("c_decomposed", flownet2c, {"correlation": "decomposed"}),
        ("fn2_plugin", flownet2_thin, {}),
        ("fn2_decomposed", flownet2_thin, {"correlation": "decomposed", "opset": 19}),
        ("fn2_fp16", flownet2_thin, {"precision": "fp16"}),
    ):
        out[key] = export_onnx(model, folder / f"{key}.onnx", H, W, **options)
    return out


# ----------------------------------------------------------------------------------------------------
# graph structure


def test_plugin_graph(exports, flownet2_thin):
    info = exports["fn2_plugin"]
    onnx.checker.check_model(str(info.path), full_check=True)
    proto = onnx.load(str(info.path))
    opsets = {o.domain: o.version for o in proto.opset_import}
    assert opsets[""] == 17 and opsets[PLUGIN_DOMAIN] == 1
    nodes = [n for n in proto.graph.node if n.op_type == PLUGIN_NAME]
    assert len(nodes) == len(_correlations(flownet2_thin)) == info.custom_node_count == 1
    node, module = nodes[0], _correlations(flownet2_thin)[0]
    assert node.domain == PLUGIN_DOMAIN and len(node.input) == 2 and len(node.output) == 1
    attrs = _attrs(node)
    assert set(attrs) == {*CORRELATION_ATTRIBUTES, "plugin_version", "plugin_namespace"}
    for name in CORRELATION_ATTRIBUTES[:5]:
        assert attrs[name] == getattr(module, name)
    assert isinstance(attrs["corr_multiply"], float) and attrs["corr_multiply"] == module.corr_multiply
    assert attrs["plugin_version"] == PLUGIN_VERSION.encode()
    assert attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
    # warps: bilinear, border, align_corners=1 (2 in CSS, 2 before the fusion net)
    grid = [n for n in proto.graph.node if n.op_type == "GridSample"]
    assert len(grid) == 4 == info.grid_sample_count
    for g in grid:
        assert _attrs(g) == {"mode": b"bilinear", "padding_mode": b"border", "align_corners": 1}
    # channel norms with a standard op
    assert sum(n.op_type == "ReduceL2" for n in proto.graph.node) == 6
    # I/O
    ins = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(ins) == ["image1", "image2"]
    for t in ins.values():
        assert t.elem_type == TensorProto.FLOAT and [d.dim_value for d in t.shape.dim] == [1, 3, H, W]
    (out,) = proto.graph.output
    assert out.name == "flow" and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 2, H, W]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["flownet2_ros.stack"] == "FlowNet2" and meta["flownet2_ros.correlation"] == "plugin"


def test_export_info(exports, flownet2c):
    info = exports["c_plugin"]
    assert isinstance(info, ExportInfo)
    assert (info.stack, info.height, info.width, info.precision, info.opset, info.correlation) == (
        "FlowNet2C",
        H,
        W,
        "fp32",
        17,
        "plugin",
    )
    assert info.file_size == info.path.stat().st_size > 39e6 * 4  # float32 weights inline
    assert info.onnx_sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert info.weights_sha256 == state_dict_sha256(flownet2c)
    assert info.node_count == len(onnx.load(str(info.path)).graph.node)
    assert "FlowNet2C" in info.summary() and info.as_dict()["path"] == str(info.path)


def test_decomposed_graph_has_standard_ops_only(exports):
    for key in ("c_decomposed", "fn2_decomposed"):
        info = exports[key]
        proto = onnx.load(str(info.path))
        assert info.custom_node_count == 0
        assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
        assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}
        onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in onnx.load(str(exports["fn2_decomposed"].path)).opset_import} == {19}


# ----------------------------------------------------------------------------------------------------
# parity on ONNX Runtime


@pytest.mark.parametrize(
    ("key", "model_name"),
    [
        ("c_plugin", "flownet2c"),
        ("c_decomposed", "flownet2c"),
        ("fn2_plugin", "flownet2_thin"),
        ("fn2_decomposed", "flownet2_thin"),
    ],
)
def test_ort_parity_fp32(exports, key, model_name, request):
    model = request.getfixturevalue(model_name)
    result = validate_against_torch(model, exports[key].path, H, W)
    assert result.max_flow > 5.0  # non-trivial flows
    print(key, result.summary())
    assert result.max_abs_diff < FP32_ATOL + FP32_RTOL * result.max_flow, result.summary()


def test_fp16_graph(exports, flownet2_thin):
    info = exports["fn2_fp16"]
    assert info.precision == "fp16" and info.correlation_dtype == "float16"
    proto = onnx.load(str(info.path))
    float_inits = [
        i for i in proto.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)
    ]
    big = [i for i in float_inits if np.prod(i.dims) > 64]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)  # weights stored as fp16
    producers = {o: n for n in proto.graph.node for o in n.output}
    out = producers["flow"]
    assert out.op_type == "Cast" and _attrs(out)["to"] == TensorProto.FLOAT
    casts_to_half = [
        n for n in proto.graph.node if n.op_type == "Cast" and _attrs(n)["to"] == TensorProto.FLOAT16
    ]
    assert len(casts_to_half) >= 2
    # inputs stay float32; the correlation is fed float16
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in proto.graph.input)
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    (corr,) = [n for n in proto.graph.node if n.op_type == PLUGIN_NAME]
    assert [types[i] for i in corr.input] == [TensorProto.FLOAT16] * 2
    # GridSample runs in float32 (pixel coordinates need it)
    for g in (n for n in proto.graph.node if n.op_type == "GridSample"):
        assert types[g.input[1]] == TensorProto.FLOAT
    # Against the float32 torch model. The bound is set by torch itself: the same model run in float16 by
    # torch (weights .half(), same fp32 mean subtraction and fp32 warps/norms) deviates from float32 by
    # what float16 rounding (2^-11 relative per operation) does through C → S → S, SD and the fusion net
    # with four warps; random weights scaled ×20 make that chain sensitive (measured: torch fp16 ~1.2 px,
    # mean 0.15 px at flows of 34 px; FlowNet2C alone 0.03 px). The exported graph on ORT must stay
    # within twice that (measured ratio ~1.1); a misplaced cast (fp16 grid coordinates, fp16 mean over
    # the image) or a wrong correlation shows up as several pixels.
    result = validate_against_torch(flownet2_thin, info.path, H, W)
    image1, image2 = validation_images(H, W)
    with torch.no_grad():
        reference = flownet2_thin(image1, image2)
        half_model = copy.deepcopy(flownet2_thin).half()
        with onnx_export._normalize_then_half():
            torch_half = half_model(image1, image2).float()
    torch_dev = (torch_half - reference).abs()
    print(
        "fp16",
        result.summary(),
        f"| torch fp16 vs fp32: max {torch_dev.max():.3g}, mean {torch_dev.mean():.3g}",
    )
    assert result.max_flow > 5.0
    assert result.max_abs_diff < 2 * torch_dev.max().item() + 0.01, result.summary()
    assert result.mean_abs_diff < 2 * torch_dev.mean().item() + 0.001, result.summary()


def test_dynamic_batch_and_foreign_domain(tmp_path):
    model = _model("FlowNet2C", thin=True)
    info = export_onnx(model, tmp_path / "c.onnx", H, W, dynamic_batch=True)
    gen = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, H, W, generator=gen) * 255
    b = torch.roll(a, (1, 2), (2, 3))
    with torch.no_grad():
        expected = model(a, b).numpy()
    got = run_onnx(make_ort_session(info.path), a.numpy(), b.numpy())
    assert got.shape == (2, 2, H, W)
    assert np.abs(got - expected).max() < FP32_ATOL + FP32_RTOL * np.abs(expected).max()
    # A graph whose custom node sits in another domain (e.g. re-exported for TensorRT only) still runs.
    proto = onnx.load(str(info.path))
    for node in proto.graph.node:
        if node.op_type == PLUGIN_NAME:
            node.domain = "trt.plugins"
    proto.opset_import.append(helper.make_opsetid("trt.plugins", 1))
    onnx.save(proto, str(tmp_path / "trt.onnx"))
    got = run_onnx(make_ort_session(tmp_path / "trt.onnx"), a[:1].numpy()[0], b[:1].numpy()[0])
    assert np.abs(got - expected[:1]).max() < FP32_ATOL + FP32_RTOL * np.abs(expected).max()


def test_correlation_decomposed_matches_op():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 2, 7, 9, 11, generator=gen)
    for cfg in [
        (20, 1, 20, 1, 2),
        (4, 1, 4, 1, 1),
        (3, 1, 4, 1, 2),
        (5, 1, 3, 1, 3),
        (6, 3, 4, 1, 2),
        (4, 1, 4, 2, 2),
    ]:
        expected = correlation(a, b, *cfg, corr_multiply=1.5)
        for method in ("auto", "sliced"):
            got = correlation_decomposed(a, b, *cfg, corr_multiply=1.5, method=method)
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# the model is left as it was


def test_model_restored_after_export(exports, flownet2_thin):
    # `exports` already exported flownet2_thin three times, once in fp16.
    for module in _correlations(flownet2_thin):
        assert "forward" not in module.__dict__
    assert all(p.dtype == torch.float32 for p in flownet2_thin.parameters())
    assert not flownet2_thin.training
    fresh = _model("FlowNet2", thin=True)
    for (k1, v1), (k2, v2) in zip(
        flownet2_thin.state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)


def test_model_restored_after_failed_export(tmp_path, monkeypatch):
    model = _model("FlowNet2CS", thin=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    original_normalize = stacks.normalize_pair
    seen = {}

    def failing_export(*args, **kwargs):
        seen["substituted"] = all("forward" in m.__dict__ for m in _correlations(model))
        seen["half"] = next(model.parameters()).dtype == torch.float16
        seen["normalize_patched"] = stacks.normalize_pair is not original_normalize
        raise RuntimeError("boom")

    monkeypatch.setattr(onnx_export.torch.onnx, "export", failing_export)
    with pytest.raises(RuntimeError, match="boom"):
        export_onnx(model, tmp_path / "x.onnx", H, W, precision="fp16")
    assert seen == {"substituted": True, "half": True, "normalize_patched": True}
    assert stacks.normalize_pair is original_normalize
    assert model.training
    for module in _correlations(model):
        assert "forward" not in module.__dict__
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key])
    assert list(tmp_path.iterdir()) == []  # no partial file


def test_export_correlation_as_restores_on_error():
    model = _model("FlowNet2C", thin=True)
    (module,) = _correlations(model)
    with pytest.raises(KeyError), export_correlation_as(model, "decomposed") as count:
        assert count == 1 and "forward" in module.__dict__
        raise KeyError("inside")
    assert "forward" not in module.__dict__


# ----------------------------------------------------------------------------------------------------
# refused options


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"opset": 16}, "opset"),
        ({"opset": 20}, "opset"),
        ({"height": 100}, "multiple of 64"),
        ({"width": 96}, "multiple of 64"),
        ({"precision": "int8"}, "precision"),
        ({"correlation": "cuda"}, "correlation"),
    ],
)
def test_refused_options(tmp_path, kwargs, match):
    model = _model("FlowNet2S", thin=True)
    args = {"height": H, "width": W, **kwargs}
    height, width = args.pop("height"), args.pop("width")
    with pytest.raises(ValueError, match=match):
        export_onnx(model, tmp_path / "x.onnx", height, width, **args)
    assert not (tmp_path / "x.onnx").exists()


def test_refuses_non_stack(tmp_path):
    with pytest.raises(ValueError, match="stack"):
        export_onnx(torch.nn.Conv2d(3, 2, 1), tmp_path / "x.onnx", H, W)


# ----------------------------------------------------------------------------------------------------
# CLI


def _cli_fails(argv, capsys, expected):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flownet2-export-onnx: error: ")
    assert expected in err[0]


def test_cli_help_describes_every_flag(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        assert action.help, f"no help for {action.option_strings}"
        for flag in action.option_strings:
            assert flag in text
    for flag in (
        "--checkpoint",
        "--model",
        "--thin",
        "--width",
        "--random-weights",
        "--input-size",
        "--precision",
        "--opset",
        "--correlation",
        "--dynamic-batch",
        "--output",
        "--validate",
        "--verbose",
    ):
        assert flag in text


def test_cli_errors(tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    _cli_fails(
        ["--checkpoint", str(tmp_path / "missing.pth"), "--input-size", "128x64", "-o", out],
        capsys,
        "checkpoint not found",
    )
    _cli_fails(["--model", "FlowNet2C", "--input-size", "128x64", "-o", out], capsys, "--random-weights")
    _cli_fails(["--random-weights", "--input-size", "128x64", "-o", out], capsys, "--model")
    _cli_fails(
        ["--model", "FlowNet2C", "--random-weights", "--input-size", "128x64", "--opset", "20", "-o", out],
        capsys,
        "opset",
    )
    _cli_fails(
        ["--model", "FlowNet2C", "--random-weights", "--input-size", "100x64", "-o", out],
        capsys,
        "multiple of 64",
    )
    _cli_fails(["--model", "Nope", "--random-weights", "--input-size", "128x64", "-o", out], capsys, "Nope")
    assert not (tmp_path / "x.onnx").exists()


def test_cli_exports_and_validates(tmp_path, capsys):
    out = tmp_path / "sub" / "c.onnx"
    argv = [
        "--model",
        "FlowNet2C",
        "--thin",
        "--random-weights",
        "--input-size",
        "128x64",
        "--correlation",
        "decomposed",
        "--output",
        str(out),
        "--validate",
    ]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "FlowNet2C" in text and "max |diff|" in text and "ORT CPU" in text


def test_cli_checkpoint(tmp_path, capsys):
    model = _model("FlowNet2S", thin=True)
    ckpt = tmp_path / "s.pth.tar"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, ckpt)
    out = tmp_path / "s.onnx"
    assert (
        cli.main(["--checkpoint", str(ckpt), "--input-size", "128x64", "--precision", "fp16", "-o", str(out)])
        == 0
    )
    assert "FlowNet2S" in capsys.readouterr().out and out.is_file()
    _cli_fails(
        ["--checkpoint", str(ckpt), "--thin", "--input-size", "128x64", "-o", str(out)], capsys, "--thin"
    )
