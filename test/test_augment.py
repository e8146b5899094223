"""Augmentation keeps image pairs and flow consistent; photometric changes leave the flow alone."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from flownet2_ros.data import CenterCrop, Compose, FlowAugmentation, Resize, SyntheticFlowDataset
from flownet2_ros.ops.warp import warp

H, W = 160, 224
CROP = (128, 192)
NO_PHOTO: dict[str, Any] = {"photometric_prob": 0.0}
STILL: dict[str, Any] = {
    "translate": 0.0,
    "rotate": 0.0,
    "scale": (1.0, 1.0),
    "relative_translate": 0.0,
    "relative_rotate": 0.0,
    "relative_scale": (1.0, 1.0),
}


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    ds = SyntheticFlowDataset(3, H, W, seed=21, max_displacement=16.0, num_objects=(2, 4))
    return [ds[i] for i in range(len(ds))]


def smooth_region(flow: torch.Tensor, valid: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    """Valid, non-occluded pixels at least 2 px away from any flow discontinuity (object boundary)."""
    du = (flow[:, :, 1:] - flow[:, :, :-1]).abs().amax(0)
    dv = (flow[:, 1:, :] - flow[:, :-1, :]).abs().amax(0)
    jump = torch.zeros(flow.shape[1:], dtype=torch.bool)
    jump[:, 1:] |= du > 0.5
    jump[:, :-1] |= du > 0.5
    jump[1:] |= dv > 0.5
    jump[:-1] |= dv > 0.5
    near = F.max_pool2d(jump[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    return valid & ~occlusion & ~near


def warp_error(sample: dict) -> float:
    """Mean |warp(image2, flow) - image1| over the smooth visible region, also requiring that the
    sampled neighbourhood of the target is smooth in frame 2 (approximated by the flow's continuity)."""
    warped = warp(sample["image2"][None], sample["flow"][None])[0]
    error = (warped - sample["image1"]).abs().mean(0)
    keep = smooth_region(sample["flow"], sample["valid"], sample["occlusion"])
    # Exclude targets whose frame-2 neighbourhood meets a frame-1 boundary moved there (conservative).
    edges = (
        ~smooth_region(sample["flow"], torch.ones_like(sample["valid"]), torch.zeros_like(sample["valid"]))
    ).float()
    keep &= warp(edges[None, None], sample["flow"][None])[0, 0] == 0
    assert keep.float().mean() > 0.3, "too few pixels left to check"
    return float(error[keep].mean())


CASES: dict[str, dict[str, Any]] = {
    "crop": {"geometric_prob": 0.0},
    "translate": {**STILL, "translate": 0.2},
    "rotate": {**STILL, "rotate": 17.0},
    "scale": {**STILL, "scale": (0.9, 2.0)},
    "relative": {**STILL, "relative_translate": 0.02, "relative_rotate": 3.0, "relative_scale": (0.95, 1.05)},
    "hflip": {**STILL, "hflip_prob": 1.0},
    "vflip": {**STILL, "vflip_prob": 1.0},
    "combined": {"hflip_prob": 0.5, "vflip_prob": 0.5, "relative_rotate": 2.0},
}


@pytest.mark.parametrize("case", list(CASES))
def test_geometric_consistency(samples: list[dict], case: str) -> None:
    aug = FlowAugmentation(CROP, **NO_PHOTO, **CASES[case])
    generator = torch.Generator().manual_seed(5)
    for sample in samples:
        out = aug(sample, generator)
        assert out["image1"].shape == (3, *CROP) and out["flow"].shape == (2, *CROP)
        assert out["valid"].shape == CROP and out["occlusion"].shape == CROP
        assert out["name"] == sample["name"]
        assert warp_error(out) < 2.0, case


def test_flow_transform_is_needed(samples: list[dict]) -> None:
    """The consistency check has power: with the flow left untransformed it fails under rotation/zoom."""
    aug = FlowAugmentation(CROP, **NO_PHOTO, **{**STILL, "rotate": 17.0, "scale": (1.5, 2.0)})
    out = aug(samples[0], torch.Generator().manual_seed(1))
    good = warp_error(out)
    naive = dict(out)
    a1, _ = aug.sample_transforms(1, H, W, torch.Generator().manual_seed(1))
    grid = _pixel_grid(a1)
    naive["flow"] = F.grid_sample(samples[0]["flow"][None], grid, align_corners=True)[0]
    warped = warp(naive["image2"][None], naive["flow"][None])[0]
    bad = float((warped - naive["image1"]).abs().mean())
    assert bad > 4 * good and bad > 5.0


def _pixel_grid(a: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(CROP[0], dtype=torch.float64), torch.arange(CROP[1], dtype=torch.float64), indexing="ij"
    )
    px = a[0, 0, 0] * xs + a[0, 0, 1] * ys + a[0, 0, 2]
    py = a[0, 1, 0] * xs + a[0, 1, 1] * ys + a[0, 1, 2]
    return torch.stack([px / (W - 1) * 2 - 1, py / (H - 1) * 2 - 1], -1)[None].float()


def test_rotation_rotates_flow_vectors() -> None:
    """A constant flow under rotation + zoom (no relative transform) is mapped by the inverse of A1's linear part."""
    sample = {
        "image1": torch.rand(3, H, W) * 255,
        "image2": torch.rand(3, H, W) * 255,
        "flow": torch.tensor([3.0, -2.0]).view(2, 1, 1).expand(2, H, W).clone(),
        "valid": torch.ones(H, W, dtype=torch.bool),
    }
    aug = FlowAugmentation(CROP, **NO_PHOTO, **{**STILL, "rotate": 10.0, "scale": (1.2, 1.6)})
    generator = torch.Generator().manual_seed(3)
    a1, _ = aug.sample_transforms(1, H, W, generator)
    out = aug(sample, torch.Generator().manual_seed(3))
    linear = a1[0, :2, :2]  # output -> input; the flow maps with its inverse
    expected = torch.linalg.solve(linear, torch.tensor([3.0, -2.0], dtype=torch.float64)).float()
    torch.testing.assert_close(out["flow"][:, 5:-5, 5:-5].mean((1, 2)), expected, atol=1e-3, rtol=0)
    zoom = math.sqrt(abs(float(torch.linalg.det(linear))))
    assert 1 / 1.6 - 1e-6 <= zoom <= 1 / 1.2 + 1e-6


def test_photometric_leaves_flow_untouched(samples: list[dict]) -> None:
    aug = FlowAugmentation(CROP, photometric_relative=1.0)
    batch = {
        k: torch.stack([s[k] for s in samples]) for k in ("image1", "image2", "flow", "valid", "occlusion")
    }
    out = aug.photometric(batch, torch.Generator().manual_seed(0))
    for key in ("flow", "valid", "occlusion"):
        assert out[key] is batch[key]
    for key in ("image1", "image2"):
        assert out[key].shape == batch[key].shape and out[key].dtype == torch.float32
        assert float(out[key].min()) >= 0 and float(out[key].max()) <= 255
        assert not torch.allclose(out[key], batch[key])
    # Same parameters for both frames and no noise: identical frames stay identical.
    same = FlowAugmentation(CROP, noise_std=(0.0, 0.0), photometric_relative=0.0)
    one = {k: v[:1] for k, v in batch.items()}
    twins = {**one, "image2": one["image1"].clone()}
    result = same.photometric(twins, torch.Generator().manual_seed(0))
    assert torch.equal(result["image1"], result["image2"])
    assert not torch.allclose(result["image1"], one["image1"])
    disabled = FlowAugmentation(CROP, photometric_prob=0.0).photometric(one, torch.Generator().manual_seed(0))
    torch.testing.assert_close(disabled["image1"], one["image1"], atol=1e-3, rtol=0)


def test_determinism_and_batching(samples: list[dict]) -> None:
    aug = FlowAugmentation(CROP, hflip_prob=0.5)
    a = aug(samples[0], torch.Generator().manual_seed(42))
    b = aug(samples[0], torch.Generator().manual_seed(42))
    c = aug(samples[0], torch.Generator().manual_seed(43))
    for key in ("image1", "image2", "flow", "valid", "occlusion"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["image1"], c["image1"])
    batch: dict[str, Any] = {
        k: torch.stack([s[k] for s in samples]) for k in ("image1", "image2", "flow", "valid", "occlusion")
    }
    batch["name"] = [s["name"] for s in samples]
    geo = FlowAugmentation(CROP, **NO_PHOTO)
    out = geo(batch, torch.Generator().manual_seed(7))
    assert out["image1"].shape == (3, 3, *CROP) and out["valid"].shape == (3, *CROP)
    assert out["name"] == batch["name"]
    for i in range(3):
        assert warp_error({k: out[k][i] for k in ("image1", "image2", "flow", "valid", "occlusion")}) < 2.5


def test_sparse_flow_is_not_contaminated() -> None:
    g = torch.Generator().manual_seed(0)
    valid = torch.rand(H, W, generator=g) < 0.3
    flow = torch.tensor([3.0, -2.0]).view(2, 1, 1).expand(2, H, W).clone()
    flow[:, ~valid] = 1000.0  # garbage where invalid, as a careless reader might leave it
    flow[0, 0, 0] = float("nan")
    sample = {
        "image1": torch.rand(3, H, W) * 255,
        "image2": torch.rand(3, H, W) * 255,
        "flow": flow,
        "valid": valid,
    }
    out = FlowAugmentation(CROP, **NO_PHOTO)(sample, g)
    assert 0.2 < float(out["valid"].float().mean()) < 0.4
    assert float(out["flow"][:, out["valid"]].abs().max()) < 10.0
    assert float(out["flow"][:, ~out["valid"]].abs().max()) == 0.0


def test_out_of_frame_is_occlusion_and_small_inputs_fall_back() -> None:
    ds = SyntheticFlowDataset(1, 100, 120, seed=2, max_displacement=10.0)
    sample = ds[0]
    aug = FlowAugmentation((128, 128), **NO_PHOTO)  # larger than the input: zoomed centred crop
    out = aug(sample, torch.Generator().manual_seed(0))
    assert out["image1"].shape == (3, 128, 128)
    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    tx, ty = xs + out["flow"][0], ys + out["flow"][1]
    outside = (tx < 0) | (tx > 127) | (ty < 0) | (ty > 127)
    assert bool(out["occlusion"][outside & out["valid"]].all())
    assert warp_error(out) < 2.5


def test_center_crop_resize_compose(samples: list[dict]) -> None:
    sample = samples[0]
    cropped = CenterCrop((128, 128))(sample)
    assert cropped["image1"].shape == (3, 128, 128) and cropped["occlusion"].shape == (128, 128)
    torch.testing.assert_close(cropped["flow"], sample["flow"][:, 16:144, 48:176])
    with pytest.raises(ValueError, match="larger"):
        CenterCrop((256, 64))(sample)
    flat = {**sample, "flow": torch.tensor([4.0, -1.0]).view(2, 1, 1).expand(2, H, W).clone()}
    big = Resize((2 * H, W // 2))(flat)
    assert big["image1"].shape == (3, 2 * H, W // 2) and big["valid"].shape == (2 * H, W // 2)
    torch.testing.assert_close(big["flow"][:, 3, 3], torch.tensor([2.0, -2.0]))
    rounded = Resize(multiple_of=64, resize_flow=False)(sample)
    assert rounded["image1"].shape == (3, 192, 256) and rounded["flow"].shape == (2, H, W)
    pipeline = Compose([Resize(multiple_of=64), CenterCrop((128, 192))])
    assert pipeline(sample)["flow"].shape == (2, 128, 192)
    with pytest.raises(ValueError, match="multiples of 64"):
        FlowAugmentation((100, 128))
