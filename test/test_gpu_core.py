"""The inference core on a CUDA GPU (marked ``gpu``: skipped without one; run by scripts/gpu_check.sh).

fp32 through the core is true fp32 and keeps parity with the reference vectors; fp16 stays close to them;
CUDA graphs, batches and the correlation custom op give the eager path's numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flownet2_ros.models import STACK_NAMES, FlowInference, build

from reference_weights import reference_keys, reference_state_dict

pytestmark = pytest.mark.gpu


def _stack(name: str, reference_dir):
    model = build(name)
    model.load_state_dict(reference_state_dict(reference_keys(reference_dir)[name]), strict=True)
    return model


@pytest.mark.parametrize("name", STACK_NAMES)
def test_fp32_on_cuda_matches_the_reference(name, reference_dir):
    vectors = np.load(reference_dir / f"vectors_{name}.npz")
    core = FlowInference(_stack(name, reference_dir), device="cuda", precision="fp32")
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    pair = torch.from_numpy(vectors["input"])
    flow = core(pair[:, :, 0], pair[:, :, 1]).cpu().numpy()
    err = np.abs(flow - vectors["flow"]).max()
    print(f"{name} fp32 cuda max error {err:.2e} px")
    assert err <= 1e-4


@pytest.mark.parametrize("name", ["FlowNet2", "FlowNet2C", "FlowNet2S"])
def test_fp16_on_cuda_stays_close(name, reference_dir):
    vectors = np.load(reference_dir / f"vectors_{name}.npz")
    core = FlowInference(_stack(name, reference_dir), device="cuda", precision="auto")
    assert core.dtype == torch.float16
    pair = torch.from_numpy(vectors["input"])
    flow = core(pair[:, :, 0], pair[:, :, 1]).cpu().numpy()
    err = np.abs(flow - vectors["flow"])
    print(f"{name} fp16 cuda mean error {err.mean():.2e} px, max {err.max():.2e} px")
    assert err.mean() <= 2e-3


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graphs_batches_and_custom_op_equal_eager(precision):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(5)]
    eager = FlowInference(build("FlowNet2", thin=True), device="cuda", precision=precision)
    one = [eager.estimate(frames[i], frames[i + 1]) for i in range(4)]
    model = build("FlowNet2", thin=True)
    model.load_state_dict(eager.model.state_dict())
    graphed = FlowInference(model, device="cuda", precision=precision, cuda_graph=True)

    class Pair:
        def __init__(self, i: int) -> None:
            self.rgb1, self.rgb2, self.key1, self.key2 = frames[i], frames[i + 1], i, i + 1
            self.output_size, self.out = None, np.empty((240, 320, 2), np.float32)

    for _ in range(2):  # capture, then replay
        many = graphed.estimate_batch([Pair(i) for i in range(4)])
    assert not graphed.notes, graphed.notes
    tol = 1e-4 if precision == "fp32" else 2e-2
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(b, a, atol=tol)
    # the model's correlation ran as the custom op, which equals the torch op
    from flownet2_ros.ops import correlation
    from flownet2_ros.ops.correlation_op import custom_op_available

    if custom_op_available():
        dtype = torch.float32 if precision == "fp32" else torch.float16
        a = torch.randn(2, 64, 48, 64, device="cuda", dtype=dtype)
        b = torch.randn(2, 64, 48, 64, device="cuda", dtype=dtype)
        got = torch.ops.flownet2.correlation(a, b, 20, 1, 20, 1, 2, 1.0)
        want = correlation(a.float(), b.float(), 20, 1, 20, 1, 2)
        torch.testing.assert_close(got.float(), want, atol=1e-4 if precision == "fp32" else 5e-2, rtol=1e-3)


# ------------------------------------------------------------------ channels-last correlation kernel

CL = torch.channels_last
# FlowNetC (pair kernel), kernel_size 3 (tiled), kernel_size 3 with stride1 2 (tiled)
CL_CONFIGS = [(20, 1, 20, 1, 2), (3, 3, 4, 1, 1), (4, 3, 6, 2, 2)]


def _kernel_or_skip() -> None:
    from flownet2_ros.ops.cuda_correlation import CudaCorrelationError, prepare_kernel

    try:
        prepare_kernel(torch.cuda.current_device())
    except CudaCorrelationError as exc:
        pytest.skip(f"hardware/toolchain: {exc}")


def _pair(shape, dtype=torch.float32, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(2))


@pytest.mark.parametrize("variant", ["auto", "tiled", "naive"])
@pytest.mark.parametrize("config", CL_CONFIGS, ids=["flownetc", "kernel3", "kernel3_stride2"])
def test_channels_last_correlation_equals_nchw_and_stays_channels_last(config, variant):
    from flownet2_ros.ops.cuda_correlation import correlation_cuda

    _kernel_or_skip()
    x1, x2 = _pair((2, 37, 21, 75), seed=sum(config))
    want = correlation_cuda(x1, x2, *config, variant=variant)
    assert want.is_contiguous()
    got = correlation_cuda(
        x1.contiguous(memory_format=CL), x2.contiguous(memory_format=CL), *config, variant=variant
    )
    assert got.is_contiguous(memory_format=CL) and not got.is_contiguous() and got.stride(1) == 1
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # mixed layouts: input2 follows input1's format, the output too
    mixed = correlation_cuda(x1.contiguous(memory_format=CL), x2, *config, variant=variant)
    assert mixed.is_contiguous(memory_format=CL)
    torch.testing.assert_close(mixed, want, rtol=0, atol=1e-5)


def test_channels_last_correlation_fp16_and_strided_inputs():
    from flownet2_ros.ops import correlation
    from flownet2_ros.ops.cuda_correlation import correlation_cuda

    _kernel_or_skip()
    x1, x2 = _pair((1, 64, 48, 64), torch.float16, seed=4)
    a, b = x1.contiguous(memory_format=CL), x2.contiguous(memory_format=CL)
    got = correlation_cuda(a, b)
    assert got.dtype == torch.float16 and got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got.float(), correlation(x1.float(), x2.float()), rtol=2e-3, atol=2e-3)
    # a strided slice of channels_last tensors: made contiguous channels_last, then the same numbers
    s1, s2 = a[:, :, 1:-1, 2:], b[:, :, 1:-1, 2:]
    sliced = correlation_cuda(s1, s2)
    assert sliced.is_contiguous(memory_format=CL)
    torch.testing.assert_close(sliced.float(), correlation(s1.float(), s2.float()), rtol=2e-3, atol=2e-3)


def test_channels_last_correlation_reads_the_inputs_in_place(monkeypatch):
    """No copy: the kernel gets the inputs' own memory and the output's channels_last strides, and the
    call allocates nothing but the output."""
    from flownet2_ros.ops import cuda_correlation as cc

    _kernel_or_skip()
    x1, x2 = _pair((1, 256, 48, 64), seed=5)
    a, b = x1.contiguous(memory_format=CL), x2.contiguous(memory_format=CL)
    real_launch = cc.launch_correlation
    seen = []

    def spy(p1, p2, po, *args, **kwargs):
        seen.append((p1, p2, po, kwargs["input_strides"], kwargs["output_strides"]))
        return real_launch(p1, p2, po, *args, **kwargs)

    monkeypatch.setattr(cc, "launch_correlation", spy)
    cc.correlation_cuda(a, b)  # warm: the module is loaded
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    out = cc.correlation_cuda(a, b)
    allocations = torch.cuda.memory_stats()["allocation.all.allocated"] - before
    torch.cuda.synchronize()
    assert allocations == 1  # the output, nothing else
    p1, p2, po, in_strides, out_strides = seen[-1]
    assert (p1, p2, po) == (a.data_ptr(), b.data_ptr(), out.data_ptr())
    assert tuple(in_strides) == a.stride() == (48 * 64 * 256, 1, 64 * 256, 256)
    assert tuple(out_strides) == out.stride() == (48 * 64 * 441, 1, 64 * 441, 441)
    # NCHW inputs: read in place as well, NCHW output
    nchw = cc.correlation_cuda(x1, x2)
    assert seen[-1][:3] == (x1.data_ptr(), x2.data_ptr(), nchw.data_ptr()) and nchw.is_contiguous()
    torch.testing.assert_close(out, nchw, rtol=0, atol=1e-5)


def test_channels_last_custom_op_fake_strides_and_graph_capture():
    """The custom op on channels_last CUDA inputs: channels_last output, the fake has its strides, and a
    CUDA graph replays it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from flownet2_ros.ops import correlation
    from flownet2_ros.ops.correlation_op import custom_op_available

    if not custom_op_available():
        pytest.skip("torch < 2.4 has no torch.library.custom_op")
    _kernel_or_skip()
    x1, x2 = _pair((2, 64, 24, 40), seed=6)
    a, b = x1.contiguous(memory_format=CL), x2.contiguous(memory_format=CL)
    real = torch.ops.flownet2.correlation(a, b, 20, 1, 20, 1, 2, 1.0)
    assert real.is_contiguous(memory_format=CL)
    with FakeTensorMode() as mode:
        fake = torch.ops.flownet2.correlation(mode.from_tensor(a), mode.from_tensor(b), 20, 1, 20, 1, 2, 1.0)
    assert (fake.shape, fake.stride()) == (real.shape, real.stride())
    torch.testing.assert_close(real, correlation(x1, x2), rtol=0, atol=1e-5)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.ops.flownet2.correlation(a, b, 20, 1, 20, 1, 2, 1.0)  # warm on the side stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = torch.ops.flownet2.correlation(a, b, 20, 1, 20, 1, 2, 1.0)
    a.copy_(x2.contiguous(memory_format=CL))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, correlation(x2, x2), rtol=0, atol=1e-5)


def test_warp_and_channel_norm_keep_channels_last_on_cuda():
    from flownet2_ros.ops import channel_norm, warp

    gen = torch.Generator(device="cuda").manual_seed(7)
    image = torch.randn(2, 3, 32, 40, device="cuda", generator=gen)
    flow = torch.randn(2, 2, 32, 40, device="cuda", generator=gen) * 3
    warped = warp(image.contiguous(memory_format=CL), flow.contiguous(memory_format=CL))
    assert warped.is_contiguous(memory_format=CL) and warped.stride(1) == 1
    torch.testing.assert_close(warped, warp(image, flow), rtol=0, atol=1e-6)
    norm = channel_norm(image.contiguous(memory_format=CL))
    assert norm.stride() == (32 * 40, 1, 40, 1)
    torch.testing.assert_close(norm, channel_norm(image), rtol=1e-6, atol=1e-6)
