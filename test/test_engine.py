"""Engine metadata/cache, the engine builder's decisions (against a stand-in TensorRT), the
``flownet2-build-engine`` CLI's failures, and the TensorRT backend's refusal/fallback on this machine.

Tests marked ``tensorrt`` export, build and run a real engine and need the full TensorRT with a GPU.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from flownet2_ros.backends import (
    BackendConfig,
    BackendError,
    FlowRequest,
    TorchFlowEstimator,
    create_estimator,
)
from flownet2_ros.backends import tensorrt_backend as tb
from flownet2_ros.cli import build_engine as cli
from flownet2_ros.export import engine_builder as eb
from flownet2_ros.export import engine_metadata as em
from flownet2_ros.export import trt_plugin as tp
from flownet2_ros.export.plugin_spec import PLUGIN_NAME
from flownet2_ros.ops import cuda_correlation as cc

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

    def __init__(
        self,
        parse_ok: bool = True,
        build_ok: bool = True,
        inputs: tuple[tuple[str, tuple[int, ...]], ...] = (
            ("image1", (1, 3, 64, 64)),
            ("image2", (1, 3, 64, 64)),
        ),
        cache_ok: bool = True,
        profile_index: int = 0,
    ) -> None:
        fake = self
        self.calls: dict[str, Any] = {"order": []}

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

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
                fake.calls.setdefault("timing_caches", []).append(cache.data)
                fake.calls["timing_cache_in"] = cache.data
                self.cache = cache
                return cache_ok or cache.data == b""

            def get_timing_cache(self) -> Cache:
                return self.cache

            def add_optimization_profile(self, profile: Profile) -> int:
                fake.calls["profiles"] = [*fake.calls.get("profiles", []), profile.shapes]
                return profile_index

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[Any, ...]] = {}

            def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
                self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

        class Network:
            num_inputs = len(inputs)

            def get_input(self, index: int) -> SimpleNamespace:
                name, shape = inputs[index]
                return SimpleNamespace(name=name, shape=shape)

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> Network:
                fake.calls["network_flags"] = flags
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
                fake.calls["order"].append("build")
                fake.calls["progress_monitor"] = getattr(config, "progress_monitor", None)
                return b"serialized-engine" if build_ok else None

        class Parser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network: Network, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.calls["order"].append("parse")
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
def kernel_prepared(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """prepare_kernel replaced by a recorder (no GPU here); the devices it was called for."""
    devices: list[int] = []
    monkeypatch.setattr(cc, "prepare_kernel", lambda device=0: devices.append(device))
    return devices


@pytest.fixture
def no_plugin_registration(monkeypatch: pytest.MonkeyPatch, kernel_prepared: list[int]) -> None:
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
    assert meta.batch_profile == em.STATIC_BATCH and "profiles" not in fake.calls  # static: no profile


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


@pytest.mark.usefixtures("kernel_prepared")
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


# ------------------------------------------------------------------------------------- batch profiles


def test_batch_profile_parse_and_validation() -> None:
    profile = em.BatchProfile.parse("1:2:4")
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (1, 2, 4)
    assert str(profile) == "1:2:4" and not profile.is_static and em.BatchProfile.parse(" 1:1:1 ").is_static
    for text in ("4", "1:2", "a:b:c", "1:2:4:8", "-1:2:4", ""):
        with pytest.raises(ValueError, match="MIN:OPT:MAX"):
            em.BatchProfile.parse(text)
    with pytest.raises(ValueError, match="MIN <= OPT <= MAX"):
        em.BatchProfile.parse("4:2:1")
    with pytest.raises(ValueError, match="positive"):
        em.BatchProfile(0, 1, 1)


def test_sidecar_round_trips_the_batch_profile(tmp_path: Path) -> None:
    engine = _engine(tmp_path, _meta(batch_min=1, batch_opt=2, batch_max=4))
    data = json.loads(em.sidecar_path(engine).read_text())
    assert (data["batch_min"], data["batch_opt"], data["batch_max"]) == (1, 2, 4)
    assert data["schema"] == em.SCHEMA_VERSION
    meta = em.read_metadata(engine)
    assert meta.batch_profile == em.BatchProfile(1, 2, 4)
    assert em.check_engine(engine, _expect()) == meta
    # A sidecar written before profiles existed reads as a static engine, with the same cache key.
    old = {k: v for k, v in _meta().to_dict().items() if not k.startswith("batch_")}
    old["schema"] = 1
    em.sidecar_path(engine).write_text(json.dumps(old))
    assert em.read_metadata(engine).batch_profile == em.STATIC_BATCH
    assert em.engine_cache_path(tmp_path, _meta()) == em.engine_cache_path(tmp_path, em.read_metadata(engine))
    dynamic = em.engine_cache_path(tmp_path, _meta(batch_max=4))
    assert dynamic != em.engine_cache_path(tmp_path, _meta())
    em.sidecar_path(engine).write_text(json.dumps({**_meta().to_dict(), "batch_opt": 9}))
    with pytest.raises(em.EngineMismatchError, match=r"corrupt.*MIN <= OPT <= MAX"):
        em.read_metadata(engine)


def test_plan_batch_profile() -> None:
    dynamic = [("image1", (-1, 3, 64, 128)), ("image2", (-1, 3, 64, 128))]
    profile, shapes = eb.plan_batch_profile(dynamic, em.BatchProfile(1, 2, 4))
    assert profile == em.BatchProfile(1, 2, 4)
    assert shapes == [
        ("image1", (1, 3, 64, 128), (2, 3, 64, 128), (4, 3, 64, 128)),
        ("image2", (1, 3, 64, 128), (2, 3, 64, 128), (4, 3, 64, 128)),
    ]
    with pytest.raises(eb.EngineBuildError, match=r"m\.onnx has a dynamic batch.*--batch MIN:OPT:MAX"):
        eb.plan_batch_profile(dynamic, None, "m.onnx")
    static = [("image1", (1, 3, 64, 128)), ("image2", (1, 3, 64, 128))]
    assert eb.plan_batch_profile(static, None) == (em.STATIC_BATCH, [])
    assert eb.plan_batch_profile(static, em.STATIC_BATCH) == (em.STATIC_BATCH, [])
    with pytest.raises(eb.EngineBuildError, match=r"static batch of 1.*--dynamic-batch"):
        eb.plan_batch_profile(static, em.BatchProfile(1, 2, 4))
    with pytest.raises(eb.EngineBuildError, match="other than the batch"):
        eb.plan_batch_profile([("image1", (-1, 3, -1, 128))], em.BatchProfile(1, 2, 4))


DYNAMIC_INPUTS = (("image1", (-1, 3, 64, 64)), ("image2", (-1, 3, 64, 64)))


@pytest.mark.usefixtures("no_plugin_registration")
def test_build_engine_adds_the_batch_profile(tmp_path: Path, onnx_file: Path) -> None:
    fake = _FakeTensorRT(inputs=DYNAMIC_INPUTS)
    engine = eb.build_engine(
        onnx_file,
        tmp_path / "d.engine",
        precision="fp16",
        progress=False,
        metadata={"input_height": 64, "input_width": 64},
        batch="1:2:4",
        trt_module=fake,
        gpu=GPU,
    )
    ((shapes),) = fake.calls["profiles"]  # one profile, covering every dynamic input
    assert shapes == {name: ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64)) for name in ("image1", "image2")}
    assert em.read_metadata(engine).batch_profile == em.BatchProfile(1, 2, 4)


@pytest.mark.usefixtures("no_plugin_registration")
def test_build_engine_profile_refusals(tmp_path: Path, onnx_file: Path) -> None:
    size = {"input_height": 64, "input_width": 64}
    fake = _FakeTensorRT(inputs=DYNAMIC_INPUTS)
    with pytest.raises(eb.EngineBuildError, match=r"dynamic batch dimension.*--batch MIN:OPT:MAX"):
        eb.build_engine(
            onnx_file, tmp_path / "a.engine", precision="fp16", metadata=size, trt_module=fake, gpu=GPU
        )
    assert "build" not in fake.calls["order"]
    static = _FakeTensorRT()
    with pytest.raises(eb.EngineBuildError, match="static batch of 1"):
        eb.build_engine(
            onnx_file,
            tmp_path / "b.engine",
            precision="fp16",
            metadata=size,
            batch="1:2:4",
            trt_module=static,
            gpu=GPU,
        )
    rejected = _FakeTensorRT(inputs=DYNAMIC_INPUTS, profile_index=-1)
    with pytest.raises(eb.EngineBuildError, match="rejected the batch profile 1:2:4"):
        eb.build_engine(
            onnx_file,
            tmp_path / "c.engine",
            precision="fp16",
            metadata=size,
            batch="1:2:4",
            trt_module=rejected,
            gpu=GPU,
        )
    with pytest.raises(ValueError, match="MIN:OPT:MAX"):
        eb.build_engine(
            onnx_file, tmp_path / "d.engine", precision="fp16", batch="4", trt_module=fake, gpu=GPU
        )
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.usefixtures("no_plugin_registration")
def test_build_engine_replaces_a_mismatched_timing_cache(tmp_path: Path, onnx_file: Path) -> None:
    fake = _FakeTensorRT(cache_ok=False)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from another GPU")
    eb.build_engine(
        onnx_file,
        tmp_path / "m.engine",
        precision="fp16",
        timing_cache=cache,
        progress=False,
        metadata={"input_height": 64, "input_width": 64},
        trt_module=fake,
        gpu=GPU,
    )
    assert fake.calls["timing_caches"] == [b"from another GPU", b""] and cache.read_bytes() == b"+new"


def test_kernel_failure_stops_the_build_before_tensorrt(
    tmp_path: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eb, "register_plugin", lambda trt: None)
    monkeypatch.setattr(eb, "read_onnx_metadata", lambda path: {"stack": "FlowNet2C", "precision": "fp16"})

    def broken(device: int = 0) -> None:
        raise cc.CudaCorrelationError("NVRTC is not usable (not found): pip install nvidia-cuda-nvrtc-cu12")

    monkeypatch.setattr(cc, "prepare_kernel", broken)
    fake = _FakeTensorRT()
    size = {"input_height": 64, "input_width": 64}
    with pytest.raises(eb.EngineBuildError, match=r"NVRTC is not usable.*pip install") as info:
        eb.build_engine(
            onnx_file, tmp_path / "m.engine", precision="fp16", metadata=size, trt_module=fake, gpu=GPU
        )
    assert "\n" not in str(info.value)
    assert fake.calls["order"] == []  # neither parsed nor built
    # An export without the plugin (decomposed correlation) needs no kernel.
    monkeypatch.setattr(
        eb, "read_onnx_metadata", lambda path: {"stack": "FlowNet2C", "precision": "fp16", "plugin": ""}
    )
    eb.build_engine(
        onnx_file, tmp_path / "m.engine", precision="fp16", metadata=size, trt_module=fake, gpu=GPU
    )
    assert fake.calls["order"] == ["parse", "build"]


def test_load_or_rebuild_keeps_the_batch_profile(
    tmp_path: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eb, "read_onnx_metadata", lambda path: {"stack": "FlowNet2", "precision": "fp16"})
    engine = _engine(tmp_path, _meta(batch_max=4, batch_opt=2))
    seen: dict[str, Any] = {}

    def fake_build(onnx: Path, target: Path, **kw: Any) -> Path:
        seen.update(kw)
        raise eb.EngineBuildError("stop here")

    newer = _expect(tensorrt_version="10.7.0.23")
    args: dict[str, Any] = {
        "onnx_path": onnx_file,
        "rebuild": True,
        "trt_module": SimpleNamespace(__version__="10.7"),
        "gpu": GPU,
    }
    with pytest.raises(eb.EngineBuildError):
        eb.load_or_rebuild_engine(engine, newer, builder=fake_build, **args)
    assert seen["batch"] == em.BatchProfile(1, 2, 4)


def test_cli_batch_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.build_parser().parse_args(["--batch", "1:2:4"]).batch == em.BatchProfile(1, 2, 4)
    assert cli.build_parser().parse_args([]).batch is None
    code, err = _run_cli(capsys, "--model", "FlowNet2S", "--input-size", "512x384", "--batch", "4:2:1")
    assert code == 2 and "MIN <= OPT <= MAX" in err


@pytest.fixture(scope="module")
def thin_c_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flownet2_ros.models import build

    path = tmp_path_factory.mktemp("ckpt") / "FlowNet2C_thin.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": build("FlowNet2C", thin=True).state_dict()}, path)
    return path


def test_cli_batch_exports_a_dynamic_batch_after_the_kernel_check(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    thin_c_checkpoint: Path,
) -> None:
    onnx = pytest.importorskip("onnx")
    monkeypatch.setattr(eb, "builder_unavailable_reason", lambda trt=None: None)
    monkeypatch.setattr(eb, "gpu_unavailable_reason", lambda: None)
    events: list[str] = []
    monkeypatch.setattr(cc, "prepare_kernel", lambda device=0: events.append("kernel"))
    from flownet2_ros.export import onnx_export

    real_export = onnx_export.export_onnx

    def export(*args: Any, **kw: Any) -> Any:
        events.append("export")
        return real_export(*args, **kw)

    monkeypatch.setattr(onnx_export, "export_onnx", export)
    seen: dict[str, Any] = {}

    def fake_build(onnx_path: Path, engine: Path, **kw: Any) -> Path:
        seen.update(kw, onnx=Path(onnx_path))
        engine.write_bytes(b"engine")
        meta = eb.make_metadata(
            onnx_path,
            kw["precision"],
            trt_version="10.3.0.30",
            gpu=GPU,
            overrides=kw["metadata"],
            batch=kw["batch"],
        )
        em.write_metadata(engine, replace(meta, engine_size=6, engine_sha256=em.file_sha256(engine)))
        return engine

    monkeypatch.setattr(eb, "build_engine", fake_build)
    out = tmp_path / "c.engine"
    argv = ["-c", str(thin_c_checkpoint), "--input-size", "128x64", "--batch", "1:2:4", "-o", str(out)]
    assert cli.main(argv) == 0
    assert events == ["kernel", "export"] and seen["batch"] == em.BatchProfile(1, 2, 4)
    graph = onnx.load(str(seen["onnx"]), load_external_data=False).graph
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in graph.input)  # symbolic batch
    assert "FlowNet2C 128x64 fp32, batch 1:2:4" in capsys.readouterr().out


def test_cli_kernel_failure_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, thin_c_checkpoint: Path
) -> None:
    monkeypatch.setattr(eb, "builder_unavailable_reason", lambda trt=None: None)
    monkeypatch.setattr(eb, "gpu_unavailable_reason", lambda: None)

    def broken(device: int = 0) -> None:
        raise cc.CudaCorrelationError(
            "cuda-bindings 13.0.0 needs a driver for CUDA 13: pip install 'cuda-bindings>=12,<13'"
        )

    monkeypatch.setattr(cc, "prepare_kernel", broken)
    code, err = _run_cli(capsys, "-c", str(thin_c_checkpoint), "--input-size", "128x64")
    assert code == 2 and err.count("\n") == 1 and "cuda-bindings>=12,<13" in err


# ----------------------------------------------------------------------- TensorRT backend, stand-in engine


class _FakeEngine:
    """A stand-in engine on host memory: flow[b] = (mean of image1[b], mean of image2[b]) everywhere, so
    every pair's result says which frames it was computed from. Records what the backend asks of it."""

    def __init__(
        self, profile: tuple[int, int, int] | None = (1, 2, 4), size: tuple[int, int] = (64, 64)
    ) -> None:
        self.profile, self.size = profile, size
        self.names = ("image1", "image2", "flow")
        self.results = {"set_input_shape": True, "set_tensor_address": True, "execute_async_v3": True}
        self.runs: list[int] = []  # batch size of each execution
        self.shape_calls: list[tuple[str, tuple[int, ...]]] = []
        self.address_calls: list[tuple[str, int]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    # ICudaEngine
    num_io_tensors = 3

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return "output" if name == "flow" else "input"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        batch = -1 if self.profile else 1
        return (batch, 2 if name == "flow" else 3, *self.size)

    def get_tensor_dtype(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name="FLOAT")

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        assert self.profile is not None and index == 0
        return [(b, 3, *self.size) for b in self.profile]

    def create_execution_context(self) -> _FakeEngine:
        return self

    # IExecutionContext
    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape_calls.append((name, tuple(shape)))
        self.shapes[name] = tuple(shape)
        return self.results["set_input_shape"]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.address_calls.append((name, address))
        self.addresses[name] = address
        return self.results["set_tensor_address"]

    def _array(self, name: str, channels: int, batch: int) -> np.ndarray:
        import ctypes

        count = batch * channels * self.size[0] * self.size[1]
        buffer = (ctypes.c_float * count).from_address(self.addresses[name])
        return np.ctypeslib.as_array(buffer).reshape(batch, channels, *self.size)

    def execute_async_v3(self, stream: int) -> bool:
        if not self.results["execute_async_v3"]:
            return False
        batch = self.shapes.get("image1", (1,))[0] if self.profile else 1
        self.runs.append(batch)
        one, two = self._array("image1", 3, batch), self._array("image2", 3, batch)
        flow = self._array("flow", 2, batch)
        flow[:, 0] = one.mean(axis=(1, 2, 3))[:, None, None]
        flow[:, 1] = two.mean(axis=(1, 2, 3))[:, None, None]
        return True


def _fake_trt(engine: _FakeEngine) -> SimpleNamespace:
    calls: list[str] = []

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> _FakeEngine:
            calls.append("deserialize")
            return engine

    class Logger:
        WARNING = "warning"

        def __init__(self, level: str) -> None:
            pass

    return SimpleNamespace(
        __name__="tensorrt",
        __version__="10.3.0.30",
        Logger=Logger,
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="input", OUTPUT="output"),
        calls=calls,
    )


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_prepared: list[int]) -> Any:
    """Make a TensorRTFlowEstimator over a _FakeEngine on the CPU: stand_in(engine, **kw)."""
    monkeypatch.setattr(tp, "register_plugin", lambda trt=None: None)
    made: list[tb.TensorRTFlowEstimator] = []

    def make(engine: _FakeEngine, **kw: Any) -> tb.TensorRTFlowEstimator:
        profile = engine.profile or (1, 1, 1)
        meta = _meta(
            precision="fp32",
            input_height=64,
            input_width=64,
            batch_min=profile[0],
            batch_opt=profile[1],
            batch_max=profile[2],
        )
        path = _engine(tmp_path, meta)
        estimator = tb.TensorRTFlowEstimator(path, "cpu", trt_module=_fake_trt(engine), gpu=GPU, **kw)
        made.append(estimator)
        return estimator

    yield make
    for estimator in made:
        estimator.close()


