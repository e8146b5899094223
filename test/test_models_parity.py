"""Checkpoint compatibility: keys, shapes, parameter counts and outputs of every stack against the
reference implementation's vectors (deterministic weights, see ../shared/reference/README.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flownet2_ros.models import STACK_NAMES, build

from reference_weights import reference_keys, reference_state_dict

ATOL = 1e-4
SUBNETS = ("flownetc", "flownets_1", "flownets_2", "flownets_d", "flownetfusion")


@pytest.fixture(scope="module")
def keys(reference_dir):
    return reference_keys(reference_dir)


@pytest.mark.parametrize("name", STACK_NAMES)
def test_state_dict_layout_matches_reference(name, keys, reference_dir):
    with torch.device("meta"):
        model = build(name)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == keys[name]  # same names, same shapes, same order
    counts = json.loads((reference_dir / "param_counts.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == counts[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", STACK_NAMES)
def test_outputs_and_intermediates_match_reference(name, keys, reference_dir):
    vectors = np.load(reference_dir / f"vectors_{name}.npz")
    model = build(name)
    model.load_state_dict(reference_state_dict(keys[name]), strict=True)

    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for sub in SUBNETS:
        if hasattr(model, sub):
            getattr(model, sub).register_forward_hook(
                lambda _m, args, out, sub=sub: captured.__setitem__(sub, (args[0].detach(), out.detach()))
            )

    pair = torch.from_numpy(vectors["input"])
    with torch.no_grad():
        flow = model(pair[:, :, 0], pair[:, :, 1])

    expected = vectors["flow"]
    assert flow.shape == expected.shape
    # The reference's own float32-vs-float64 gap, for scale: the float32 gap we allow is ATOL.
    assert np.abs(vectors["flow_f64"] - expected).max() < ATOL
    np.testing.assert_allclose(flow.numpy(), expected, rtol=0, atol=ATOL)
    # The flow is not trivially small: a semantic error would show.
    assert np.abs(expected).max() > 1.0

    for sub, (net_in, net_out) in captured.items():
        np.testing.assert_allclose(
            net_in.numpy(), vectors[f"{sub}_in"], rtol=0, atol=ATOL, err_msg=f"{sub} input"
        )
        np.testing.assert_allclose(
            net_out.numpy(), vectors[f"{sub}_flow2"], rtol=0, atol=ATOL, err_msg=f"{sub} flow"
        )
    assert set(captured) == {k[: -len("_in")] for k in vectors.files if k.endswith("_in")}


@pytest.mark.slow
@pytest.mark.parametrize("name", STACK_NAMES)
def test_the_inference_core_keeps_parity(name, keys, reference_dir):
    """Through ``FlowInference`` (channels-last, the CPU's fp32, a batch of two pairs): the same numbers."""
    from flownet2_ros.models import FlowInference

    vectors = np.load(reference_dir / f"vectors_{name}.npz")
    model = build(name)
    model.load_state_dict(reference_state_dict(keys[name]), strict=True)
    core = FlowInference(model, device="cpu", precision="auto")
    assert core.dtype == torch.float32 and core.memory_format == torch.channels_last
    pair = torch.from_numpy(vectors["input"])
    first, second = pair[:, :, 0], pair[:, :, 1]
    flow = core(torch.cat([first, first.flip(-1)]), torch.cat([second, second.flip(-1)]))
    np.testing.assert_allclose(flow[: len(first)].numpy(), vectors["flow"], rtol=0, atol=ATOL)
    # the second pair of the batch is a different pair: its flow is the plain path's for it (atol 1e-5)
    plain = FlowInference(build(name), device="cpu", channels_last=False)
    plain.model.load_state_dict(reference_state_dict(keys[name]), strict=True)
    np.testing.assert_allclose(
        flow[len(first) :].numpy(), plain(first.flip(-1), second.flip(-1)).numpy(), rtol=0, atol=1e-5
    )
