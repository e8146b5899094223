"""flownet2_ros.ops: correlation, warp (Resample2d) and ChannelNorm against the reference vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flownet2_ros.bench.correlation import benchmark_correlation
from flownet2_ros.ops import (
    ChannelNorm,
    Correlation,
    Warp,
    channel_norm,
    correlation,
    correlation_naive,
    correlation_output_size,
    warp,
)

# (pad_size, kernel_size, max_displacement, stride1, stride2) of each correlation vector set
CORR_CONFIGS = {
    "corrA": (4, 1, 4, 1, 1),
    "corrC": (20, 1, 20, 1, 2),
    "corrK3": (3, 3, 2, 1, 1),
}


@pytest.fixture(scope="module")
def vectors(reference_dir: Path) -> dict[str, torch.Tensor]:
    with np.load(reference_dir / "vectors_ops.npz") as data:
        return {name: torch.from_numpy(np.array(data[name])) for name in data.files}


def _cfg_kwargs(cfg: tuple[int, ...]) -> dict[str, int]:
    keys = ("pad_size", "kernel_size", "max_displacement", "stride1", "stride2")
    return dict(zip(keys, cfg, strict=True))


# ----------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("name", sorted(CORR_CONFIGS))
@pytest.mark.parametrize("fn", [correlation, correlation_naive], ids=["fast", "naive"])
def test_correlation_matches_reference(vectors: dict[str, torch.Tensor], name: str, fn: object) -> None:
    assert callable(fn)
    out = fn(vectors[f"{name}_in1"], vectors[f"{name}_in2"], **_cfg_kwargs(CORR_CONFIGS[name]))
    expected = vectors[f"{name}_out"]
    assert out.shape == expected.shape
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    leaky = f"{name}_out_leaky"
    if leaky in vectors:
        torch.testing.assert_close(F.leaky_relu(out, 0.1), vectors[leaky], atol=1e-5, rtol=0)


def test_correlation_module_matches_reference(vectors: dict[str, torch.Tensor]) -> None:
    module = Correlation()  # FlowNetC defaults
    assert module.output_channels == 441
    assert list(module.state_dict()) == []
    assert list(module.parameters()) == []
    out = module(vectors["corrC_in1"], vectors["corrC_in2"])
    torch.testing.assert_close(out, vectors["corrC_out"], atol=1e-5, rtol=0)
    assert "max_displacement=20" in repr(module)


def test_warp_matches_reference(vectors: dict[str, torch.Tensor]) -> None:
    out = warp(vectors["resample_img"], vectors["resample_flow"])
    # The reference rounds its sampling coordinates in float32 differently: ~4e-6 on values up to ~2.7.
    torch.testing.assert_close(out, vectors["resample_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(Warp()(vectors["resample_img"], vectors["resample_flow"]), out)


def test_channel_norm_matches_reference(vectors: dict[str, torch.Tensor]) -> None:
    out = channel_norm(vectors["channelnorm_in"])
    assert out.shape == vectors["channelnorm_out"].shape
    torch.testing.assert_close(out, vectors["channelnorm_out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ChannelNorm()(vectors["channelnorm_in"]), out)


# ------------------------------------------------------------------------------ fast vs naive


@pytest.mark.parametrize(
    ("shape", "cfg"),
    [
        ((2, 3, 9, 13), (4, 1, 4, 1, 1)),  # batch 2, odd sizes
        ((1, 5, 11, 70), (6, 1, 6, 1, 2)),  # wide: several column tiles, partial last tile
        ((2, 4, 10, 15), (3, 1, 5, 2, 2)),  # stride1 2
        ((1, 3, 12, 17), (5, 1, 6, 3, 3)),  # stride1 3, stride2 3
        ((2, 2, 9, 11), (3, 3, 2, 1, 1)),  # kernel 3, batch 2
        ((1, 3, 13, 10), (4, 3, 3, 2, 2)),  # kernel 3, stride1 2 (dense + pooling)
        ((1, 2, 15, 16), (2, 3, 2, 5, 1)),  # kernel 3, stride1 5 (one grid per window offset)
        ((1, 4, 8, 9), (0, 1, 2, 1, 1)),  # no padding
        ((1, 3, 7, 8), (9, 5, 3, 2, 1)),  # padding larger than the displacement, kernel 5
        ((1, 3, 6, 7), (2, 1, 1, 1, 3)),  # stride2 > max_displacement: one channel
    ],
)
def test_correlation_fast_matches_naive(shape: tuple[int, int, int, int], cfg: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape) + sum(cfg))
    x1 = torch.randn(shape, generator=gen, dtype=torch.float64)
    x2 = torch.randn(shape, generator=gen, dtype=torch.float64)
    kwargs = _cfg_kwargs(cfg)
    fast = correlation(x1, x2, corr_multiply=1.5, **kwargs)
    naive = correlation_naive(x1, x2, corr_multiply=1.5, **kwargs)
    expected = correlation_output_size(shape[2], shape[3], **kwargs)
    assert fast.shape == (shape[0], *expected)
    torch.testing.assert_close(fast, naive, atol=1e-12, rtol=0)


def test_correlation_flownetc_size_matches_naive() -> None:
    gen = torch.Generator().manual_seed(3)
    x1 = torch.randn(1, 32, 48, 64, generator=gen)
    x2 = torch.randn(1, 32, 48, 64, generator=gen)
    fast = correlation(x1, x2)
    assert fast.shape == (1, 441, 48, 64)
    torch.testing.assert_close(fast, correlation_naive(x1, x2), atol=1e-6, rtol=0)


def test_correlation_non_contiguous_inputs() -> None:
    gen = torch.Generator().manual_seed(4)
    x1 = torch.randn(1, 9, 10, 3, generator=gen).permute(0, 3, 1, 2)  # (1, 3, 9, 10), channels-last
    x2 = torch.randn(1, 3, 9, 10, generator=gen)
    torch.testing.assert_close(correlation(x1, x2, 3, 1, 3, 1, 1), correlation_naive(x1, x2, 3, 1, 3, 1, 1))


def test_correlation_output_size() -> None:
    assert correlation_output_size(48, 64) == (441, 48, 64)
    assert correlation_output_size(10, 14, 3, 3, 2, 1, 1) == (25, 10, 14)
    assert correlation_output_size(12, 16, 4, 1, 4, 1, 1) == (81, 12, 16)
    # ceil((9 + 2·3 − 2·5) / 2) = 3
    assert correlation_output_size(9, 9, pad_size=3, max_displacement=5, stride1=2, stride2=2) == (25, 3, 3)


# ------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("cfg", [(2, 1, 2, 1, 1), (4, 3, 3, 2, 2)])
def test_correlation_gradcheck(cfg: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(5)
    x1 = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    kwargs = _cfg_kwargs(cfg)
    assert torch.autograd.gradcheck(lambda a, b: correlation(a, b, **kwargs), (x1, x2))


def test_correlation_gradient_matches_naive() -> None:
    gen = torch.Generator().manual_seed(6)
    x1 = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 25, 7, 9, generator=gen, dtype=torch.float64)
    fast = torch.autograd.grad(correlation(x1, x2, 4, 1, 4, 1, 2), (x1, x2), grad_out)
    naive = torch.autograd.grad(correlation_naive(x1, x2, 4, 1, 4, 1, 2), (x1, x2), grad_out)
    for got, expected in zip(fast, naive, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_warp_gradcheck() -> None:
    gen = torch.Generator().manual_seed(7)
    image = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    # Fractional flows (no sample exactly on a pixel), some pointing outside the image.
    flow = torch.rand(1, 2, 4, 5, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    flow = (flow + torch.tensor([-3.0, 1.0], dtype=torch.float64).view(1, 2, 1, 1)).requires_grad_()
    assert torch.autograd.gradcheck(warp, (image, flow))


def test_channel_norm_gradient_at_zero_is_finite() -> None:
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)
    channel_norm(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ------------------------------------------------------------------------------- warp semantics


def _resample_direct(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample2d as written: bilinear weights, each neighbour's index clamped into the image."""
    b, c, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij"
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    x0, y0 = torch.floor(x), torch.floor(y)
    ax, ay = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    x0i, y0i = x0.long(), y0.long()

    def sample(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).view(b, 1, h * w).expand(b, c, h * w)
        return image.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)

    top = sample(y0i, x0i) * (1 - ax) + sample(y0i, x0i + 1) * ax
    bottom = sample(y0i + 1, x0i) * (1 - ax) + sample(y0i + 1, x0i + 1) * ax
    return top * (1 - ay) + bottom * ay


