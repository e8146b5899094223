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
