"""ONNX export of the FlowNet 2.0 stacks for TensorRT (correlation as a plugin node) or any ONNX runtime.

``export_onnx(model, path, height, width, precision=, opset=, correlation=, dynamic_batch=)`` writes one
self-contained ``.onnx`` file with inputs ``image1``, ``image2`` (B, 3, H, W) float32 RGB 0..255 and output
``flow`` (B, 2, H, W) float32, and returns an :class:`ExportInfo`.

How the graph is made
    The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), the stable path for custom
    symbolics; it works with torch 2.13 but emits ``DeprecationWarning``s on every call (the exporter
    itself and its internal ``exporter_context``/``setup_onnx_logging``). Silenced during the export:
    those, the ``TracerWarning``s of the models' shape checks (constant by design, the export is static)
    and the "Only steps=1 can be constant folded" notes about strided Slices.
    The model classes are not modified: for the duration of the export each ``Correlation`` module's
    ``forward`` is shadowed by an instance attribute, restored afterwards even on error.

Correlation
    ``correlation="plugin"``: one custom node per FlowNetC, ``ai.onnx.contrib::FlowNet2Correlation`` (see
    :mod:`.plugin_spec`): INT attributes pad_size, kernel_size, max_displacement, stride1, stride2, FLOAT
    corr_multiply, STRING plugin_version / plugin_namespace. TensorRT's ONNX parser dispatches unknown nodes
    on op_type alone (the domain is ignored), and onnxruntime-extensions' Python custom ops live only in
    ``ai.onnx.contrib``, so that one domain serves both runtimes without rewriting;
    :func:`flownet2_ros.export.ort_correlation.make_ort_session` still rewrites any other domain, and wraps
    the node in Casts because those Python ops only take float32.

    ``correlation="decomposed"``: standard ONNX only. kernel_size 1 / stride1 1 (FlowNetC) uses a banded
    matrix-product formulation: output columns are split into the ``stride2`` residue classes (only
    columns of one residue ever meet) and into tiles of ``_BAND_TILE`` columns; per residue class one
    Gather collects, for every vertical displacement, output row and tile, the t + 2d channels-last pixels
    of input2 the tile can reach, one batched MatMul gives every (tile pixel, reachable pixel) product,
    and the 2d+1 wanted diagonals are read out with the pad-and-reshape "skew" trick (no index tensors).
    About 90 nodes (Constants included) per correlation instead of ~3,200 for the per-displacement
    Slice/Mul/ReduceSum form (kept for other configurations, ``method="sliced"``); ~1.7× the direct
    form's multiply-adds, but as GEMMs. Pads are emitted as single Pad nodes with constant pads.

    Measured on the shared 2-core CPU (other engineers' jobs running: timings vary up to 5×; the quietest
    run is shown, one run each after a warm-up), torch 2.13 / ONNX Runtime 1.32, fp32:

    ========================================  =========  ==========  ==========  ==========
    FlowNet2C full width, 384×512             torch      ORT plugin  ORT decomp  (sliced)
    ========================================  =========  ==========  ==========  ==========
    whole network, ms                         212        307         210
    nodes                                                88          178
    export time, s / file, MiB                           2.1 / 150   3.7 / 151
    correlation alone (1×256×48×64), ms       14         123         41          464
    correlation alone, nodes                             1           91          3,210
    ========================================  =========  ==========  ==========  ==========

    The plugin form on ORT is slow only because onnxruntime-extensions' Python ops return their output
    as a Python list (~1.35 M floats here); on TensorRT the plugin is a CUDA kernel. fp16 files are half
    the size (75 MiB). Full FlowNet2 (162 M parameters) at 384×512: 19 s to export, 620 MiB (fp32) /
    311 MiB (fp16), peak RSS 3.4 GB (2.6 GB fp16), most of it inside torch's exporter.

fp16
    ``precision="fp16"`` stores the weights as float16 and computes the networks in float16; the graph's
    inputs and output stay float32 (Cast nodes inside), as TensorRT's strongly typed networks need.
    Kept in float32 on purpose: the mean subtraction and /rgb_max (a mean over all pixels of 0..255
    values; cast to float16 right after), the warp (GridSample and its pixel→[-1, 1] grid arithmetic:
    normalised coordinates near ±1 step by ~1e-3 in float16, 0.25 px at width 512) and the channel norms
    (squares of flows overflow float16 above 256 px). These follow the torch ops' own float16 policy, so
    the graph computes what the torch model does in float16. The correlation takes and returns float16
    (``correlation_precision="fp32"`` puts it between Casts instead): the ORT op computes in float32, the
    plugin should accumulate in float32, the decomposed form is a float16 MatMul (accumulation precision
    up to the runtime).

Size
    The largest stack (FlowNet2, 162 M parameters) is 650 MB in float32, well under protobuf's 2 GiB, so the
    file is always self-contained (checked: weights that would not fit are refused with a clear error).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.correlation import Correlation, correlation, correlation_output_size
from .plugin_spec import (
    PLUGIN_DOMAIN,
    PLUGIN_DOMAIN_VERSION,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)

__all__ = [
    "CORRELATION_MODES",
    "INPUT_NAMES",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUT_NAMES",
    "PRECISIONS",
    "ExportError",
    "ExportInfo",
    "check_export_options",
    "correlation_decomposed",
    "export_correlation_as",
    "export_onnx",
    "state_dict_sha256",
]

PRECISIONS = ("fp32", "fp16")
CORRELATION_MODES = ("plugin", "decomposed")
MIN_OPSET, MAX_OPSET = 17, 19
INPUT_NAMES = ("image1", "image2")
OUTPUT_NAMES = ("flow",)

# Columns (per residue class) per tile of the banded decomposition: the MatMul computes (T + 2d)/(2d+1)
# times the needed products; 16 keeps that at 36/21 for FlowNetC while the GEMMs stay reasonably large.
_BAND_TILE = 16
_PROTOBUF_LIMIT = 2**31 - 1
_METADATA_PREFIX = "flownet2_ros."


class ExportError(RuntimeError):
    """The exported graph failed a post-export check (an internal error, not a user error)."""


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`export_onnx` wrote.

    ``onnx_sha256`` identifies the file (engine caches key on it); ``weights_sha256`` the weights
    (:func:`state_dict_sha256`, independent of export options). ``node_count`` counts every top-level node,
    Constant nodes included; ``custom_node_count`` the FlowNet2Correlation nodes.
    """

    path: Path
    stack: str
    height: int
    width: int
    precision: str
    opset: int
    correlation: str
    correlation_dtype: str
    dynamic_batch: bool
    node_count: int
    custom_node_count: int
    grid_sample_count: int
    file_size: int
    onnx_sha256: str
    weights_sha256: str
    export_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (path as str)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out

    def summary(self) -> str:
        """A few human-readable lines."""
        batch = "dynamic" if self.dynamic_batch else "1"
        return "\n".join(
            [
                f"ONNX model:   {self.path} ({self.file_size / 2**20:.1f} MiB)",
                f"stack:        {self.stack}, input {self.width}x{self.height} (WxH), batch {batch}",
                f"precision:    {self.precision} (correlation in {self.correlation_dtype}), opset {self.opset}",
                f"correlation:  {self.correlation} ({self.custom_node_count} {PLUGIN_NAME} node(s))",
                f"graph:        {self.node_count} nodes, {self.grid_sample_count} GridSample",
                f"onnx sha256:  {self.onnx_sha256}",
                f"weights sha256: {self.weights_sha256}",
                f"export time:  {self.export_seconds:.1f} s",
            ]
        )


