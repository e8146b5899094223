"""The backend interface: torch estimator semantics, buffers and caching, and name-based selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flownet2_ros.backends import BackendConfig, BackendError, TorchFlowEstimator, create_estimator
from flownet2_ros.models import build


class _Recorder(torch.nn.Module):
    """A stack stand-in: flow = (mean of image2 − mean of image1, 1); records what it receives."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, image1, image2):
        self.calls.append((image1.clone(), image2.clone()))
        flow = torch.ones(image1.shape[0], 2, *image1.shape[-2:])
        flow[:, 0] = (image2.mean() - image1.mean()).item()
        return flow


def _frame(value, height=48, width=80):
    return np.full((height, width, 3), value, np.uint8)


def test_torch_estimator_resizes_scales_and_writes_into_out():
    net = _Recorder()
    estimator = TorchFlowEstimator(net, device="cpu")
    flow = estimator.estimate(_frame(10), _frame(30))
    assert flow.shape == (48, 80, 2) and flow.dtype == np.float32
    first, second = net.calls[-1]
    assert first.shape == (1, 3, 64, 64)  # nearest multiples of 64 of 48x80
    assert torch.allclose(first, torch.full_like(first, 10.0)) and torch.allclose(
        second, torch.full_like(second, 30.0)
    )
    np.testing.assert_allclose(flow[..., 0], 20.0 * 80 / 64, rtol=1e-6)  # u scaled by W/W'
    np.testing.assert_allclose(flow[..., 1], 1.0 * 48 / 64, rtol=1e-6)  # v scaled by H/H'
    out = np.empty((64, 64, 2), np.float32)
    result = estimator.estimate(_frame(10), _frame(30), output_size=(64, 64), out=out)
    assert result is out and np.allclose(out[..., 1], 1.0)  # network grid: no rescaling
    with pytest.raises(ValueError, match="out must be"):
        estimator.estimate(_frame(1), _frame(2), out=np.empty((10, 10, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        estimator.estimate(_frame(1), _frame(2, width=64))
    assert estimator.info.network_size == (64, 64) and estimator.info.precision == "fp32"


def test_torch_estimator_reuses_the_previous_frame_by_key():
    net = _Recorder()
    estimator = TorchFlowEstimator(net, device="cpu")
    estimator.estimate(_frame(1), _frame(2), key1=1, key2=2)
    # Frame 2 comes back as the first image of the next pair under the same key: its device copy is reused,
    # so even different pixel data under that key is not read again.
    estimator.estimate(_frame(99), _frame(3), key1=2, key2=3)
    assert torch.allclose(net.calls[-1][0], torch.full_like(net.calls[-1][0], 2.0))
    estimator.estimate(_frame(99), _frame(4), key1=7, key2=8)  # unknown key: uploaded
    assert torch.allclose(net.calls[-1][0], torch.full_like(net.calls[-1][0], 99.0))
    # A new input size changes the automatic network size and drops the cache.
    estimator.estimate(_frame(5, 130, 190), _frame(6, 130, 190), key1=8, key2=9)
    assert net.calls[-1][0].shape[-2:] == (128, 192) and estimator.info.network_size == (128, 192)


def test_fixed_network_size_and_option_errors():
    net = _Recorder()
    estimator = TorchFlowEstimator(net, device="cpu", network_size=(128, 256))
    estimator.estimate(_frame(1), _frame(2))
    assert net.calls[-1][0].shape[-2:] == (128, 256)
    with pytest.raises(BackendError, match="multiples of 64"):
        TorchFlowEstimator(net, device="cpu", network_size=(100, 128))
    with pytest.raises(BackendError, match="fp16 needs a CUDA"):
        TorchFlowEstimator(net, device="cpu", fp16=True)
    with pytest.raises(BackendError, match="unknown device"):
        TorchFlowEstimator(net, device="tpu:banana")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA is not available"):
            TorchFlowEstimator(net, device="cuda")
    estimator.close()
    with pytest.raises(BackendError, match="closed"):
        estimator.estimate(_frame(1), _frame(2))


def test_real_stack_matches_flow_inference(tmp_path):
    from flownet2_ros.models import FlowInference

    torch.manual_seed(0)
    model = build("FlowNet2S", thin=True)
    path = tmp_path / "s.pth.tar"
    torch.save({"state_dict": model.state_dict()}, path)
    estimator, reason = create_estimator("auto", BackendConfig(checkpoint=str(path), device="cpu"))
    assert reason == "torch (auto: no TensorRT engine configured)"
    assert estimator.info.name == "torch" and "FlowNet2S from s.pth.tar" == estimator.info.model
    rng = np.random.default_rng(0)
    rgb1 = rng.integers(0, 255, (70, 100, 3), dtype=np.uint8)
    rgb2 = np.roll(rgb1, 2, axis=1)
    expected = FlowInference(model).estimate(rgb1, rgb2)
    np.testing.assert_allclose(estimator.estimate(rgb1, rgb2), expected, atol=1e-5)


def test_factory_errors(tmp_path):
    with pytest.raises(BackendError, match="unknown backend"):
        create_estimator("onnx", BackendConfig(checkpoint="x"))
    with pytest.raises(BackendError, match="checkpoint not found"):
        create_estimator("torch", BackendConfig(checkpoint=str(tmp_path / "none.pth")))
    with pytest.raises(BackendError, match="precision"):
        create_estimator("torch", BackendConfig(checkpoint="x", precision="fp8"))
    with pytest.raises(BackendError, match="tensorrt backend requested but unusable"):
        create_estimator("tensorrt", BackendConfig(checkpoint="x"))


def test_empty_checkpoint_means_the_embedded_default_model(tmp_path, monkeypatch):
    from flownet2_ros.models import embedded

    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(BackendError, match="embedded default model is missing"):
        create_estimator("torch", BackendConfig())
    torch.save(
        {"state_dict": build("FlowNet2S", thin=True).state_dict()},
        tmp_path / embedded.DEFAULT_CHECKPOINT_NAME,
    )
    estimator, _ = create_estimator("torch", BackendConfig(device="cpu"))
    assert estimator.info.model == "FlowNet2S from the embedded default model"


def test_packaged_checkpoint_is_half_size_and_loads(tmp_path):
    from flownet2_ros.models import load_checkpoint
    from flownet2_ros.models.embedded import package_checkpoint

    torch.manual_seed(0)
    model = build("FlowNet2S", thin=True)
    source = tmp_path / "latest.pth.tar"
    torch.save(
        {"state_dict": model.state_dict(), "iteration": 7, "resume": {"optimizer": {"step": 7}}}, source
    )
    shipped = package_checkpoint(source, tmp_path / "ship" / "default.pth.tar", steps=7)
    raw = torch.load(shipped, weights_only=True)
    assert "resume" not in raw and raw["steps"] == 7 and raw["iteration"] == 7
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values())
    assert shipped.stat().st_size < 0.6 * source.stat().st_size
    loaded = load_checkpoint(shipped)
    assert next(loaded.parameters()).dtype == torch.float32
    image1, image2 = torch.rand(1, 3, 64, 128) * 255, torch.rand(1, 3, 64, 128) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(image1, image2), model(image1, image2), atol=2e-2, rtol=1e-2)


def test_batches_equal_pairs_one_by_one(one_torch_thread):
    from flownet2_ros.backends import FlowRequest

    torch.manual_seed(0)
    estimator = TorchFlowEstimator(build("FlowNet2S", thin=True), device="cpu")
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 255, (60, 100, 3), dtype=np.uint8) for _ in range(3)]
    large = [rng.integers(0, 255, (130, 190, 3), dtype=np.uint8) for _ in range(3)]
    pairs = [(small[0], small[1]), (large[0], large[1]), (small[1], small[2]), (large[1], large[2])]
    singles = [estimator.estimate(a, b).copy() for a, b in pairs]
    requests = [FlowRequest(a, b, key1=10 + i, key2=20 + i) for i, (a, b) in enumerate(pairs)]
    batch = estimator.estimate_batch(requests)
    assert [f.shape for f in batch] == [(60, 100, 2), (130, 190, 2)] * 2
    for one, many in zip(singles, batch, strict=True):
        np.testing.assert_allclose(many, one, atol=1e-5)
    # the second frames were kept by key: the next pairs of these "cameras" reuse them
    again = estimator.estimate_batch([FlowRequest(np.zeros_like(small[2]), small[0], key1=22, key2=30)])
    np.testing.assert_allclose(again[0], estimator.estimate(small[2], small[0]), atol=1e-5)