@pytest.mark.parametrize("size", [(6, 7), (1, 5), (5, 1), (1, 1)])
def test_warp_matches_direct_resample(size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(8)
    image = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    flow = torch.randn(2, 2, *size, generator=gen, dtype=torch.float64) * 4
    out = warp(image, flow)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _resample_direct(image, flow), atol=1e-12, rtol=0)


def test_warp_zero_flow_is_identity() -> None:
    image = torch.randn(1, 3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(
        warp(image, torch.zeros(1, 2, 5, 8, dtype=torch.float64)), image, atol=1e-12, rtol=0
    )
    # float32: the round trip through normalised coordinates costs a few ulps of the sampling position
    torch.testing.assert_close(warp(image.float(), torch.zeros(1, 2, 5, 8)), image.float(), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- half precision


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_close_to_float32(dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(9)
    x1 = torch.randn(1, 16, 9, 12, generator=gen).to(dtype)
    x2 = torch.randn(1, 16, 9, 12, generator=gen).to(dtype)
    out = correlation(x1, x2, 4, 1, 4, 1, 2)
    assert out.dtype == dtype
    torch.testing.assert_close(
        out.float(), correlation(x1.float(), x2.float(), 4, 1, 4, 1, 2), atol=tol, rtol=tol
    )
    assert correlation_naive(x1, x2, 4, 1, 4, 1, 2).dtype == dtype

    image = torch.randn(1, 3, 9, 12, generator=gen).to(dtype)
    flow = (torch.randn(1, 2, 9, 12, generator=gen) * 3).to(dtype)
    warped = warp(image, flow)
    assert warped.dtype == dtype
    torch.testing.assert_close(warped.float(), warp(image.float(), flow.float()), atol=tol, rtol=tol)

    norm = channel_norm(x1)
    assert norm.dtype == dtype and norm.shape == (1, 1, 9, 12)
    torch.testing.assert_close(norm.float(), channel_norm(x1.float()), atol=tol * 10, rtol=tol)


# --------------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pad_size": -1}, "pad_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 2}, "odd"),
        ({"max_displacement": -2}, "max_displacement"),
        ({"stride1": 0}, "stride1"),
        ({"stride2": 0}, "stride2"),
        ({"stride2": 1.5}, "stride2"),
        ({"pad_size": 0, "max_displacement": 8}, "too small"),
    ],
)
def test_correlation_invalid_parameters(kwargs: dict[str, object], message: str) -> None:
    x = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match=message):
        correlation(x, x, **kwargs)  # type: ignore[arg-type]
    if message != "too small":
        with pytest.raises(ValueError, match=message):
            Correlation(**kwargs)  # type: ignore[arg-type]