def _pair(k: int, size: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    return np.full((*size, 3), 10 + k, np.uint8), np.full((*size, 3), 100 + k, np.uint8)


def _requests(count: int, first_key: int = 0) -> list[FlowRequest]:
    out = []
    for k in range(count):
        a, b = _pair(k)
        out.append(FlowRequest(a, b, key1=first_key + 2 * k, key2=first_key + 2 * k + 1))
    return out


def test_split_batches() -> None:
    assert tb.split_batches(6, 4) == [(0, 4), (4, 6)]
    assert tb.split_batches(4, 4) == [(0, 4)] and tb.split_batches(0, 4) == []
    assert tb.split_batches(3, 1) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError):
        tb.split_batches(3, 0)


def test_plan_io_refuses_a_static_batch_other_than_one() -> None:
    tensors = [
        (n, n != "flow", (2, 2 if n == "flow" else 3, 64, 64), "FLOAT") for n in ("image1", "image2", "flow")
    ]
    with pytest.raises(BackendError, match="batch of 1 or a dynamic batch"):
        tb.plan_io(tensors)


def test_backend_splits_six_pairs_over_a_maximum_of_four(stand_in: Any) -> None:
    engine = _FakeEngine((1, 2, 4))
    estimator = stand_in(engine)
    assert estimator.batch_profile == em.BatchProfile(1, 2, 4)
    flows = estimator.estimate_batch(_requests(6))
    assert engine.runs == [4, 2]
    assert [("image1", (4, 3, 64, 64)), ("image2", (4, 3, 64, 64))] == engine.shape_calls[:2]
    assert len(flows) == 6
    for k, flow in enumerate(flows):  # pair order kept
        assert flow.shape == (64, 64, 2)
        np.testing.assert_allclose(flow[..., 0], 10 + k)
        np.testing.assert_allclose(flow[..., 1], 100 + k)
    assert len({f.__array_interface__["data"][0] for f in flows}) == 6  # one result buffer per position