def test_pairs_of_one_size_run_as_one_forward():
    from flownet2_ros.backends import FlowRequest

    net = _Recorder()
    estimator = TorchFlowEstimator(net, device="cpu")
    out = [np.empty((48, 80, 2), np.float32) for _ in range(3)]
    flows = estimator.estimate_batch(
        [FlowRequest(_frame(i), _frame(i + 1), out=o) for i, o in enumerate(out)]
    )
    assert len(net.calls) == 1 and net.calls[0][0].shape == (3, 3, 64, 64)
    assert all(f is o for f, o in zip(flows, out, strict=True))


def test_network_size_cap_downscales_large_frames():
    from flownet2_ros.models.inference import DEFAULT_MAX_NETWORK_PIXELS, network_size_for

    assert network_size_for(480, 640, max_pixels=DEFAULT_MAX_NETWORK_PIXELS) == (512, 640)  # under the cap
    assert network_size_for(1080, 1920, max_pixels=DEFAULT_MAX_NETWORK_PIXELS) == (576, 1024)
    h, w = network_size_for(4096, 4096, max_pixels=DEFAULT_MAX_NETWORK_PIXELS)
    assert h == w and h * w <= DEFAULT_MAX_NETWORK_PIXELS and h % 64 == 0
    assert network_size_for(64, 100_000, max_pixels=DEFAULT_MAX_NETWORK_PIXELS) == (64, 9216)
    net = _Recorder()
    estimator = TorchFlowEstimator(net, device="cpu", max_network_pixels=64 * 128)
    flow = estimator.estimate(_frame(10, 480, 640), _frame(30, 480, 640))
    assert net.calls[-1][0].shape[-2:] == (64, 128) and estimator.info.network_size == (64, 128)
    assert flow.shape == (480, 640, 2)
    np.testing.assert_allclose(flow[..., 0], 20.0 * 640 / 128, rtol=1e-6)  # vectors scaled back
    np.testing.assert_allclose(flow[..., 1], 480 / 64, rtol=1e-6)