# ----------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """Suspend the TorchScript tracer (so that shapes are plain ints and eager code runs unrecorded)."""
    get_state = getattr(torch._C, "_get_tracing_state", None)
    set_state = getattr(torch._C, "_set_tracing_state", None)
    if get_state is None or set_state is None:  # pragma: no cover - private API gone
        yield
        return
    state = get_state()
    set_state(None)
    try:
        yield
    finally:
        set_state(state)


def _static_shape(x: Tensor) -> tuple[int, ...]:
    with _untraced():
        return tuple(int(s) for s in x.shape)


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over the state_dict: each key, dtype, shape and raw bytes, keys sorted."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------
# correlation: plugin node


class _CorrelationPluginFunction(torch.autograd.Function):
    """Eager: the fast torch correlation. Traced for ONNX: one ``FlowNet2Correlation`` custom node."""

    @staticmethod
    def forward(
        ctx: Any,
        input1: Tensor,
        input2: Tensor,
        pad_size: int,
        kernel_size: int,
        max_displacement: int,
        stride1: int,
        stride2: int,
        corr_multiply: float,
    ) -> Tensor:
        params = (pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply)
        if not torch.jit.is_tracing():
            return correlation(input1, input2, *params)
        # The fast op reads shapes as ints, so it runs untraced; its result must then reach the tracer
        # through a traced tensor (an untraced one would be taken for a constant). The symbolic below
        # replaces all of this in the exported graph.
        with _untraced():
            result = correlation(input1, input2, *params)
            shape = tuple(result.shape)
        out = input1.new_zeros(shape)
        out.copy_(result)
        return out

    @staticmethod
    def symbolic(
        g: Any,
        input1: Any,
        input2: Any,
        pad_size: int,
        kernel_size: int,
        max_displacement: int,
        stride1: int,
        stride2: int,
        corr_multiply: float,
    ) -> Any:
        out = g.op(
            f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}",
            input1,
            input2,
            pad_size_i=pad_size,
            kernel_size_i=kernel_size,
            max_displacement_i=max_displacement,
            stride1_i=stride1,
            stride2_i=stride2,
            corr_multiply_f=float(corr_multiply),
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=PLUGIN_NAMESPACE,
        )
        in_type = input1.type()
        # varyingSizes: per-dim sizes with None for symbolic ones (sizes() is None if any dim is symbolic).
        sizes = in_type.varyingSizes() if hasattr(in_type, "varyingSizes") else None
        if sizes is not None and len(sizes) == 4 and sizes[2] is not None and sizes[3] is not None:
            channels, out_h, out_w = correlation_output_size(
                sizes[2], sizes[3], pad_size, kernel_size, max_displacement, stride1, stride2
            )
            out.setType(in_type.with_sizes([sizes[0], channels, out_h, out_w]))
        return out