def test_backend_pairs_of_different_sizes_share_a_batch(stand_in: Any) -> None:
    engine = _FakeEngine((1, 2, 4))
    estimator = stand_in(engine)
    small = _pair(1, (32, 48))
    out = np.zeros((16, 16, 2), np.float32)
    requests = [
        FlowRequest(*_pair(0)),
        FlowRequest(*small),
        FlowRequest(*_pair(2), output_size=(16, 16), out=out),
    ]
    flows = estimator.estimate_batch(requests)
    assert engine.runs == [3]
    np.testing.assert_allclose(flows[0][..., 0], 10)
    assert flows[1].shape == (32, 48, 2)  # resized to its input size, vectors scaled: u·48/64, v·32/64
    np.testing.assert_allclose(flows[1][..., 0], 11 * 48 / 64, rtol=1e-5)
    np.testing.assert_allclose(flows[1][..., 1], 101 * 32 / 64, rtol=1e-5)
    assert flows[2] is out
    np.testing.assert_allclose(out[..., 1], 102 * 16 / 64, rtol=1e-5)
    with pytest.raises(ValueError, match="out must be"):
        estimator.estimate_batch(
            [FlowRequest(*_pair(0)), FlowRequest(*_pair(1), out=np.zeros((2, 2, 2), np.float32))]
        )
    assert engine.runs == [3]  # a bad request is refused before anything runs


