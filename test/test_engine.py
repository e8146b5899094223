"""Engine metadata/cache, the engine builder's decisions (against a stand-in TensorRT), the
``flownet2-build-engine`` CLI's failures, and the TensorRT backend's refusal/fallback on this machine.

Tests marked ``tensorrt`` export, build and run a real engine and need the full TensorRT with a GPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from flownet2_ros.backends import BackendConfig, BackendError, TorchFlowEstimator, create_estimator
from flownet2_ros.backends import tensorrt_backend as tb
from flownet2_ros.cli import build_engine as cli
from flownet2_ros.export import engine_builder as eb
from flownet2_ros.export import engine_metadata as em
from flownet2_ros.export.plugin_spec import PLUGIN_NAME

GPU = ("NVIDIA Jetson AGX Orin", "8.7")


def _meta(**changes: Any) -> em.EngineMetadata:
    base = em.EngineMetadata(
        tensorrt_version="10.3.0.30",
        gpu_name=GPU[0],
        compute_capability=GPU[1],
        precision="fp16",
        input_height=384,
        input_width=512,
        stack="FlowNet2",
        source_sha256="ab" * 32,
        source_kind="weights",
        plugin="FlowNet2Correlation/1/flownet2_ros",
        package_version="0.1.0",
        created="2025-01-01T00:00:00+00:00",
    )
    return replace(base, **changes)


def _engine(tmp_path: Path, meta: em.EngineMetadata | None = None, data: bytes = b"plan" * 100) -> Path:
    path = tmp_path / "model.engine"
    path.write_bytes(data)
    meta = meta or _meta()
    meta = replace(meta, engine_sha256=em.file_sha256(path), engine_size=len(data))
    em.write_metadata(path, meta)
    return path


def _expect(**changes: Any) -> em.EngineExpectation:
    base = em.EngineExpectation(
        tensorrt_version="10.3.0.30",
        gpu_name=GPU[0],
        compute_capability=GPU[1],
        precision="fp16",
        input_size=(384, 512),
    )
    return replace(base, **changes)


# ------------------------------------------------------------------------------------------- metadata


def test_sidecar_round_trip(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert em.sidecar_path(engine) == tmp_path / "model.engine.json"
    meta = em.read_metadata(engine)
    assert meta.input_size == (384, 512) and meta.engine_size == 400 and len(meta.engine_sha256) == 64
    assert em.EngineMetadata.from_dict(json.loads(em.sidecar_path(engine).read_text())) == meta
    assert em.check_engine(engine, _expect()) == meta


@pytest.mark.parametrize(
    ("expectation", "match"),
    [
        (_expect(tensorrt_version="10.7.0.23"), "TensorRT 10.3.0.30.*TensorRT 10.7.0.23"),
        (_expect(gpu_name="NVIDIA H200"), "GPU NVIDIA Jetson AGX Orin.*NVIDIA H200"),
        (_expect(compute_capability="9.0"), "compute capability 8.7"),
        (_expect(input_size=(448, 1024)), "input size 512x384.*1024x448"),
        (_expect(precision="fp32"), "precision fp16.*fp32"),
        (_expect(stack="FlowNet2C"), "stack FlowNet2.*FlowNet2C"),
        (_expect(source_sha256="cd" * 32), "weights abab"),
    ],
)
def test_mismatch_detected(tmp_path: Path, expectation: em.EngineExpectation, match: str) -> None:
    engine = _engine(tmp_path)
    with pytest.raises(em.EngineMismatchError, match=match) as info:
        em.check_engine(engine, expectation)
    assert "rebuild" in str(info.value)


def test_corrupt_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(em.EngineMismatchError, match="not found"):
        em.check_engine(tmp_path / "nothing.engine", _expect())
    engine = _engine(tmp_path)
    sidecar = em.sidecar_path(engine)
    sidecar.write_text("{ not json")
    with pytest.raises(em.EngineMismatchError, match="corrupt"):
        em.check_engine(engine, _expect())
    sidecar.write_text(json.dumps({"precision": "fp16"}))
    with pytest.raises(em.EngineMismatchError, match=r"corrupt.*missing key"):
        em.check_engine(engine, _expect())
    sidecar.write_text(json.dumps({**_meta().to_dict(), "input_height": "big"}))
    with pytest.raises(em.EngineMismatchError, match="corrupt"):
        em.check_engine(engine, _expect())
    sidecar.unlink()
    with pytest.raises(em.EngineMismatchError, match=r"metadata .* not found"):
        em.check_engine(engine, _expect())


def test_changed_or_empty_engine(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    engine.write_bytes(b"x" * 400)  # same size, other content
    with pytest.raises(em.EngineMismatchError, match="SHA-256"):
        em.check_engine(engine, _expect())
    assert em.check_engine(engine, _expect(), verify_hash=False).stack == "FlowNet2"
    engine.write_bytes(b"short")
    with pytest.raises(em.EngineMismatchError, match="5 bytes but was written as 400"):
        em.check_engine(engine, _expect())
    engine.write_bytes(b"")
    with pytest.raises(em.EngineMismatchError, match="empty"):
        em.check_engine(engine, _expect())


def test_cache_path_is_deterministic(tmp_path: Path) -> None:
    a = em.engine_cache_path(tmp_path, _meta())
    assert a == em.engine_cache_path(
        tmp_path, _meta(created="2030-05-05T00:00:00+00:00", engine_sha256="f" * 64)
    )
    assert a.parent == tmp_path and a.name.startswith("FlowNet2_512x384_fp16_") and a.suffix == ".engine"
    others = {
        em.engine_cache_path(tmp_path, _meta(**change)).name
        for change in (
            {"tensorrt_version": "10.7.0.23"},
            {"gpu_name": "NVIDIA H200"},
            {"precision": "fp32"},
            {"input_width": 1024},
            {"source_sha256": "cd" * 32},
        )
    }
    assert len(others) == 5 and a.name not in others


def test_metadata_validation() -> None:
    with pytest.raises(ValueError, match="precision"):
        _meta(precision="int8")
    with pytest.raises(ValueError, match="input_width"):
        _meta(input_width=0)


# --------------------------------------------------------------------------------- builder decisions


def test_make_metadata_from_onnx_metadata(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx bytes")
    exported = {
        "stack": "FlowNet2C",
        "height": "384",
        "width": "512",
        "precision": "fp16",
        "weights_sha256": "e" * 64,
    }
    meta = eb.make_metadata(onnx, "fp16", trt_version="10.3.0.30", gpu=GPU, onnx_meta=exported)
    assert (meta.stack, meta.input_size, meta.source_sha256, meta.source_kind) == (
        "FlowNet2C",
        (384, 512),
        "e" * 64,
        "weights",
    )
    assert meta.onnx_sha256 == em.file_sha256(onnx) and meta.plugin.startswith(PLUGIN_NAME)
    with pytest.raises(ValueError, match="exported as fp16 but fp32"):
        eb.make_metadata(onnx, "fp32", trt_version="10.3", gpu=GPU, onnx_meta=exported)
    with pytest.raises(ValueError, match="exported for 512x384"):
        eb.make_metadata(
            onnx, "fp16", trt_version="10.3", gpu=GPU, onnx_meta=exported, overrides={"input_width": 64}
        )
    with pytest.raises(ValueError, match="no input size"):
        eb.make_metadata(onnx, "fp32", trt_version="10.3", gpu=GPU, onnx_meta={})
    bare = eb.make_metadata(
        onnx,
        "fp32",
        trt_version="10.3",
        gpu=GPU,
        onnx_meta={},
        overrides={"input_height": 64, "input_width": 128},
    )
    assert bare.source_kind == "onnx" and bare.source_sha256 == bare.onnx_sha256
    decomposed = {**exported, "plugin": "", "correlation": "decomposed"}
    assert eb.make_metadata(onnx, "fp16", trt_version="10.3", gpu=GPU, onnx_meta=decomposed).plugin == ""


def test_validate_build_args(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    eb.validate_build_args(onnx, tmp_path / "m.engine", "fp16", 1024)
    with pytest.raises(ValueError, match="not found"):
        eb.validate_build_args(tmp_path / "none.onnx", tmp_path / "m.engine", "fp32", 1024)
    with pytest.raises(ValueError, match="precision"):
        eb.validate_build_args(onnx, tmp_path / "m.engine", "int8", 1024)
    with pytest.raises(ValueError, match="workspace"):
        eb.validate_build_args(onnx, tmp_path / "m.engine", "fp32", 0)
    with pytest.raises(ValueError, match="differ"):
        eb.validate_build_args(onnx, onnx, "fp32", 1024)
    with pytest.raises(ValueError, match="does not exist"):
        eb.validate_build_args(onnx, tmp_path / "no" / "m.engine", "fp32", 1024)


def test_describe_parse_errors() -> None:
    def error(desc: str, name: str = "", op: str = "", node: int = -1) -> SimpleNamespace:
        return SimpleNamespace(
            desc=lambda: desc, node_name=lambda: name, node_operator=lambda: op, node=lambda: node
        )

    text = eb.describe_parse_errors([error("Plugin not found", "/flownetc/corr/Corr", PLUGIN_NAME)])
    assert "node '/flownetc/corr/Corr'" in text and f"op {PLUGIN_NAME}" in text and "registered" in text
    text = eb.describe_parse_errors([error("No importer registered for op: Foo", "", "Foo", 7), error("b")])
    assert "node #7, op Foo" in text and "unsupported operator" in text and "+1 more" in text
    assert "without reporting" in eb.describe_parse_errors([])
    assert "\n" not in eb.describe_parse_errors([error("line one\nline two")])


def test_builder_unavailable_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(eb, "import_tensorrt", lambda: None)
        assert "not installed" in (eb.builder_unavailable_reason() or "")
    lean = SimpleNamespace(__name__="tensorrt_lean", __version__="11.4.0.106")
    assert "lean runtime" in (eb.builder_unavailable_reason(lean) or "")
    old = SimpleNamespace(__name__="tensorrt", __version__="8.6.1", Builder=object, OnnxParser=object)
    assert "too old" in (eb.builder_unavailable_reason(old) or "")
    no_parser = SimpleNamespace(__name__="tensorrt", __version__="10.3.0", Builder=object)
    assert "ONNX parser" in (eb.builder_unavailable_reason(no_parser) or "")
    full = SimpleNamespace(__name__="tensorrt", __version__="10.3.0", Builder=object, OnnxParser=object)
    assert eb.builder_unavailable_reason(full) is None


def test_builder_unavailable_here() -> None:
    """This machine: the lean runtime (or nothing) — a one-line reason either way."""
    reason = eb.builder_unavailable_reason()
    if reason is None:
        pytest.skip("a full TensorRT is installed here")
    assert "\n" not in reason and ("lean runtime" in reason or "not installed" in reason)


class _FakeTensorRT:
    """A stand-in for the ``tensorrt`` module: records what build_engine asks of the builder."""

    __name__ = "tensorrt"
    __version__ = "10.3.0.30"

    def __init__(self, parse_ok: bool = True, build_ok: bool = True) -> None:
        fake = self
        self.calls: dict[str, Any] = {}

        class Logger:
            VERBOSE, WARNING = "verbose", "warning"

            def __init__(self, level: str) -> None:
                fake.calls["log_level"] = level

        class Cache:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def serialize(self) -> bytes:
                return self.data + b"+new"

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.calls["workspace"] = (pool, size)

            def create_timing_cache(self, data: bytes) -> Cache:
                return Cache(data)

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None:
                fake.calls["timing_cache_in"] = cache.data
                self.cache = cache

            def get_timing_cache(self) -> Cache:
                return self.cache

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> str:
                fake.calls["network_flags"] = flags
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def build_serialized_network(self, network: str, config: Config) -> bytes | None:
                fake.calls["progress_monitor"] = getattr(config, "progress_monitor", None)
                return b"serialized-engine" if build_ok else None

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network: str, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.calls["parsed"] = path
                return parse_ok

            def get_error(self, index: int) -> SimpleNamespace:
                return SimpleNamespace(
                    desc=lambda: "Plugin not found",
                    node_name=lambda: "corr1",
                    node_operator=lambda: PLUGIN_NAME,
                )

        class ProgressMonitor:
            def __init__(self) -> None:
                pass

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, Parser
        self.IProgressMonitor = ProgressMonitor
        self.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"fake onnx")
    return path


@pytest.fixture
def no_plugin_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb, "register_plugin", lambda trt: None)
    monkeypatch.setattr(eb, "read_onnx_metadata", lambda path: {"stack": "FlowNet2C", "precision": "fp16"})


@pytest.mark.usefixtures("no_plugin_registration")
def test_build_engine_flow_with_stand_in(tmp_path: Path, onnx_file: Path) -> None:
    fake = _FakeTensorRT()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    engine = eb.build_engine(
        onnx_file,
        tmp_path / "m.engine",
        precision="fp16",
        workspace_mb=512,
        timing_cache=cache,
        progress=True,
        metadata={"input_height": 384, "input_width": 512},
        trt_module=fake,
        gpu=GPU,
    )
    assert engine.read_bytes() == b"serialized-engine"
    assert fake.calls["workspace"] == ("workspace", 512 << 20)
    assert fake.calls["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert fake.calls["timing_cache_in"] == b"old" and cache.read_bytes() == b"old+new"
    assert fake.calls["progress_monitor"] is not None and fake.calls["log_level"] == "warning"
    meta = em.check_engine(
        engine, em.EngineExpectation("10.3.0.30", GPU[0], GPU[1], "fp16", (384, 512), "FlowNet2C")
    )
    assert meta.engine_size == len(b"serialized-engine") and meta.source_kind == "onnx"


@pytest.mark.usefixtures("no_plugin_registration")
def test_build_engine_failures_with_stand_in(tmp_path: Path, onnx_file: Path) -> None:
    size = {"input_height": 64, "input_width": 64}
    with pytest.raises(eb.EngineBuildError, match=f"node 'corr1', op {PLUGIN_NAME}"):
        eb.build_engine(
            onnx_file,
            tmp_path / "a.engine",
            precision="fp16",
            metadata=size,
            trt_module=_FakeTensorRT(False),
            gpu=GPU,
        )
    with pytest.raises(eb.EngineBuildError, match="could not build"):
        eb.build_engine(
            onnx_file,
            tmp_path / "b.engine",
            precision="fp16",
            metadata=size,
            trt_module=_FakeTensorRT(True, False),
            gpu=GPU,
        )
    assert not (tmp_path / "a.engine").exists() and not (tmp_path / "b.engine").exists()
    lean = SimpleNamespace(__name__="tensorrt_lean", __version__="11.4.0.106")
    with pytest.raises(eb.EngineBuildError, match="lean runtime"):
        eb.build_engine(onnx_file, tmp_path / "c.engine", precision="fp16", trt_module=lean, gpu=GPU)


def test_load_or_rebuild_engine(tmp_path: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb, "read_onnx_metadata", lambda path: {"stack": "FlowNet2", "precision": "fp16"})
    engine = _engine(tmp_path)
    path, why = eb.load_or_rebuild_engine(engine, _expect())
    assert path == engine and "matches" in why
    newer = _expect(tensorrt_version="10.7.0.23")
    with pytest.raises(em.EngineMismatchError, match=r"TensorRT 10\.3\.0\.30"):
        eb.load_or_rebuild_engine(engine, newer)
    with pytest.raises(em.EngineMismatchError, match="no ONNX model"):
        eb.load_or_rebuild_engine(engine, newer, rebuild=True)

    built: list[Path] = []

    def fake_build(onnx: Path, target: Path, **kw: Any) -> Path:
        built.append(target)
        target.write_bytes(b"rebuilt")
        meta = _meta(tensorrt_version="10.7.0.23", engine_size=7, engine_sha256=em.file_sha256(target))
        em.write_metadata(target, meta)
        return target

    fake_trt = SimpleNamespace(__version__="10.7.0.23")
    cache = tmp_path / "cache"
    args: dict[str, Any] = {
        "onnx_path": onnx_file,
        "cache_dir": cache,
        "rebuild": True,
        "trt_module": fake_trt,
        "gpu": GPU,
    }
    path, why = eb.load_or_rebuild_engine(engine, newer, builder=fake_build, **args)
    assert (
        path.parent == cache and path.read_bytes() == b"rebuilt" and "rebuilt" in why and "10.3.0.30" in why
    )
    again, why = eb.load_or_rebuild_engine(engine, newer, builder=fake_build, **args)
    assert again == path and "cached" in why and len(built) == 1


# ----------------------------------------------------------------------------------------------- CLI


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    code = info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


def test_cli_help_covers_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--onnx",
        "--checkpoint",
        "--model",
        "--precision",
        "--input-size",
        "--workspace",
        "--timing-cache",
        "--output",
        "--verbose",
        "--correlation",
        "--opset",
        "--no-progress",
    ):
        assert flag in text
    for action in cli.build_parser()._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (("--model", "FlowNet2S", "--input-size", "500x384"), "multiples of 64"),
        (("--model", "FlowNet2S"), "--input-size WxH is required"),
        (("--onnx", "missing.onnx"), "not found"),
        (("--onnx", "a.onnx", "--model", "FlowNet2"), "either --onnx or"),
        ((), "nothing to build"),
        (("--model", "FlowNet2S", "--input-size", "512x384", "--workspace", "1"), "at least 16"),
    ],
)
def test_cli_argument_errors(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], match: str) -> None:
    code, err = _run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flownet2-build-engine: error: ")
    assert match in lines[0]


def test_cli_bad_size_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(capsys, "--model", "FlowNet2S", "--input-size", "big")
    assert code == 2 and "expected WxH" in err


def test_cli_without_tensorrt_builder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = eb.builder_unavailable_reason()
    if reason is None:  # a full TensorRT here: simulate the lean-only case
        monkeypatch.setattr(eb, "builder_unavailable_reason", lambda trt=None: "only TensorRT's lean runtime")
    code, err = _run_cli(capsys, "--model", "FlowNet2S", "--input-size", "512x384")
    assert code == 2
    assert err.count("\n") == 1 and ("lean runtime" in err or "not installed" in err)


def test_cli_without_gpu(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eb, "builder_unavailable_reason", lambda trt=None: None)
    monkeypatch.setattr(
        eb, "gpu_unavailable_reason", lambda: "no CUDA GPU is available (torch.cuda.is_available() is False)"
    )
    code, err = _run_cli(capsys, "--model", "FlowNet2S", "--input-size", "512x384")
    assert code == 2 and "no CUDA GPU" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def thin_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flownet2_ros.models import build

    path = tmp_path_factory.mktemp("ckpt") / "FlowNet2S_thin.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": build("FlowNet2S", thin=True).state_dict()}, path)
    return path


def test_cli_exports_then_builds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, thin_checkpoint: Path
) -> None:
    """The checkpoint → ONNX → builder wiring, with the builder replaced (no TensorRT builder here)."""
    pytest.importorskip("onnx")
    monkeypatch.setattr(eb, "builder_unavailable_reason", lambda trt=None: None)
    monkeypatch.setattr(eb, "gpu_unavailable_reason", lambda: None)
    seen: dict[str, Any] = {}

    def fake_build(onnx: Path, engine: Path, **kw: Any) -> Path:
        seen.update(kw, onnx=Path(onnx))
        engine.write_bytes(b"engine")
        meta = eb.make_metadata(
            onnx, kw["precision"], trt_version="10.3.0.30", gpu=GPU, overrides=kw["metadata"]
        )
        em.write_metadata(engine, replace(meta, engine_size=6, engine_sha256=em.file_sha256(engine)))
        return engine

    monkeypatch.setattr(eb, "build_engine", fake_build)
    out = tmp_path / "s.engine"
    code = cli.main(
        [
            "--checkpoint",
            str(thin_checkpoint),
            "--input-size",
            "128x64",
            "--output",
            str(out),
            "--workspace",
            "256",
        ]
    )
    assert code == 0
    assert seen["onnx"] == tmp_path / "s.onnx" and seen["onnx"].is_file()
    assert seen["workspace_mb"] == 256 and seen["precision"] == "fp32"
    meta = em.read_metadata(out)
    assert (meta.stack, meta.input_size, meta.source_kind) == ("FlowNet2S", (64, 128), "weights")
    assert "FlowNet2S 128x64 fp32" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------- backend


def test_plan_io() -> None:
    tensors = [
        ("flow", False, (1, 2, 384, 512), "FLOAT"),
        ("image2", True, (1, 3, 384, 512), "FLOAT"),
        ("image1", True, (1, 3, 384, 512), "FLOAT"),
    ]
    plan = tb.plan_io(tensors)
    assert plan.inputs == ("image1", "image2") and plan.output == "flow"
    assert (plan.height, plan.width, plan.input_dtype, plan.dynamic_batch) == (384, 512, "float32", False)
    dynamic = tb.plan_io([(n, i, (-1, *s[1:]), d) for n, i, s, d in tensors])
    assert dynamic.dynamic_batch
    with pytest.raises(BackendError, match="2 and 1"):
        tb.plan_io(tensors[:2])
    with pytest.raises(BackendError, match="3-channel"):
        tb.plan_io([*tensors[:2], ("image1", True, (1, 4, 384, 512), "FLOAT")])
    with pytest.raises(BackendError, match="static"):
        tb.plan_io(
            [("flow", False, (1, 2, 384, 512), "FLOAT"), *[(n, True, (1, 3, -1, 512), "FLOAT") for n in "ab"]]
        )
    with pytest.raises(BackendError, match="types"):
        tb.plan_io([*tensors[:2], ("image1", True, (1, 3, 384, 512), "INT8")])


def test_unusable_reason_here(tmp_path: Path) -> None:
    assert tb.unusable_reason(BackendConfig(engine="")) == "no engine file configured"
    missing = tb.unusable_reason(BackendConfig(engine=str(tmp_path / "none.engine")))
    assert missing is not None and "not found" in missing
    engine = _engine(tmp_path)
    reason = tb.unusable_reason(BackendConfig(engine=str(engine)))
    if reason is None:
        pytest.skip("TensorRT and a GPU matching the test metadata exist here")
    assert "\n" not in reason and len(reason) < 300
    if not torch.cuda.is_available():
        assert any(word in reason for word in ("TensorRT", "CUDA GPU"))
    with pytest.raises(BackendError, match=reason[:20]):
        tb.create_tensorrt(BackendConfig(engine=str(engine)))


def test_unusable_reason_cpu_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tb, "_full_tensorrt", lambda: (SimpleNamespace(__version__="10.3.0.30"), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    engine = _engine(tmp_path)
    assert "needs a CUDA device" in (
        tb.unusable_reason(BackendConfig(engine=str(engine), device="cpu")) or ""
    )


def test_unusable_reason_metadata_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With TensorRT and a GPU simulated, the sidecar decides."""
    monkeypatch.setattr(tb, "_full_tensorrt", lambda: (SimpleNamespace(__version__="10.3.0.30"), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(eb, "describe_gpu", lambda index=0: GPU)
    engine = str(_engine(tmp_path))
    assert tb.unusable_reason(BackendConfig(engine=engine)) is None
    assert "FlowNet2C" in (tb.unusable_reason(BackendConfig(engine=engine, model="FlowNet2C")) or "")
    assert "input size" in (tb.unusable_reason(BackendConfig(engine=engine, network_size=(448, 1024))) or "")
    monkeypatch.setattr(eb, "describe_gpu", lambda index=0: ("NVIDIA H200", "9.0"))
    assert "NVIDIA H200" in (tb.unusable_reason(BackendConfig(engine=engine)) or "")


def test_auto_falls_back_to_torch(tmp_path: Path, thin_checkpoint: Path) -> None:
    engine = _engine(tmp_path)
    config = BackendConfig(checkpoint=str(thin_checkpoint), engine=str(engine), device="cpu")
    reason = tb.unusable_reason(config)
    assert reason is not None
    estimator, why = create_estimator("auto", config)
    try:
        assert isinstance(estimator, TorchFlowEstimator)
        assert why == f"torch (auto: TensorRT not usable: {reason})"
        flow = estimator.estimate(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
        assert flow.shape == (64, 64, 2)
    finally:
        estimator.close()
    with pytest.raises(BackendError, match="tensorrt backend requested but unusable"):
        create_estimator("tensorrt", config)


# ------------------------------------------------------------------------------ full TensorRT with a GPU


@pytest.mark.tensorrt
def test_engine_end_to_end(tmp_path: Path) -> None:
    """Export FlowNet2C (thin, random weights) with the plugin, build an engine, run it against torch."""
    from flownet2_ros.export.trt_plugin import import_tensorrt

    trt = import_tensorrt()
    if trt is None or not hasattr(trt, "Builder") or not torch.cuda.is_available():
        pytest.skip("hardware: full TensorRT with a GPU not available")
    from flownet2_ros.export.onnx_export import export_onnx
    from flownet2_ros.models import build

    model = build("FlowNet2C", thin=True)
    onnx = tmp_path / "c.onnx"
    export_onnx(model, onnx, 128, 192)
    engine = eb.build_engine(onnx, tmp_path / "c.engine", workspace_mb=1024, progress=False)
    estimator = tb.TensorRTFlowEstimator(engine, "cuda")
    reference = TorchFlowEstimator(model, "cuda")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (128, 192, 3), dtype=np.uint8) for _ in range(3)]
    try:
        for i in range(2):
            got = estimator.estimate(frames[i], frames[i + 1], key1=i, key2=i + 1).copy()
            want = reference.estimate(frames[i], frames[i + 1])
            np.testing.assert_allclose(got, want, atol=1e-2)
        assert estimator.info.name == "tensorrt" and estimator.info.network_size == (128, 192)
    finally:
        estimator.close()
        reference.close()
