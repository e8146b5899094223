"""ONNX Runtime for the exported graphs: the FlowNet2Correlation custom op as an onnxruntime-extensions
Python op, a CPU session factory and a parity check against torch.

Importing this module registers the op (``ai.onnx.contrib::FlowNet2Correlation``, float32 in/out, the
attributes of :data:`.plugin_spec.CORRELATION_ATTRIBUTES`; ``plugin_version``/``plugin_namespace`` are
ignored) with onnxruntime-extensions; it computes with the fast torch correlation.

onnxruntime-extensions' Python ops take float32 only (a float16 input aborts the process), so
:func:`make_ort_session` rewrites every FlowNet2Correlation node before loading: domain set to
``ai.onnx.contrib`` (whatever the export used), inputs Cast to float32, output CastLike'd back to the input
type. An fp16 graph thus runs its correlation in float32, as the plugin accumulates anyway. On CPU, ONNX
Runtime inserts float32 fallbacks around float16 nodes it has no kernel for, so the fp16 graphs run (slowly)
and agree with float32 to about float16 rounding of the intermediate tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

from ..ops.correlation import correlation
from .plugin_spec import (
    CORRELATION_FLOAT_ATTRIBUTES,
    CORRELATION_INT_ATTRIBUTES,
    PLUGIN_DOMAIN,
    PLUGIN_DOMAIN_VERSION,
    PLUGIN_NAME,
)

__all__ = [
    "ValidationResult",
    "make_ort_session",
    "prepare_for_ort",
    "run_onnx",
    "validate_against_torch",
    "validation_images",
]

_ATTRIBUTE_TYPES = {name: PyCustomOpDef.dt_int64 for name in CORRELATION_INT_ATTRIBUTES} | {
    name: PyCustomOpDef.dt_float for name in CORRELATION_FLOAT_ATTRIBUTES
}


@onnx_op(
    op_type=PLUGIN_NAME,
    inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float],
    attrs=_ATTRIBUTE_TYPES,
)
def _flownet2_correlation(input1: np.ndarray, input2: np.ndarray, **attrs: Any) -> np.ndarray:
    a = torch.from_numpy(np.ascontiguousarray(input1, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(input2, dtype=np.float32))
    with torch.inference_mode():
        out = correlation(
            a,
            b,
            pad_size=int(attrs["pad_size"]),
            kernel_size=int(attrs["kernel_size"]),
            max_displacement=int(attrs["max_displacement"]),
            stride1=int(attrs["stride1"]),
            stride2=int(attrs["stride2"]),
            corr_multiply=float(attrs["corr_multiply"]),
        )
    return out.numpy()


def prepare_for_ort(model: Any) -> int:
    """Rewrite the FlowNet2Correlation nodes of an ``onnx.ModelProto`` in place for the Python op (see the
    module docstring). Returns the number of nodes rewritten."""
    from onnx import TensorProto, helper

    graph = model.graph
    new_nodes = []
    count = 0
    for node in graph.node:
        if node.op_type != PLUGIN_NAME:
            new_nodes.append(node)
            continue
        count += 1
        node.domain = PLUGIN_DOMAIN
        stem = f"{node.name or 'corr'}_{count}_ort"
        casts = []
        for k, name in enumerate(list(node.input)):
            cast_name = f"{stem}_in{k}"
            casts.append(
                helper.make_node("Cast", [name], [cast_name], name=f"{stem}_cast{k}", to=TensorProto.FLOAT)
            )
            node.input[k] = cast_name
        original_out = node.output[0]
        node.output[0] = f"{stem}_out"
        back = helper.make_node(
            "CastLike", [node.output[0], casts[0].input[0]], [original_out], name=f"{stem}_castlike"
        )
        new_nodes.extend([*casts, node, back])
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
        opsets = {o.domain: o for o in model.opset_import}
        if PLUGIN_DOMAIN not in opsets:
            model.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, PLUGIN_DOMAIN_VERSION))
    return count


def make_ort_session(onnx_path: str | Path, *, threads: int | None = None) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` for an exported graph, the correlation op library registered.

    Args:
        onnx_path: the ``.onnx`` file (plugin or decomposed form, fp32 or fp16).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    model = onnx.load(str(onnx_path))
    source: str | bytes = str(onnx_path)
    if prepare_for_ort(model):
        source = model.SerializeToString()
    del model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _as_batch(image: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"{name} must be (3, H, W) or (B, 3, H, W) RGB, got shape {np.shape(image)}")
    return np.ascontiguousarray(array)


def run_onnx(session: Any, image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
    """Flow from an exported graph: images (3, H, W) or (B, 3, H, W), RGB 0..255 (cast to float32),
    at the export size → flow (B, 2, H, W) float32 in pixels."""
    a, b = _as_batch(image1, "image1"), _as_batch(image2, "image2")
    if a.shape != b.shape:
        raise ValueError(f"image1 and image2 differ in shape: {a.shape} and {b.shape}")
    names = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {names[0]: a, names[1]: b})[0], dtype=np.float32)


@dataclass(frozen=True)
class ValidationResult:
    """ORT against torch on one random image pair."""

    max_abs_diff: float
    mean_abs_diff: float
    max_flow: float
    ort_ms: float
    torch_ms: float

    def summary(self) -> str:
        return (
            f"ORT vs torch: max |diff| {self.max_abs_diff:.3g} px, mean {self.mean_abs_diff:.3g} px "
            f"(max |flow| {self.max_flow:.3g} px); ORT CPU {self.ort_ms:.0f} ms, torch CPU {self.torch_ms:.0f} ms"
        )


def validation_images(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The image pair :func:`validate_against_torch` uses: random RGB 0..255 (1, 3, H, W), and a copy
    shifted by (2, 3) px with a little noise, so that the flow is not trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    image1 = torch.rand(1, 3, height, width, generator=gen) * 255.0
    noise = torch.rand(1, 3, height, width, generator=gen) * 8.0
    image2 = (torch.roll(image1, shifts=(2, 3), dims=(2, 3)) + noise).clamp(0, 255)
    return image1, image2


def validate_against_torch(
    model: torch.nn.Module,
    onnx_path: str | Path,
    height: int,
    width: int,
    *,
    seed: int = 0,
    session: Any = None,
) -> ValidationResult:
    """Run the torch ``model`` (float32, CPU, eval) and the exported graph on :func:`validation_images`.

    Times are single runs after one warm-up run each.
    """
    image1, image2 = validation_images(height, width, seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(image1, image2)
            start = time.perf_counter()
            expected = model(image1, image2).float().numpy()
            torch_ms = (time.perf_counter() - start) * 1e3
    finally:
        model.train(was_training)
    sess = session if session is not None else make_ort_session(onnx_path)
    a, b = image1.numpy(), image2.numpy()
    run_onnx(sess, a, b)
    start = time.perf_counter()
    got = run_onnx(sess, a, b)
    ort_ms = (time.perf_counter() - start) * 1e3
    diff = np.abs(got - expected)
    return ValidationResult(
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        max_flow=float(np.abs(expected).max()),
        ort_ms=ort_ms,
        torch_ms=torch_ms,
    )