def test_the_model_carries_its_own_network_size_cap(tmp_path):
    """A packaged checkpoint's ``max_network_pixels`` is the default cap (0 / MODEL_CAP); an explicit cap
    wins; checkpoints without one keep 1024x576."""
    from flownet2_ros.models import load_checkpoint, save_checkpoint
    from flownet2_ros.models.embedded import package_checkpoint
    from flownet2_ros.models.inference import DEFAULT_MAX_NETWORK_PIXELS, FlowInference

    plain = tmp_path / "plain.pth.tar"
    save_checkpoint(plain, build("FlowNet2S", width=0.125))
    capped = package_checkpoint(plain, tmp_path / "capped.pth.tar", max_network_pixels=320 * 256)
    assert (
        FlowInference(load_checkpoint(plain), device="cpu").max_network_pixels == DEFAULT_MAX_NETWORK_PIXELS
    )
    model = load_checkpoint(capped)
    core = FlowInference(model, device="cpu")
    assert core.max_network_pixels == 320 * 256 and core.network_size_of(480, 640) == (256, 320)
    assert FlowInference(model, device="cpu", max_network_pixels=1024 * 576).network_size_of(480, 640) == (
        512,
        640,
    )
    config = BackendConfig(checkpoint=str(capped), device="cpu", max_network_pixels=0)
    estimator, _ = create_estimator("torch", config)
    estimator.estimate(_frame(10, 480, 640), _frame(30, 480, 640))
    assert estimator.info.network_size == (256, 320)


def test_threads_are_set_for_inference():
    before = torch.get_num_threads()
    try:
        TorchFlowEstimator(_Recorder(), device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        with pytest.raises(BackendError, match="threads"):
            TorchFlowEstimator(_Recorder(), device="cpu", threads=-2)
    finally:
        torch.set_num_threads(before)


def test_a_backend_implements_estimate_or_estimate_batch():
    from flownet2_ros.backends import BackendInfo, FlowEstimator, FlowRequest

    with pytest.raises(TypeError, match="must implement estimate or estimate_batch"):

        class Neither(FlowEstimator):  # defining it is the test
            info = BackendInfo("x", "cpu", "fp32", "x", None)

    class BatchOnly(FlowEstimator):
        info = BackendInfo("x", "cpu", "fp32", "x", None)

        def estimate_batch(self, requests):
            return [np.full((*r.rgb1.shape[:2], 2), 3.0, np.float32) for r in requests]

    frame = np.zeros((4, 6, 3), np.uint8)
    assert BatchOnly().estimate(frame, frame).shape == (4, 6, 2)
    assert len(BatchOnly().estimate_batch([FlowRequest(frame, frame)] * 2)) == 2
