"""Model family behaviour beyond parity: build options, thin variants, training outputs, the loader."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from flownet2_ros.models import (
    STACK_NAMES,
    THIN_WIDTH,
    CheckpointError,
    FlowInference,
    build,
    infer_stack_name,
    load_checkpoint,
    network_size_for,
    save_checkpoint,
)

from reference_weights import reference_keys


def _pair(height=64, width=128, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, 3, height, width, generator=g) * 255,
        torch.rand(batch, 3, height, width, generator=g) * 255,
    )


def test_build_rejects_unknown_names_and_bad_options():
    with pytest.raises(ValueError, match=r"unknown FlowNet 2\.0 stack 'FlowNet3'"):
        build("FlowNet3")
    with pytest.raises(ValueError, match="width"):
        build("FlowNet2S", width=0)
    with pytest.raises(ValueError, match="not both"):
        build("FlowNet2S", thin=True, width=0.5)
    with pytest.raises(ValueError, match="div_flow"):
        build("FlowNet2S", div_flow=0)


def test_thin_variants_scale_every_width():
    with torch.device("meta"):
        full = build("FlowNet2CSS")
        thin = build("FlowNet2CSS", thin=True)
    assert thin.width == THIN_WIDTH
    assert thin.flownetc.conv1[0].out_channels == 24  # 64 * 3/8
    assert thin.flownetc.conv6_1[0].out_channels == 384  # 1024 * 3/8
    assert thin.flownetc.conv3_1[0].in_channels == 12 + 441  # redir scaled, correlation channels not
    ratio = sum(p.numel() for p in thin.parameters()) / sum(p.numel() for p in full.parameters())
    assert 0.1 < ratio < THIN_WIDTH**2 * 1.1  # weights scale ~ width², first/last layers less


@pytest.mark.parametrize("name", STACK_NAMES)
def test_thin_stacks_run_eval_and_training(name):
    model = build(name, thin=True)
    image1, image2 = _pair()
    with torch.no_grad():
        flow = model(image1, image2)
    assert flow.shape == (1, 2, 64, 128)
    assert torch.isfinite(flow).all()
    model.train()
    outputs = model(image1, image2)
    assert isinstance(outputs, tuple)
    if name == "FlowNet2":
        assert [o.shape[-2:] for o in outputs] == [(64, 128), (32, 64), (16, 32)]
        assert model.train_flow_scale == 1.0
    else:
        assert [o.shape[-2:] for o in outputs] == [(64 // 2**k, 128 // 2**k) for k in range(2, 7)]
        assert model.train_flow_scale == 20.0
    sum(o.abs().mean() for o in outputs).backward()  # differentiable end to end
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads[-4:])


def test_model_rejects_bad_input_shapes():
    model = build("FlowNet2S", thin=True)
    with pytest.raises(ValueError, match="multiples of 64"):
        model(*_pair(height=60))
    with pytest.raises(ValueError, match="one shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 128))


def test_infer_stack_name_from_reference_keys(reference_dir):
    for name, entries in reference_keys(reference_dir).items():
        assert infer_stack_name([k for k, _ in entries]) == name
    with pytest.raises(CheckpointError, match="no known stack"):
        infer_stack_name(["flownets_d.conv0.0.weight", "flownetc.conv1.0.weight"])
    with pytest.raises(CheckpointError, match="match no FlowNet"):
        infer_stack_name(["backbone.weight"])


@pytest.fixture(scope="module")
def thin_s():
    torch.manual_seed(0)
    return build("FlowNet2S", thin=True)


def test_official_layout_with_module_prefix_round_trips(tmp_path, thin_s):
    path = tmp_path / "FlowNet2-S_checkpoint.pth.tar"
    state = {f"module.{k}": v for k, v in thin_s.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3, "best_EPE": 2.5}, path)
    loaded = load_checkpoint(path)
    assert type(loaded).__name__ == "FlowNet2S" and loaded.width == THIN_WIDTH and not loaded.training
    assert loaded.checkpoint_metadata == {"epoch": 3, "best_EPE": 2.5}
    image1, image2 = _pair()
    with torch.no_grad():
        torch.testing.assert_close(loaded(image1, image2), thin_s(image1, image2), rtol=0, atol=0)


def test_bare_state_dict_and_save_checkpoint(tmp_path, thin_s):
    bare = tmp_path / "bare.pth"
    torch.save(thin_s.state_dict(), bare)
    assert type(load_checkpoint(bare, name="FlowNet2S")).__name__ == "FlowNet2S"
    official = tmp_path / "saved.pth.tar"
    save_checkpoint(official, thin_s, epoch=1)
    raw = torch.load(official, weights_only=True)
    assert set(raw) == {"state_dict", "epoch"}
    load_checkpoint(official)


def test_checkpoint_of_another_stack_is_refused(tmp_path, thin_s):
    path = tmp_path / "s.pth"
    torch.save(thin_s.state_dict(), path)
    with pytest.raises(CheckpointError, match="holds FlowNet2S weights, not FlowNet2C"):
        load_checkpoint(path, name="FlowNet2C")
    with pytest.raises(CheckpointError, match="unknown stack"):
        load_checkpoint(path, name="flownet2s")


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, thin_s):
    state = dict(thin_s.state_dict())
    del state["predict_flow2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["conv2.0.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "1 missing (predict_flow2.bias)" in message
    assert "1 unexpected (extra.weight)" in message
    assert "conv2.0.bias (7,) != (48,)" in message


def test_corrupt_missing_and_unsafe_files_are_refused(tmp_path, thin_s):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pth"
    buffer = io.BytesIO()
    torch.save(thin_s.state_dict(), buffer)
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)
    # A pickle that would run code on load: weights_only refuses it, and so do we.
    unsafe = tmp_path / "unsafe.pth"
    unsafe.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(unsafe)
    nan_state = {k: v.clone() for k, v in thin_s.state_dict().items()}
    nan_state["conv1.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan_state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "nan.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


class _ConstantFlow(torch.nn.Module):
    """Stands in for a stack: flow = (u, v) everywhere, records the size it was given."""

    def __init__(self, u, v):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.u, self.v, self.seen = u, v, []

    def forward(self, image1, image2):
        self.seen.append(tuple(image1.shape[-2:]))
        flow = torch.empty(image1.shape[0], 2, *image1.shape[-2:])
        flow[:, 0], flow[:, 1] = self.u, self.v
        return flow


def test_network_size_rules():
    assert network_size_for(480, 640) == (512, 640)
    assert network_size_for(100, 150) == (128, 128)
    assert network_size_for(20, 20) == (64, 64)
    assert network_size_for(480, 640, "pad") == (512, 640)
    assert network_size_for(100, 150, "pad") == (128, 192)
    with pytest.raises(ValueError):
        network_size_for(0, 10)


def test_resize_mode_scales_vectors_back_to_the_input():
    net = _ConstantFlow(4.0, 2.0)
    infer = FlowInference(net, mode="resize")
    flow = infer(*_pair(height=100, width=150))
    assert net.seen == [(128, 128)]
    assert flow.shape == (1, 2, 100, 150)
    torch.testing.assert_close(flow[:, 0], torch.full((1, 100, 150), 4.0 * 150 / 128))
    torch.testing.assert_close(flow[:, 1], torch.full((1, 100, 150), 2.0 * 100 / 128))


def test_pad_mode_crops_without_scaling_and_fixed_network_size():
    net = _ConstantFlow(3.0, -1.0)
    flow = FlowInference(net, mode="pad").estimate(
        torch.randint(0, 255, (70, 90, 3), dtype=torch.uint8).numpy(),
        torch.randint(0, 255, (70, 90, 3), dtype=torch.uint8).numpy(),
    )
    assert net.seen == [(128, 128)] and flow.shape == (70, 90, 2)
    assert (flow[..., 0] == 3.0).all() and (flow[..., 1] == -1.0).all()
    fixed = FlowInference(_ConstantFlow(1.0, 1.0), network_size=(256, 320))
    fixed(*_pair(height=480 // 4, width=640 // 4))
    assert fixed.model.seen == [(256, 320)]
    with pytest.raises(ValueError, match="multiples of 64"):
        FlowInference(net, network_size=(100, 128))


def test_the_core_resolves_device_and_precision_once():
    from flownet2_ros.models.inference import InferenceError, resolve_device, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == torch.float32
    assert resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(InferenceError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(InferenceError, match="precision must be one of"):
        resolve_precision("int8", cpu)
    with pytest.raises(InferenceError, match="unknown device"):
        resolve_device("gpu7")
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(InferenceError, match="no CUDA device"):
            resolve_device("cuda:0")
    else:
        assert resolve_precision("auto", torch.device("cuda")) == torch.float16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a CPU-only machine does")
def test_cuda_only_options_are_ignored_with_a_note_on_a_cpu():
    net = _ConstantFlow(1.0, 2.0)
    core = FlowInference(net, device="cpu", cuda_graph=True, compile=True)
    assert not core.cuda_graph and core.notes and len(core.notes) == 2
    assert any("cuda_graph is ignored" in n for n in core.notes) and any(
        "compile is ignored" in n for n in core.notes
    )
    assert any("CUDA graphs need a CUDA device" in n for n in core.notes)
    flow = core.estimate(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
    assert flow.shape == (64, 64, 2) and np.allclose(flow[..., 0], 1.0)  # still runs, eagerly


def test_channels_last_core_equals_the_plain_path(one_torch_thread):
    torch.manual_seed(3)
    model = build("FlowNet2C", thin=True)
    rng = np.random.default_rng(1)
    rgb1 = rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)
    rgb2 = rng.integers(0, 255, (96, 150, 3), dtype=np.uint8)
    fast = FlowInference(model, device="cpu", channels_last=True).estimate(rgb1, rgb2)
    plain = FlowInference(model, device="cpu", channels_last=False).estimate(rgb1, rgb2)
    np.testing.assert_allclose(fast, plain, atol=1e-5)