# ----------------------------------------------------------------------------------------------------
# correlation: standard ONNX ops


class _ZeroPad2d(torch.autograd.Function):
    """Zero padding of the last two dims, exported as one Pad node with constant pads. (The TorchScript
    exporter's own Pad at opset >= 11 builds the pads at run time through a reversing Slice it cannot fold.)"""

    @staticmethod
    def forward(ctx: Any, x: Tensor, rank: int, left: int, right: int, top: int, bottom: int) -> Tensor:
        return F.pad(x, (left, right, top, bottom))

    @staticmethod
    def symbolic(g: Any, x: Any, rank: int, left: int, right: int, top: int, bottom: int) -> Any:
        lead = [0] * (rank - 2)
        pads = torch.tensor([*lead, top, left, *lead, bottom, right], dtype=torch.int64)
        return g.op("Pad", x, g.op("Constant", value_t=pads), mode_s="constant")


def _pad(x: Tensor, left: int, right: int, top: int, bottom: int) -> Tensor:
    if not (left or right or top or bottom):
        return x
    if torch.jit.is_tracing():
        return _ZeroPad2d.apply(x, x.dim(), left, right, top, bottom)
    return F.pad(x, (left, right, top, bottom))


def _index(values: list[int], device: torch.device) -> Tensor:
    """A constant int64 index tensor (created untraced: it enters the graph as an initializer)."""
    with _untraced():
        return torch.tensor(values, dtype=torch.int64, device=device)