def test_backend_pads_below_the_profile_minimum_and_static_engines_run_one_pair(stand_in: Any) -> None:
    engine = _FakeEngine((2, 2, 4))
    (flow,) = stand_in(engine).estimate_batch(_requests(1))
    assert engine.runs == [2]
    np.testing.assert_allclose(flow[..., 1], 100)
    static = _FakeEngine(None)
    estimator = stand_in(static)
    assert estimator.batch_profile == em.STATIC_BATCH
    flows = estimator.estimate_batch(_requests(3))
    assert static.runs == [1, 1, 1] and static.shape_calls == []  # no set_input_shape on a static engine
    assert [float(f[0, 0, 0]) for f in flows] == [10, 11, 12]


def test_backend_reuses_frames_by_key(stand_in: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _FakeEngine((1, 2, 4))
    estimator = stand_in(engine)
    uploads: list[int] = []
    real_upload = estimator._upload
    monkeypatch.setattr(
        estimator,
        "_upload",
        lambda rgb, target: (uploads.append(int(rgb[0, 0, 0])), real_upload(rgb, target)),
    )
    frames = [np.full((64, 64, 3), v, np.uint8) for v in range(0, 60, 10)]

    def call(keys: list[int]) -> list[np.ndarray]:
        return estimator.estimate_batch(
            [FlowRequest(frames[k], frames[k + 1], key1=k, key2=k + 1) for k in keys]
        )

    call([0, 2])  # cameras A (frames 0→1) and B (2→3)
    assert uploads == [0, 20, 10, 30]
    before = dict(engine.addresses)
    uploads.clear()
    flows = call([1, 3])  # both continue at their rows: the buffers swap, only the new frames are uploaded
    assert uploads == [20, 40]
    assert [(float(f[0, 0, 0]), float(f[0, 0, 1])) for f in flows] == [(10, 20), (30, 40)]
    assert engine.addresses["image1"] == before["image2"] and engine.addresses["image2"] == before["image1"]
    uploads.clear()
    flows = call([4, 0])  # key 4 is on the device at another row: copied there; key 0 is gone: uploaded
    assert uploads == [0, 50, 10]
    assert [(float(f[0, 0, 0]), float(f[0, 0, 1])) for f in flows] == [(40, 50), (0, 10)]


@pytest.mark.parametrize("method", ["set_input_shape", "set_tensor_address", "execute_async_v3"])
def test_backend_turns_each_false_into_an_error(stand_in: Any, method: str) -> None:
    engine = _FakeEngine((1, 2, 4))
    estimator = stand_in(engine)
    engine.results[method] = False
    with pytest.raises(BackendError, match=f"{method} returned False"):
        estimator.estimate_batch(_requests(2))
    engine.results[method] = True
    flows = estimator.estimate_batch(_requests(2))  # the estimator recovers once TensorRT does
    assert float(flows[1][0, 0, 0]) == 11


class _FakeGraph:
    def __init__(self) -> None:
        self.work: list[Any] = []
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        for work in self.work:
            work()


def test_backend_cuda_graphs_per_batch_size(stand_in: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """One graph per batch size (and buffer arrangement): eager, then captured, then replayed."""
    engine = _FakeEngine((1, 2, 4))
    graphs: list[_FakeGraph] = []
    modes: list[str] = []

    def capture(stream: Any) -> tuple[_FakeGraph, Any]:
        graph = _FakeGraph()
        graphs.append(graph)
        real_execute = engine.execute_async_v3

        @contextlib.contextmanager
        def recording() -> Iterator[None]:
            modes.append("thread_local")
            # While capturing, execute_async_v3 records work instead of running it (as a CUDA capture does).
            monkeypatch.setattr(
                engine, "execute_async_v3", lambda s: graph.work.append(lambda: real_execute(s)) or True
            )
            yield
            monkeypatch.setattr(engine, "execute_async_v3", real_execute)

        return graph, recording()

    monkeypatch.setattr(tb, "_graph_capture", capture)
    estimator = stand_in(engine, cuda_graph=True)
    requests = _requests(4)
    for _ in range(3):
        flows = estimator.estimate_batch(requests)
    assert estimator.graph_count == 1 and graphs[0].replays == 1
    assert [float(f[0, 0, 1]) for f in flows] == [100, 101, 102, 103]
    for _ in range(3):
        (flow,) = estimator.estimate_batch(_requests(1))
    assert estimator.graph_count == 2 and float(flow[0, 0, 0]) == 10
    assert engine.runs == [4, 4, 4, 1, 1, 1]  # 2 eager + 1 replay each


def test_backend_capture_returning_false_is_an_error_then_eager(
    stand_in: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _FakeEngine((1, 2, 4))
    real_execute = engine.execute_async_v3

    @contextlib.contextmanager
    def refusing() -> Iterator[None]:
        monkeypatch.setattr(engine, "execute_async_v3", lambda s: False)
        yield
        monkeypatch.setattr(engine, "execute_async_v3", real_execute)

    monkeypatch.setattr(tb, "_graph_capture", lambda stream: (_FakeGraph(), refusing()))
    estimator = stand_in(engine, cuda_graph=True)
    estimator.estimate_batch(_requests(2))
    with pytest.raises(BackendError, match=r"CUDA graph capture.*execute_async_v3 returned False"):
        estimator.estimate_batch(_requests(2))
    for _ in range(3):  # later calls run eagerly, no further capture attempt
        flows = estimator.estimate_batch(_requests(2))
    assert estimator.graph_count == 0 and float(flows[1][0, 0, 1]) == 101


def test_backend_kernel_failure_before_deserialising(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tp, "register_plugin", lambda trt=None: pytest.fail("registered despite the kernel failure")
    )

    def broken(device: int = 0) -> None:
        raise cc.CudaCorrelationError(
            "the correlation kernel does not compile for sm_87: ...; pip install -U nvidia-cuda-nvrtc-cu12"
        )

    monkeypatch.setattr(cc, "prepare_kernel", broken)
    fake = _fake_trt(_FakeEngine())
    path = _engine(tmp_path, _meta(precision="fp32", input_height=64, input_width=64))
    with pytest.raises(BackendError, match="does not compile for sm_87"):
        tb.TensorRTFlowEstimator(path, "cpu", trt_module=fake, gpu=GPU)
    assert fake.calls == []  # deserialize_cuda_engine never called


def test_unusable_reason_names_the_kernel_problem(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tb, "_full_tensorrt", lambda: (SimpleNamespace(__version__="10.3.0.30"), None))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(eb, "describe_gpu", lambda index=0: GPU)

    def broken(device: int = 0) -> None:
        raise cc.CudaCorrelationError(
            "no NVIDIA driver could be loaded (libcuda.so.1): install the NVIDIA driver"
        )

    monkeypatch.setattr(cc, "prepare_kernel", broken)
    engine = str(_engine(tmp_path))
    assert "no NVIDIA driver" in (tb.unusable_reason(BackendConfig(engine=engine)) or "")


# --------------------------------------------------------------------------------- trt_first_run.sh

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trt_first_run.sh"


def _bash(*args: str, env: dict[str, str] | None = None) -> Any:
    import os
    import subprocess

    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_first_run_script_syntax_help_and_dry_run(tmp_path: Path) -> None:
    import subprocess

    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    help_run = _bash("--help")
    assert help_run.returncode == 0 and "--checkpoint" in help_run.stdout and "--dry-run" in help_run.stdout
    dry = _bash("--dry-run", "--out", str(tmp_path), "--checkpoint", "ckpt.pth")
    assert dry.returncode == 0, dry.stderr
    for text in (
        "FlowNet2C_thin_fp32",
        "FlowNet2_thin_fp16",
        "checkpoint_fp16",
        "--batch 1:2:4",
        "--dynamic-batch",
    ):
        assert text in dry.stdout
    assert not list(tmp_path.iterdir())  # nothing run or written
    bad = _bash("--size", "big")
    assert bad.returncode == 2 and "WxH" in bad.stderr


def test_first_run_script_without_tensorrt_exits_0_at_once() -> None:
    import importlib.util
    import sys
    import time

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the script would run for real")
    start = time.perf_counter()
    run = _bash(env={"PYTHON": sys.executable})
    assert run.returncode == 0 and "TensorRT is not installed" in run.stdout
    assert time.perf_counter() - start < 5  # well under a second on an idle machine


def test_first_run_checker_table(tmp_path: Path) -> None:
    """The script's embedded Python compiles, and its table lists every engine with PASS/FAIL."""
    import subprocess
    import sys

    text = SCRIPT.read_text()
    source = text.split("<<'PYEOF'\n", 1)[1].split("\nPYEOF\n", 1)[0]
    checker = tmp_path / "check.py"
    checker.write_text(source)
    (tmp_path / "results").mkdir()
    (tmp_path / "steps.tsv").write_text(
        "FlowNet2C_thin_fp32\texport\t12\tok\nFlowNet2C_thin_fp32\tbuild\t80\tok\nFlowNet2C_thin_fp32\tcheck\t9\tok\n"
        "FlowNet2_thin_fp32\texport\t30\tok\nFlowNet2_thin_fp32\tbuild\t200\tfailed\n"
    )
    result = {
        "passed": True,
        "batch": "1:2:4",
        "load_s": 1.2,
        "b1_mean_px": 0.001,
        "b1_max_px": 0.01,
        "trt_b1_ms": 3.5,
    }
    (tmp_path / "results" / "FlowNet2C_thin_fp32.json").write_text(json.dumps(result))
    run = subprocess.run(
        [sys.executable, str(checker), "table", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| Flow")]
    assert len(rows) == 2
    assert "| 1:2:4 | 12 | 80 | 1.2 | 0.001/0.01 |" in rows[0] and rows[0].endswith("| PASS |")
    assert rows[1].endswith("| FAIL (build) |")


class _CudaStandIn(_FakeEngine):
    """_FakeEngine on CUDA memory: the flow is computed by torch kernels on the stream TensorRT is given
    (the estimator's), so eager runs, graph capture and replay behave as with a real engine."""

    def execute_async_v3(self, stream: int) -> bool:
        if not self.results["execute_async_v3"]:
            return False
        assert torch.cuda.current_stream().cuda_stream == stream  # work goes where TensorRT would put it
        batch = self.shapes.get("image1", (1,))[0]
        self.runs.append(batch)
        one, two = self._tensor("image1", 3, batch), self._tensor("image2", 3, batch)
        flow = self._tensor("flow", 2, batch)
        flow[:, 0] = one.mean(dim=(1, 2, 3))[:, None, None]
        flow[:, 1] = two.mean(dim=(1, 2, 3))[:, None, None]
        return True

    def _tensor(self, name: str, channels: int, batch: int) -> torch.Tensor:
        shape = (batch, channels, *self.size)
        view = SimpleNamespace(
            __cuda_array_interface__={
                "shape": shape,
                "typestr": "<f4",
                "data": (self.addresses[name], False),
                "version": 2,
                "strides": None,
            }
        )
        return torch.as_tensor(view, device="cuda")


@pytest.mark.gpu
def test_gpu_backend_batches_and_graphs_with_a_stand_in_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_prepared: list[int]
) -> None:
    """The backend's CUDA path on a real GPU (no TensorRT needed): stream, page-locked results, batches of
    4 and 2, CUDA graphs captured in thread-local mode while another thread allocates and frees CUDA memory."""
    import threading

    monkeypatch.setattr(tp, "register_plugin", lambda trt=None: None)
    engine = _CudaStandIn((1, 2, 4))
    path = _engine(
        tmp_path, _meta(precision="fp32", input_height=64, input_width=64, batch_max=4, batch_opt=2)
    )
    estimator = tb.TensorRTFlowEstimator(path, "cuda", cuda_graph=True, trt_module=_fake_trt(engine), gpu=GPU)
    stop = threading.Event()
    errors: list[BaseException] = []

    def other_thread() -> None:  # a ROS callback's CUDA work; would void a global-mode capture
        try:
            while not stop.is_set():
                block = torch.empty(1 << 24, device="cuda")
                del block
                torch.cuda.empty_cache()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        for round_ in range(4):
            flows = estimator.estimate_batch(_requests(6))
            assert [(float(f[0, 0, 0]), float(f[-1, -1, 1])) for f in flows] == [
                (10 + k, 100 + k) for k in range(6)
            ], round_
        (single,) = estimator.estimate_batch(_requests(1))
        assert float(single[5, 5, 1]) == 100
        graphs = estimator.graph_count
    finally:
        stop.set()
        worker.join()
        estimator.close()
    assert not errors
    assert graphs == 2  # batch sizes 4 and 2, one buffer arrangement each (keys never continue)
    # round 1 eager; round 2 eager + capture (which also calls execute); rounds 3-4 replay; then batch 1
    assert engine.runs == [4, 2, 4, 4, 2, 2, 1]
