"""Timing of the deployment paths: ONNX Runtime (both correlation exports) and TensorRT engines."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .timing import median_ms


def benchmark_onnx_runtime(
    name: str, height: int, width: int, repeats: int = 3, thin: bool = False
) -> dict[str, Any]:
    """Median CPU time of stack ``name`` on ONNX Runtime, exported with the correlation as the custom op and
    decomposed into standard ops, next to torch on the CPU; random weights (speed does not depend on them)."""
    import torch

    from ..export.onnx_export import export_onnx
    from ..export.ort_correlation import make_ort_session, run_onnx
    from ..models import build

    model = build(name, thin=thin)
    rng = np.random.default_rng(0)
    image1 = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
    image2 = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
    t1, t2 = torch.from_numpy(image1), torch.from_numpy(image2)
    with torch.inference_mode():
        result: dict[str, Any] = {
            "stack": name + ("-thin" if thin else ""),
            "size": f"{width}x{height}",
            "torch_cpu_ms": median_ms(lambda: model(t1, t2), repeats, warmup=1),
        }
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("plugin", "decomposed"):
            path = Path(folder) / f"{mode}.onnx"
            info = export_onnx(model, path, height, width, correlation=mode)
            session = make_ort_session(path)

            def run(session: Any = session) -> None:
                run_onnx(session, image1, image2)

            result[f"ort_{mode}_ms"] = median_ms(run, repeats, warmup=1)
            result[f"ort_{mode}_nodes"] = info.node_count
    return result


def benchmark_engine(engine: str | Path, repeats: int = 50, device: str = "cuda") -> dict[str, Any]:
    """Median latency of a TensorRT engine through the TensorRT backend (upload, inference, download)."""
    from ..backends import BackendConfig, BackendError
    from ..backends.tensorrt_backend import create_tensorrt

    config = BackendConfig(engine=str(engine), device=device)
    estimator = create_tensorrt(config)
    try:
        info = estimator.info
        if info.network_size is None:
            raise BackendError(f"{engine}: the engine reports no input size")
        height, width = info.network_size
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(2)]
        ms = median_ms(lambda: estimator.estimate(frames[0], frames[1]), repeats, warmup=5)
        return {
            "engine": str(engine),
            "size": f"{width}x{height}",
            "precision": info.precision,
            "device": info.device,
            "ms": ms,
        }
    finally:
        estimator.close()