def _correlation_sliced(
    x1: Tensor,
    x2: Tensor,
    shape: tuple[int, ...],
    pad_size: int,
    kernel_size: int,
    max_displacement: int,
    stride1: int,
    stride2: int,
    corr_multiply: float,
) -> Tensor:
    """Any configuration: one Slice/Mul/ReduceSum per displacement and window offset, then Concat."""
    _, channels, height, width = shape
    _, out_h, out_w = correlation_output_size(
        height, width, pad_size, kernel_size, max_displacement, stride1, stride2
    )
    d = max_displacement // stride2
    ext = pad_size + (kernel_size - 1) // 2
    p1 = _pad(x1, ext, ext, ext, ext)
    p2 = _pad(x2, ext, ext, ext, ext)
    span_h, span_w = (out_h - 1) * stride1 + 1, (out_w - 1) * stride1 + 1
    maps = []
    for j in range(-d, d + 1):
        for i in range(-d, d + 1):
            acc: Tensor | None = None
            for a in range(kernel_size):
                for b in range(kernel_size):
                    y, x = max_displacement + a, max_displacement + b
                    w1 = p1[:, :, y : y + span_h : stride1, x : x + span_w : stride1]
                    yy, xx = y + j * stride2, x + i * stride2
                    w2 = p2[:, :, yy : yy + span_h : stride1, xx : xx + span_w : stride1]
                    term = (w1 * w2).sum(1, keepdim=True)
                    acc = term if acc is None else acc + term
            assert acc is not None
            maps.append(acc)
    return torch.cat(maps, 1) * (float(corr_multiply) / (kernel_size * kernel_size * channels))