def test_correlation_invalid_inputs() -> None:
    x = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="4-D"):
        correlation(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), 4, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="same shape"):
        correlation(x, torch.zeros(1, 3, 8, 8), 4, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="same dtype"):
        correlation(x, x.double(), 4, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="floating point"):
        correlation(x.long(), x.long(), 4, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="4-D"):
        correlation_naive(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), 4, 1, 4, 1, 1)


def test_warp_and_channel_norm_invalid_inputs() -> None:
    image = torch.zeros(1, 3, 4, 5)
    with pytest.raises(ValueError, match="image must be 4-D"):
        warp(torch.zeros(3, 4, 5), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match=r"flow must be \(B, 2, H, W\)"):
        warp(image, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="does not match"):
        warp(image, torch.zeros(1, 2, 4, 6))
    with pytest.raises(ValueError, match="does not match"):
        warp(image, torch.zeros(2, 2, 4, 5))
    with pytest.raises(ValueError, match="floating point"):
        warp(image.long(), torch.zeros(1, 2, 4, 5))
    with pytest.raises(ValueError, match="channel"):
        channel_norm(torch.zeros(5))
    with pytest.raises(ValueError, match="floating point"):
        channel_norm(torch.zeros(1, 2, 3, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------- benchmark


def test_benchmark_correlation_small() -> None:
    result = benchmark_correlation(repeats=1, shape=(1, 8, 12, 16), warmup=0)
    assert result["fast_ms"] > 0 and result["naive_ms"] > 0
    assert result["output_shape"] == [1, 441, 12, 16]
    assert result["max_abs_diff"] < 1e-5
    assert result["speedup"] == pytest.approx(result["naive_ms"] / result["fast_ms"])


def test_correlation_custom_op_fake_shapes_and_cpu_reference() -> None:
    from flownet2_ros.ops.correlation_op import custom_op_available

    if not custom_op_available():
        pytest.skip("torch < 2.4 has no torch.library.custom_op; the model uses the torch op")
    from torch._subclasses.fake_tensor import FakeTensorMode

    a = torch.randn(2, 16, 12, 20)
    b = torch.randn(2, 16, 12, 20)
    # the op's CPU implementation is the torch reference
    got = torch.ops.flownet2.correlation(a, b, 4, 1, 4, 1, 2, 1.0)
    torch.testing.assert_close(got, correlation(a, b, 4, 1, 4, 1, 2), rtol=0, atol=0)
    # the fake implementation gives the real op's shape and dtype for every FlowNetC-like setting
    for params in ((4, 1, 4, 1, 2, 1.0), (20, 1, 20, 1, 2, 1.0), (0, 1, 2, 1, 1, 1.0), (3, 3, 2, 2, 1, 0.5)):
        real = torch.ops.flownet2.correlation(a, b, *params)
        with FakeTensorMode() as mode:
            fake = torch.ops.flownet2.correlation(mode.from_tensor(a), mode.from_tensor(b), *params)
        assert fake.shape == real.shape and fake.dtype == real.dtype, params
    # schema, fake and CPU implementation agree (PyTorch's own checker)
    torch.library.opcheck(torch.ops.flownet2.correlation.default, (a, b, 4, 1, 4, 1, 2, 1.0))


# ------------------------------------------------------------------------------- channels-last

CL = torch.channels_last


def _cl(x: torch.Tensor) -> torch.Tensor:
    out = x.contiguous(memory_format=CL)
    assert not out.is_contiguous() and out.stride(1) == 1
    return out


def test_prefers_channels_last() -> None:
    from flownet2_ros.ops.correlation import prefers_channels_last

    x = torch.randn(2, 4, 5, 6)
    assert not prefers_channels_last(x)
    assert prefers_channels_last(_cl(x))
    assert prefers_channels_last(_cl(x)[:, :, ::2, 1:])  # a strided slice of a channels-last tensor
    assert not prefers_channels_last(x[:, :, ::2])
    # both layouts at once (size-1 dimensions): NCHW, the format torch keeps for them
    assert not prefers_channels_last(torch.empty(2, 1, 5, 6, memory_format=CL))
    assert not prefers_channels_last(torch.empty(2, 4, 1, 1, memory_format=CL))
    assert not prefers_channels_last(torch.randn(4, 5, 6)) and not prefers_channels_last(torch.randn(6))


@pytest.mark.parametrize("cfg", [(20, 1, 20, 1, 2), (4, 1, 4, 1, 1), (3, 3, 2, 1, 1), (4, 3, 3, 2, 2)])
def test_correlation_channels_last_inputs_give_identical_results(cfg: tuple[int, ...]) -> None:
    """The torch op (the CPU path) on channels_last inputs: the very same numbers, NCHW output."""
    gen = torch.Generator().manual_seed(sum(cfg))
    x1 = torch.randn(2, 16, 44, 46, generator=gen)
    x2 = torch.randn(2, 16, 44, 46, generator=gen)
    want = correlation(x1, x2, **_cfg_kwargs(cfg))
    got = correlation(_cl(x1), _cl(x2), **_cfg_kwargs(cfg))
    assert torch.equal(got, want) and got.is_contiguous()


def test_correlation_reads_channels_last_windows_in_place() -> None:
    """The torch op gathers NHWC windows: a channels_last input's whole-image window is the input itself,
    an NCHW input's is a transposed copy."""
    from flownet2_ros.ops.correlation import _window_nhwc

    x = torch.randn(1, 8, 6, 7)
    y = _cl(x)
    assert _window_nhwc(y, 0, 1, 6, 0, 1, 7).data_ptr() == y.data_ptr()
    assert _window_nhwc(x, 0, 1, 6, 0, 1, 7).data_ptr() != x.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_warp_keeps_channels_last(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(12)
    image = torch.randn(2, 3, 9, 12, generator=gen).to(dtype)
    flow = (torch.randn(2, 2, 9, 12, generator=gen) * 3).to(dtype)
    want = warp(image, flow)
    assert want.is_contiguous()
    for flw in (flow, _cl(flow)):
        got = warp(_cl(image), flw)
        assert got.dtype == dtype and got.stride(1) == 1 and got.is_contiguous(memory_format=CL)
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channel_norm_keeps_channels_last(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(2, 5, 9, 12, generator=gen).to(dtype)
    want = channel_norm(x)
    got = channel_norm(_cl(x))
    # (B, 1, H, W) with channels_last strides, a view of the NHWC reduction: not an NCHW tensor to cat
    assert got.shape == (2, 1, 9, 12) and got.stride() == (108, 1, 12, 1) and got.dtype == dtype
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    # gradient through the channels-last path, 0 at an all-zero pixel
    z = _cl(torch.randn(1, 3, 4, 4, dtype=torch.float64)).requires_grad_()
    with torch.no_grad():
        z[0, :, 1, 1] = 0
    channel_norm(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and (z.grad[0, :, 1, 1] == 0).all()
    assert torch.autograd.gradcheck(
        channel_norm, (_cl(torch.randn(1, 3, 3, 4, dtype=torch.float64)).requires_grad_(),)
    )


def test_channels_last_stays_channels_last_through_a_flownet2_concatenation() -> None:
    """What the FlowNet2 stacks concatenate (images, warped image, flow, brightness error norm) stays
    channels_last, so the next convolution needs no transposition."""
    gen = torch.Generator().manual_seed(14)
    x1, x2 = (_cl(torch.randn(1, 3, 16, 20, generator=gen)) for _ in range(2))
    flow = _cl(torch.randn(1, 2, 16, 20, generator=gen))
    warped = warp(x2, flow)
    cat = torch.cat((x1, x2, warped, flow / 20.0, channel_norm(x1 - warped)), dim=1)
    assert cat.shape[1] == 12 and cat.is_contiguous(memory_format=CL) and not cat.is_contiguous()


def test_correlation_custom_op_channels_last_cpu_and_fake_strides() -> None:
    from flownet2_ros.ops.correlation_op import custom_op_available

    if not custom_op_available():
        pytest.skip("torch < 2.4 has no torch.library.custom_op; the model uses the torch op")
    from torch._subclasses.fake_tensor import FakeTensorMode

    gen = torch.Generator().manual_seed(15)
    a = torch.randn(2, 16, 12, 20, generator=gen)
    b = torch.randn(2, 16, 12, 20, generator=gen)
    for params in ((4, 1, 4, 1, 2, 1.0), (3, 3, 2, 2, 1, 0.5), (2, 1, 1, 1, 3, 1.0)):  # last: one channel
        want = correlation(a, b, *params)
        for x1, x2 in ((a, b), (_cl(a), _cl(b)), (_cl(a), b), (a, _cl(b))):
            real = torch.ops.flownet2.correlation(x1, x2, *params)
            assert torch.equal(real, want), params
            with FakeTensorMode() as mode:
                fake = torch.ops.flownet2.correlation(mode.from_tensor(x1), mode.from_tensor(x2), *params)
            assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype), params
        cl_out = torch.ops.flownet2.correlation(_cl(a), _cl(b), *params)
        assert cl_out.stride(1) == 1 and cl_out.is_contiguous(memory_format=CL), params
    torch.library.opcheck(torch.ops.flownet2.correlation.default, (_cl(a), _cl(b), 4, 1, 4, 1, 2, 1.0))
