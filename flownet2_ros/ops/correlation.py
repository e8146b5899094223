"""FlowNetC correlation layer in plain PyTorch.

Why the fast formulation is fast: instead of one multiply-and-reduce pass over all C channels for each of
the (2d+1)² displacements (memory-bound, ~441 passes over the features for FlowNetC), the per-pixel dot
products are obtained from dense matrix products. For one output row, the feature row of ``input1``
(W' pixels × C) is multiplied with the 2d+1 displaced rows of ``input2`` laid out as one
((2d+1)·Q × C) matrix, Q being the window of ``input2`` columns that a tile of W' pixels can reach. The
needed displacements are diagonal bands of this product (pixel x meets columns x + i·stride2), read out
with a strided view. Columns and rows are split into residue classes modulo ``stride2`` so that only
the columns actually visited are multiplied (half of them for FlowNetC), wide rows are cut into tiles
so that the wasted off-band work stays bounded, and all rows sharing a residue class go into one batched
GEMM whose displaced windows are overlapping views (``unfold``), not copies. The work is thus a handful of
large, BLAS-friendly matrix products plus one pass writing the output, and it stays differentiable
through autograd on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Correlation",
    "correlation",
    "correlation_naive",
    "correlation_output_size",
    "prefers_channels_last",
]

# Columns (within one residue class) handled per matrix product; larger tiles waste more off-band work,
# smaller ones give smaller, less efficient GEMMs. 32 covers a whole FlowNetC row at 384×512 input.
_TILE = 32

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _validate_params(
    pad_size: int, kernel_size: int, max_displacement: int, stride1: int, stride2: int
) -> None:
    _check_int("pad_size", pad_size, 0)
    _check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    _check_int("max_displacement", max_displacement, 0)
    _check_int("stride1", stride1, 1)
    _check_int("stride2", stride2, 1)


def correlation_output_size(
    height: int,
    width: int,
    pad_size: int = 20,
    kernel_size: int = 1,
    max_displacement: int = 20,
    stride1: int = 1,
    stride2: int = 2,
) -> tuple[int, int, int]:
    """Output shape of the correlation layer for an input of spatial size ``height × width``.

    Args:
        height (int): input height H.
        width (int): input width W.
        pad_size, kernel_size, max_displacement, stride1, stride2: as in :func:`correlation`.

    Returns:
        tuple[int, int, int]: ``(channels, out_height, out_width)`` with channels ``(2d+1)²``,
        ``d = max_displacement // stride2``, and
        ``out_height = ceil((H + 2·pad_size − 2·(max_displacement + kernel_size // 2)) / stride1)``
        (likewise for the width).

    Raises:
        ValueError: for invalid parameters or an input too small to give at least one output pixel.
    """
    _check_int("height", height, 1)
    _check_int("width", width, 1)
    _validate_params(pad_size, kernel_size, max_displacement, stride1, stride2)
    border = max_displacement + (kernel_size - 1) // 2
    span_h = height + 2 * pad_size - 2 * border
    span_w = width + 2 * pad_size - 2 * border
    if span_h <= 0 or span_w <= 0:
        raise ValueError(
            f"input of size {height}x{width} is too small for pad_size={pad_size}, "
            f"max_displacement={max_displacement}, kernel_size={kernel_size}: the output would be empty"
        )
    d = max_displacement // stride2
    return (2 * d + 1) ** 2, -(-span_h // stride1), -(-span_w // stride1)


def prefers_channels_last(x: Tensor) -> bool:
    """Whether a result computed from the 4-D tensor ``x`` should be laid out channels_last.

    True when ``x`` is channels_last-contiguous but not NCHW-contiguous (a tensor that is both, possible
    only with size-1 dimensions, counts as NCHW), or, for other strides, when its channels are closer in
    memory than its columns (``stride(1) < stride(3)``). The CUDA correlation (and the custom op's fake)
    allocates its output by this rule; :func:`~.warp.warp` and :func:`~.channel_norm.channel_norm` keep
    such inputs channels_last.
    """
    if x.dim() != 4 or x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return bool(x.stride(1) < x.stride(3))


def _validate_inputs(input1: Tensor, input2: Tensor) -> None:
    if not isinstance(input1, Tensor) or not isinstance(input2, Tensor):
        raise ValueError("input1 and input2 must be torch.Tensor")
    if input1.dim() != 4 or input2.dim() != 4:
        raise ValueError(
            f"input1 and input2 must be 4-D (B, C, H, W), got {tuple(input1.shape)} and {tuple(input2.shape)}"
        )
    if input1.shape != input2.shape:
        raise ValueError(
            f"input1 and input2 must have the same shape, got {tuple(input1.shape)} and {tuple(input2.shape)}"
        )
    if input1.dtype != input2.dtype:
        raise ValueError(f"input1 and input2 must have the same dtype, got {input1.dtype} and {input2.dtype}")
    if input1.device != input2.device:
        raise ValueError(
            f"input1 and input2 must be on the same device, got {input1.device} and {input2.device}"
        )
    if not input1.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {input1.dtype}")
    if input1.numel() == 0:
        raise ValueError(f"inputs must not be empty, got shape {tuple(input1.shape)}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def _axis_range(start: int, step: int, count: int, size: int) -> tuple[int, int]:
    """Range ``[lo, hi)`` of k in ``[0, count)`` with ``0 <= start + step·k < size``."""
    lo = min(max(-(start // step), 0), count)
    hi = min(max((size - 1 - start) // step + 1, lo), count)
    return lo, hi


def _window_nhwc(x: Tensor, y0: int, sy: int, ny: int, x0: int, sx: int, nx: int) -> Tensor:
    """Strided samples of ``x`` (B, C, H, W) as a contiguous channels-last (B, ny, nx, C) tensor.

    Row k / column l read ``x[..., y0 + sy·k, x0 + sx·l]`` (unpadded coordinates); outside the image: 0.
    """
    h, w = x.shape[-2:]
    ylo, yhi = _axis_range(y0, sy, ny, h)
    xlo, xhi = _axis_range(x0, sx, nx, w)
    ya, xa = y0 + sy * ylo, x0 + sx * xlo
    part = x[:, :, ya : ya + sy * (yhi - ylo) : sy, xa : xa + sx * (xhi - xlo) : sx].permute(0, 2, 3, 1)
    if ylo or xlo or yhi < ny or xhi < nx:
        part = F.pad(part, (0, 0, xlo, nx - xhi, ylo, ny - yhi))
    return part.contiguous()


def _correlate_grid(
    x1: Tensor,
    x2: Tensor,
    y0: int,
    sy: int,
    ny: int,
    x0: int,
    sx: int,
    nx: int,
    d: int,
    s2: int,
    scale: float,
) -> Tensor:
    """Single-pixel correlation on a grid, (B, (2d+1)², ny, nx).

    ``out[b, (j+d)·(2d+1) + (i+d), gy, gx] = scale · Σ_c x1[b, c, Y, X] · x2[b, c, Y + j·s2, X + i·s2]``
    with ``Y = y0 + sy·gy``, ``X = x0 + sx·gx`` (unpadded coordinates, zeros outside the image).
    """
    batch = x1.shape[0]
    nd = 2 * d + 1
    a_all = _window_nhwc(x1, y0, sy, ny, x0, sx, nx)  # (B, ny, nx, C)
    if scale != 1.0:
        a_all = a_all * scale
    out = x1.new_empty(batch, nd, nd, ny, nx)
    # Output rows gy = g0 + p·n share the residue of their x2 rows modulo s2; their displaced windows are
    # consecutive rows of one class array, rstep apart.
    p = s2 // math.gcd(sy, s2)
    rstep = p * sy // s2
    for rho in range(min(s2, nx)):  # output columns gx = rho + s2·m
        m_count = -(-(nx - rho) // s2)
        tile = min(_TILE, m_count)
        starts = [min(t * tile, m_count - tile) for t in range(-(-m_count // tile))]
        qt = (tile - 1) * sx + nd  # x2 class columns reached by one tile
        col0 = x0 + rho * sx - d * s2  # x2 column of class index 0
        for g0 in range(min(p, ny)):
            n_rows = -(-(ny - g0) // p)
            row0 = y0 + g0 * sy - d * s2  # x2 row of class index 0
            a_cls = a_all[:, g0::p, rho::s2]  # (B, n_rows, m_count, C)
            for s in starts:
                # x2 class array for this tile: rows row0 + s2·k, columns col0 + s2·(s·sx + q)
                arr = _window_nhwc(x2, row0, s2, (n_rows - 1) * rstep + nd, col0 + s2 * s * sx, s2, qt)
                c0 = rho + s2 * s
                for b in range(batch):
                    # (n_rows, nd·qt, C): window n = class rows n·rstep … n·rstep + nd − 1 (a view)
                    win = arr[b].unfold(0, nd, rstep).permute(0, 3, 1, 2).reshape(n_rows, nd * qt, -1)
                    a = a_cls[b, :, s : s + tile]  # (n_rows, tile, C)
                    gram = torch.matmul(win, a.transpose(1, 2)).contiguous()  # (n_rows, nd·qt, tile)
                    # band: gram[n, j·qt + m·sx + i, m] → (j, i, n, m)
                    band = gram.as_strided(
                        (nd, nd, n_rows, tile),
                        (qt * tile, tile, nd * qt * tile, sx * tile + 1),
                        gram.storage_offset(),
                    )
                    out[b, :, :, g0::p, c0 : c0 + s2 * (tile - 1) + 1 : s2].copy_(band)
    return out.reshape(batch, nd * nd, ny, nx)


def correlation(
    input1: Tensor,
    input2: Tensor,
    pad_size: int = 20,
    kernel_size: int = 1,
    max_displacement: int = 20,
    stride1: int = 1,
    stride2: int = 2,
    corr_multiply: float = 1.0,
) -> Tensor:
    """FlowNet correlation (cost volume) between two feature maps.

    Both inputs are zero-padded by ``pad_size``. Output pixel (y, x) compares the ``kernel_size²`` window of
    ``input1`` centred at padded position (y·stride1 + max_displacement, x·stride1 + max_displacement) with
    the same window of ``input2`` displaced by (dy, dx) = (j·stride2, i·stride2), i, j ∈ [−d, d],
    ``d = max_displacement // stride2``; the value is the sum of the products over the window and all
    channels divided by ``kernel_size²·C``, times ``corr_multiply``. Positions outside the padded input
    read zeros. Output channel ``(j + d)·(2d+1) + (i + d)``: vertical displacement outer, horizontal inner.
    Defaults are the FlowNetC configuration.

    Differentiable, device-agnostic; float16/bfloat16 inputs are computed in float32 and cast back.
    Inputs may have any strides: the op gathers channels-last windows itself, so channels_last inputs are
    read in place where NCHW ones are transposed; the result is NCHW-contiguous.

    Args:
        input1 (Tensor): first feature map, shape (B, C, H, W).
        input2 (Tensor): second feature map, same shape, dtype and device as ``input1``.
        pad_size (int): zero padding on every side (>= 0).
        kernel_size (int): odd window size (>= 1).
        max_displacement (int): largest displacement in pixels (>= 0).
        stride1 (int): output pixel step on ``input1`` (>= 1).
        stride2 (int): displacement step (>= 1).
        corr_multiply (float): scalar multiplier of the result.

    Returns:
        Tensor: shape (B, (2d+1)², H', W'), see :func:`correlation_output_size`; dtype of the inputs.

    Raises:
        ValueError: for inputs that are not 4-D or differ in shape/dtype/device, or invalid parameters.
    """
    _validate_inputs(input1, input2)
    _, channels, height, width = input1.shape
    _, out_h, out_w = correlation_output_size(
        height, width, pad_size, kernel_size, max_displacement, stride1, stride2
    )
    d = max_displacement // stride2
    compute = _compute_dtype(input1.dtype)
    x1, x2 = input1.to(compute), input2.to(compute)
    # Unpadded coordinate of the centre of output pixel (0, 0) and of its window's top-left corner.
    centre = max_displacement - pad_size
    radius = (kernel_size - 1) // 2
    corner = centre - radius
    mult = float(corr_multiply)
    if kernel_size == 1:
        out = _correlate_grid(
            x1, x2, centre, stride1, out_h, centre, stride1, out_w, d, stride2, mult / channels
        )
    elif stride1 <= kernel_size:
        # Correlate every pixel the windows cover, then average each window.
        dense_h = (out_h - 1) * stride1 + kernel_size
        dense_w = (out_w - 1) * stride1 + kernel_size
        dense = _correlate_grid(x1, x2, corner, 1, dense_h, corner, 1, dense_w, d, stride2, mult / channels)
        out = F.avg_pool2d(dense, kernel_size, stride1)
    else:
        # Windows far apart: sum one strided grid per window offset.
        scale = mult / (channels * kernel_size * kernel_size)
        out = torch.stack(
            [
                _correlate_grid(
                    x1, x2, corner + a, stride1, out_h, corner + b, stride1, out_w, d, stride2, scale
                )
                for a in range(kernel_size)
                for b in range(kernel_size)
            ]
        ).sum(0)
    return out.to(input1.dtype)


def correlation_naive(
    input1: Tensor,
    input2: Tensor,
    pad_size: int = 20,
    kernel_size: int = 1,
    max_displacement: int = 20,
    stride1: int = 1,
    stride2: int = 2,
    corr_multiply: float = 1.0,
) -> Tensor:
    """Straightforward reference of :func:`correlation` (same arguments, same result, much slower).

    A Python loop over the (2d+1)² displacements and the kernel window offsets, each doing
    shift-multiply-sum over the channels. For tests and benchmarks.

    Args:
        input1 (Tensor): (B, C, H, W).
        input2 (Tensor): (B, C, H, W).

    Returns:
        Tensor: (B, (2d+1)², H', W').
    """
    _validate_inputs(input1, input2)
    batch, channels, height, width = input1.shape
    _, out_h, out_w = correlation_output_size(
        height, width, pad_size, kernel_size, max_displacement, stride1, stride2
    )
    d = max_displacement // stride2
    compute = _compute_dtype(input1.dtype)
    radius = (kernel_size - 1) // 2
    # Extra `radius` of zeros: windows centred on the outermost padded pixels reach beyond the padding.
    ext = pad_size + radius
    x1 = F.pad(input1.to(compute), (ext, ext, ext, ext))
    x2 = F.pad(input2.to(compute), (ext, ext, ext, ext))
    span_h = (out_h - 1) * stride1 + 1
    span_w = (out_w - 1) * stride1 + 1
    maps = []
    for j in range(-d, d + 1):
        for i in range(-d, d + 1):
            acc = x1.new_zeros(batch, out_h, out_w)
            for a in range(kernel_size):
                for b in range(kernel_size):
                    y, x = max_displacement + a, max_displacement + b  # extended-frame window corner
                    p1 = x1[:, :, y : y + span_h : stride1, x : x + span_w : stride1]
                    yy, xx = y + j * stride2, x + i * stride2
                    p2 = x2[:, :, yy : yy + span_h : stride1, xx : xx + span_w : stride1]
                    acc = acc + (p1 * p2).sum(1)
            maps.append(acc)
    out = torch.stack(maps, 1) * (float(corr_multiply) / (kernel_size * kernel_size * channels))
    return out.to(input1.dtype)


class Correlation(nn.Module):
    """Module wrapper of :func:`correlation`; holds the configuration, no parameters or buffers.

    Args:
        pad_size, kernel_size, max_displacement, stride1, stride2, corr_multiply: see :func:`correlation`
            (defaults: FlowNetC).

    Shape:
        - input1, input2: (B, C, H, W)
        - output: (B, (2d+1)², H', W'), ``d = max_displacement // stride2``
    """

    def __init__(
        self,
        pad_size: int = 20,
        kernel_size: int = 1,
        max_displacement: int = 20,
        stride1: int = 1,
        stride2: int = 2,
        corr_multiply: float = 1.0,
    ) -> None:
        super().__init__()
        _validate_params(pad_size, kernel_size, max_displacement, stride1, stride2)
        self.pad_size = pad_size
        self.kernel_size = kernel_size
        self.max_displacement = max_displacement
        self.stride1 = stride1
        self.stride2 = stride2
        self.corr_multiply = float(corr_multiply)

    @property
    def output_channels(self) -> int:
        """Number of output channels, (2d+1)²."""
        return (2 * (self.max_displacement // self.stride2) + 1) ** 2

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        """On CUDA without gradients: the CUDA kernel as a traceable custom op (``ops.correlation_op``);
        otherwise the differentiable torch op."""
        from .correlation_op import correlation_for_inference

        return correlation_for_inference(
            input1,
            input2,
            self.pad_size,
            self.kernel_size,
            self.max_displacement,
            self.stride1,
            self.stride2,
            self.corr_multiply,
        )

    def extra_repr(self) -> str:
        return (
            f"pad_size={self.pad_size}, kernel_size={self.kernel_size}, "
            f"max_displacement={self.max_displacement}, stride1={self.stride1}, stride2={self.stride2}, "
            f"corr_multiply={self.corr_multiply}"
        )