def _correlation_banded(
    x1: Tensor,
    x2: Tensor,
    shape: tuple[int, ...],
    pad_size: int,
    max_displacement: int,
    stride2: int,
    corr_multiply: float,
    tile: int = _BAND_TILE,
) -> Tensor:
    """kernel_size 1, stride1 1: residue classes × column tiles, one batched MatMul per residue class."""
    _, channels, height, width = shape
    s, d = stride2, max_displacement // stride2
    nd = 2 * d + 1
    out_h = height + 2 * pad_size - 2 * max_displacement
    out_w = width + 2 * pad_size - 2 * max_displacement
    off = max_displacement - pad_size  # unpadded coordinate of output pixel (0, 0)
    k_cols = -(-out_w // s)  # output columns per residue class
    t = max(1, min(tile, k_cols))
    n_tiles = -(-k_cols // t)
    k_pad = n_tiles * t
    # One zero padding for both inputs, large enough for every read below.
    lead = max(0, d * s - off)
    pad_bottom = max(0, out_h - 1 + off + d * s - (height - 1))
    pad_right = max(0, s * k_pad - 1 + off + d * s - (width - 1))
    p1 = _pad(x1, lead, pad_right, lead, pad_bottom)
    p2 = _pad(x2, lead, pad_right, lead, pad_bottom)
    y0 = lead + off
    hp, wp = height + lead + pad_bottom, width + lead + pad_right
    region1 = p1[:, :, y0 : y0 + out_h, y0 : y0 + s * k_pad]  # (B, C, H', s·k_pad)
    pixels2 = p2.permute(0, 2, 3, 1).reshape(-1, hp * wp, channels)  # channels-last, flat (B, Hp·Wp, C)
    width2 = t + 2 * d  # input2 columns (of one residue class) a tile reaches
    classes = []
    for r in range(min(s, out_w)):
        a = region1[:, :, :, r::s].reshape(-1, channels, out_h, n_tiles, t).permute(0, 2, 3, 1, 4)
        a = a.unsqueeze(1)  # (B, 1, H', n_tiles, C, t)
        # One Gather: for each vertical displacement j, output row y and tile n, the t + 2d input2 pixels
        # (of residue r) that the tile's pixels meet.
        index = _index(
            [
                (y0 + (j - d) * s + y) * wp + y0 + r + s * (n * t + q - d)
                for j in range(nd)
                for y in range(out_h)
                for n in range(n_tiles)
                for q in range(width2)
            ],
            x2.device,
        )
        b = pixels2.index_select(1, index).reshape(-1, nd, out_h, n_tiles, width2, channels)
        gram = torch.matmul(b, a).transpose(-1, -2)  # (B, nd, H', n_tiles, t, t + 2d): pixel k · column q
        # Diagonals q = k + i' (i' = 0 … 2d): flatten, pad t, view with row length t + 2d + 1, keep nd.
        flat = gram.reshape(-1, nd, out_h, n_tiles, t * width2)
        skew = _pad(flat, 0, t, 0, 0).reshape(-1, nd, out_h, n_tiles, t, width2 + 1)[..., :nd]
        # (B, nd_j, H', n_tiles, t, nd_i) → (B, nd_j, nd_i, H', k_pad)
        classes.append(skew.permute(0, 1, 5, 2, 3, 4).reshape(-1, nd, nd, out_h, k_pad))
    # Interleave the residue classes: column x = k·s + r (fewer classes only when out_w < s, k_pad = 1).
    merged = torch.stack(classes, -1).reshape(-1, nd * nd, out_h, k_pad * len(classes))
    return merged[..., :out_w] * (float(corr_multiply) / channels)


def correlation_decomposed(
    input1: Tensor,
    input2: Tensor,
    pad_size: int = 20,
    kernel_size: int = 1,
    max_displacement: int = 20,
    stride1: int = 1,
    stride2: int = 2,
    corr_multiply: float = 1.0,
    *,
    method: str = "auto",
) -> Tensor:
    """The correlation in exportable torch ops (same arguments and result as ``ops.correlation``).

    ``method``: ``"banded"`` (kernel_size 1 and stride1 1 only), ``"sliced"`` (any configuration; one
    Slice/Mul/ReduceSum per displacement), ``"auto"`` (banded when possible). Computes in the input dtype.
    """
    shape = _static_shape(input1)
    if method not in ("auto", "banded", "sliced"):
        raise ValueError(f"method must be auto, banded or sliced, got {method!r}")
    banded_ok = kernel_size == 1 and stride1 == 1
    if method == "banded" and not banded_ok:
        raise ValueError("the banded correlation needs kernel_size 1 and stride1 1")
    if method != "sliced" and banded_ok:
        return _correlation_banded(input1, input2, shape, pad_size, max_displacement, stride2, corr_multiply)
    return _correlation_sliced(
        input1, input2, shape, pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply
    )


# ----------------------------------------------------------------------------------------------------
# temporary substitutions


def _correlation_modules(model: nn.Module) -> list[Correlation]:
    return [m for m in model.modules() if isinstance(m, Correlation)]


@contextlib.contextmanager
def export_correlation_as(
    model: nn.Module, mode: str, compute_dtype: torch.dtype | None = None, method: str = "auto"
) -> Iterator[int]:
    """Within the block, every ``Correlation`` in ``model`` runs as the plugin node (``mode="plugin"``)
    or as standard ops (``"decomposed"``), optionally computed in ``compute_dtype`` (inputs cast, output
    cast back). Yields the number of modules substituted; their own ``forward`` is restored on exit, also
    after an exception. The model classes are never modified (instance attributes only)."""
    if mode not in CORRELATION_MODES:
        raise ValueError(f"correlation must be one of {', '.join(CORRELATION_MODES)}, got {mode!r}")
    modules = _correlation_modules(model)
    saved: list[tuple[Correlation, bool, Any]] = []

    def make_forward(m: Correlation) -> Any:
        params = (m.pad_size, m.kernel_size, m.max_displacement, m.stride1, m.stride2, m.corr_multiply)

        def forward(input1: Tensor, input2: Tensor) -> Tensor:
            dtype = input1.dtype
            if compute_dtype is not None and compute_dtype != dtype:
                input1, input2 = input1.to(compute_dtype), input2.to(compute_dtype)
            if mode == "plugin":
                out = _CorrelationPluginFunction.apply(input1, input2, *params)
            else:
                out = correlation_decomposed(input1, input2, *params, method=method)
            return out.to(dtype) if out.dtype != dtype else out

        return forward

    try:
        for m in modules:
            had = "forward" in m.__dict__
            saved.append((m, had, m.__dict__.get("forward")))
            m.forward = make_forward(m)  # type: ignore[method-assign]
        yield len(modules)
    finally:
        for m, had, previous in reversed(saved):
            if had:
                m.__dict__["forward"] = previous
            else:
                m.__dict__.pop("forward", None)


@contextlib.contextmanager
def _half_weights(model: nn.Module) -> Iterator[None]:
    """Parameters and floating buffers as float16 within the block; the original tensors come back."""
    saved: list[tuple[Tensor, Tensor]] = []
    try:
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point() and tensor.dtype != torch.float16:
                saved.append((tensor, tensor.data))
                tensor.data = tensor.data.to(torch.float16)
        yield
    finally:
        for tensor, data in saved:
            tensor.data = data


@contextlib.contextmanager
def _normalize_then_half() -> Iterator[None]:
    """The stacks' mean subtraction stays float32; its results enter the networks as float16."""
    from ..models import stacks

    original = stacks.normalize_pair

    def normalize_pair(image1: Tensor, image2: Tensor, rgb_max: float) -> tuple[Tensor, Tensor]:
        x1, x2 = original(image1, image2, rgb_max)  # float32 graph inputs: computed in float32
        return x1.to(torch.float16), x2.to(torch.float16)

    stacks.normalize_pair = normalize_pair
    try:
        yield
    finally:
        stacks.normalize_pair = original


class _Float32Output(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image1: Tensor, image2: Tensor) -> Tensor:
        return self.model(image1, image2).float()


# ----------------------------------------------------------------------------------------------------
# export


def check_export_options(
    height: int,
    width: int,
    *,
    precision: str = "fp32",
    opset: int = 17,
    correlation: str = "plugin",
    correlation_precision: str | None = None,
) -> None:
    """Raise ValueError for options :func:`export_onnx` refuses (cheap; no model needed)."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 64:
            raise ValueError(f"{name} must be a positive multiple of 64, got {value!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if correlation_precision is not None and correlation_precision not in PRECISIONS:
        raise ValueError(f"correlation_precision must be fp32, fp16 or None, got {correlation_precision!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"opset must be {MIN_OPSET}..{MAX_OPSET}, got {opset!r} "
            "(TensorRT mis-parses GridSample exported at opset 20)"
        )
    if correlation not in CORRELATION_MODES:
        raise ValueError(f"correlation must be one of {', '.join(CORRELATION_MODES)}, got {correlation!r}")


def _check_model(model: nn.Module) -> None:
    from ..models import STACKS

    if not isinstance(model, tuple(STACKS.values())):
        raise ValueError(
            f"model must be a FlowNet 2.0 stack from flownet2_ros.models ({', '.join(STACKS)}), "
            f"got {type(model).__name__}"
        )


def _verify_graph(proto: Any, correlation: str, n_correlations: int) -> tuple[int, int]:
    """Post-export checks; returns (custom node count, GridSample count)."""
    from onnx import helper

    nodes = list(proto.graph.node)
    custom = [n for n in nodes if n.op_type == PLUGIN_NAME]
    expected = n_correlations if correlation == "plugin" else 0
    if len(custom) != expected:
        raise ExportError(f"expected {expected} {PLUGIN_NAME} node(s), found {len(custom)}")
    for node in custom:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.domain != PLUGIN_DOMAIN or attrs.get("plugin_version") != PLUGIN_VERSION.encode():
            raise ExportError(f"{PLUGIN_NAME} node {node.name!r} has the wrong domain or plugin_version")
    grid = [n for n in nodes if n.op_type == "GridSample"]
    for node in grid:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            attrs.get("mode") != b"bilinear"
            or attrs.get("padding_mode") != b"border"
            or attrs.get("align_corners") != 1
        ):
            raise ExportError(
                f"GridSample node {node.name!r} is not bilinear/border/align_corners=1: {attrs}"
            )
    return len(custom), len(grid)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    height: int,
    width: int,
    *,
    precision: str = "fp32",
    opset: int = 17,
    correlation: str = "plugin",
    dynamic_batch: bool = False,
    correlation_precision: str | None = None,
) -> ExportInfo:
    """Export a FlowNet 2.0 stack to ONNX (see the module docstring for the graph's conventions).

    Args:
        model: a stack from ``flownet2_ros.models.build`` / ``load_checkpoint`` (any width). Exported with
            eval semantics; its training flag, parameters and Correlation modules are left as they were.
        path: the ``.onnx`` file to write (parent folder must exist; written atomically).
        height, width: static input size, positive multiples of 64.
        precision: ``"fp32"`` or ``"fp16"`` (float16 weights and compute, float32 inputs/output).
        opset: ONNX opset, 17..19.
        correlation: ``"plugin"`` (one FlowNet2Correlation custom node per FlowNetC) or ``"decomposed"``
            (standard ONNX ops only).
        dynamic_batch: make the batch dimension symbolic (``batch``); otherwise it is 1.
        correlation_precision: dtype the correlation runs in, ``"fp32"``/``"fp16"``; None = ``precision``.

    Returns:
        ExportInfo: file, options, node counts, size and hashes.

    Raises:
        ValueError: unsupported model, size, precision, opset or correlation mode; weights over 2 GiB.
        ExportError: the exported graph failed a consistency check.
        OSError: the file cannot be written.
    """
    import onnx

    check_export_options(
        height,
        width,
        precision=precision,
        opset=opset,
        correlation=correlation,
        correlation_precision=correlation_precision,
    )
    _check_model(model)
    start = time.perf_counter()
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder of the output file does not exist: {path.parent}")
    half = precision == "fp16"
    corr_dtype = torch.float16 if (correlation_precision or precision) == "fp16" else torch.float32
    weight_bytes = sum(p.numel() for p in model.parameters()) * (2 if half else 4)
    if weight_bytes > _PROTOBUF_LIMIT - (64 << 20):
        raise ValueError(
            f"{weight_bytes / 2**30:.2f} GiB of weights do not fit one ONNX protobuf (2 GiB); "
            "external-data export is not supported"
        )
    weights_sha = state_dict_sha256(model)

    gen = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    images = tuple((torch.rand(1, 3, height, width, generator=gen) * 255.0).to(device) for _ in range(2))
    dynamic_axes = {name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)} if dynamic_batch else None
    custom_opsets = {PLUGIN_DOMAIN: PLUGIN_DOMAIN_VERSION} if correlation == "plugin" else None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            exported: nn.Module = model
            if half:
                stack.enter_context(_half_weights(model))
                stack.enter_context(_normalize_then_half())
                exported = _Float32Output(model)
            n_corr = stack.enter_context(export_correlation_as(model, correlation, corr_dtype))
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=r".*The feature will be removed.*")
            # Shape checks in the models and ops become constants: intended, the export is static.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*Only steps=1 can be constant folded.*")
            torch.onnx.export(
                exported,
                images,
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic_axes,
                custom_opsets=custom_opsets,
                do_constant_folding=True,
                export_params=True,
            )
        proto = onnx.load(str(tmp))
        custom_count, grid_count = _verify_graph(proto, correlation, n_corr)
        metadata = {
            "stack": type(model).__name__,
            "height": str(height),
            "width": str(width),
            "precision": precision,
            "correlation": correlation,
            "correlation_dtype": "float16" if corr_dtype == torch.float16 else "float32",
            "plugin": f"{PLUGIN_NAME}/{PLUGIN_VERSION}/{PLUGIN_NAMESPACE}" if correlation == "plugin" else "",
            "weights_sha256": weights_sha,
            "width_multiplier": str(getattr(model, "width", 1.0)),
            "exporter": f"torch {torch.__version__} (TorchScript exporter)",
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = _METADATA_PREFIX + key, value
        node_count = len(proto.graph.node)
        onnx.save(proto, str(tmp))
        del proto
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return ExportInfo(
        path=path,
        stack=type(model).__name__,
        height=height,
        width=width,
        precision=precision,
        opset=opset,
        correlation=correlation,
        correlation_dtype=metadata["correlation_dtype"],
        dynamic_batch=dynamic_batch,
        node_count=node_count,
        custom_node_count=custom_count,
        grid_sample_count=grid_count,
        file_size=path.stat().st_size,
        onnx_sha256=_file_sha256(path),
        weights_sha256=weights_sha,
        export_seconds=time.perf_counter() - start,
    )
