"""The procedural generator: contract, determinism, exactness of the flow and of the occlusion mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flownet2_ros.data import DatasetError, SyntheticFlowDataset
from flownet2_ros.ops.warp import warp

H, W = 96, 128


def boundary_band(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within ``width`` of a change of layer label."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(edge.astype(np.uint8), kernel) > 0


def test_contract_and_bounds() -> None:
    ds = SyntheticFlowDataset(4, H, W, seed=3, max_displacement=12.0)
    assert len(ds) == 4 and "4 samples" in ds.describe() and "96x128" in ds.describe()
    s = ds[2]
    assert set(s) == {"image1", "image2", "flow", "valid", "occlusion", "name", "sequence"}
    for key in ("image1", "image2"):
        assert s[key].dtype == torch.float32 and s[key].shape == (3, H, W)
        assert float(s[key].min()) >= 0 and float(s[key].max()) <= 255
    assert s["flow"].dtype == torch.float32 and s["flow"].shape == (2, H, W)
    assert s["valid"].dtype == torch.bool and bool(s["valid"].all())
    assert s["occlusion"].dtype == torch.bool and s["occlusion"].shape == (H, W)
    assert s["name"] == "synthetic-3/000002" and s["sequence"] == "synthetic-3"
    for i in range(4):
        flow = ds[i]["flow"]
        assert bool(torch.isfinite(flow).all())
        assert float(flow.norm(dim=0).max()) <= 12.0 + 1e-3
    with pytest.raises(IndexError):
        ds[4]


def test_determinism() -> None:
    a = SyntheticFlowDataset(5, H, W, seed=7)
    b = SyntheticFlowDataset(5, H, W, seed=7)
    late = b[4]  # out of order: item i depends only on (seed, i)
    early = a[4]
    for key in ("image1", "image2", "flow", "occlusion"):
        assert torch.equal(early[key], late[key])
    assert not torch.equal(a[3]["image1"], a[4]["image1"])
    assert not torch.equal(SyntheticFlowDataset(5, H, W, seed=8)[4]["image1"], early["image1"])


def test_flow_is_exact_warp_reproduces_frame1() -> None:
    """warp(image2, flow) == image1 on visible pixels away from object boundaries: the flow is exact."""
    ds = SyntheticFlowDataset(6, H, W, seed=11, max_displacement=20.0)
    for i in range(len(ds)):
        scene = ds.scene(i)
        s = ds[i]
        warped = warp(s["image2"][None], s["flow"][None])[0]
        error = (warped - s["image1"]).abs().mean(0).numpy()
        # Visible, and neither near a boundary in frame 1 nor sampling across one in frame 2.
        band2 = warp(
            torch.from_numpy(boundary_band(scene.labels2).astype(np.float32))[None, None], s["flow"][None]
        )
        keep = ~scene.occlusion & ~boundary_band(scene.labels1) & (band2[0, 0].numpy() == 0)
        assert keep.mean() > 0.5
        assert error[keep].mean() < 2.0, f"sample {i}: mean abs error {error[keep].mean():.2f}"
        assert np.percentile(error[keep], 99) < 12.0
        # The occluded pixels really are different: the check above has power.
        visible_in_frame = scene.occlusion & (scene.labels1 >= 0)
        if visible_in_frame.sum() > 50:
            assert error[scene.occlusion].mean() > error[keep].mean()


def test_occlusion_mask_matches_frame2_layers() -> None:
    ds = SyntheticFlowDataset(4, H, W, seed=5, max_displacement=16.0, num_objects=(4, 6))
    agree_visible, disagree_occluded, occluded_total = [], 0, 0
    for i in range(len(ds)):
        scene = ds.scene(i)
        ys, xs = np.mgrid[0:H, 0:W]
        tx = xs + scene.flow[..., 0]
        ty = ys + scene.flow[..., 1]
        inside = (tx >= 0) & (tx <= W - 1) & (ty >= 0) & (ty <= H - 1)
        np.testing.assert_array_equal(scene.occlusion[~inside], True)  # leaving the frame is occlusion
        label_at_target = scene.labels2[
            np.clip(np.round(ty), 0, H - 1).astype(int), np.clip(np.round(tx), 0, W - 1).astype(int)
        ]
        visible = (
            ~scene.occlusion
            & ~boundary_band(scene.labels1, 1)
            & ~boundary_band(scene.labels2, 1)[
                np.clip(np.round(ty), 0, H - 1).astype(int), np.clip(np.round(tx), 0, W - 1).astype(int)
            ]
        )
        agree_visible.append((label_at_target[visible] == scene.labels1[visible]).mean())
        hidden = scene.occlusion & inside & ~boundary_band(scene.labels1, 1)
        occluded_total += int(hidden.sum())
        disagree_occluded += int((label_at_target[hidden] != scene.labels1[hidden]).sum())
        # The flow of each pixel is its layer's affine motion.
        for k in np.unique(scene.labels1):
            m = scene.labels1 == k
            a = scene.motions[k]
            expected_u = a[0, 0] * xs[m] + a[0, 1] * ys[m] + a[0, 2] - xs[m]
            np.testing.assert_allclose(scene.flow[..., 0][m], expected_u, atol=1e-3)
    assert min(agree_visible) == 1.0
    assert occluded_total > 0 and disagree_occluded / occluded_total > 0.9


def test_options_objects_displacement_and_texture() -> None:
    still = SyntheticFlowDataset(2, H, W, seed=1, max_displacement=0.0, num_objects=(0, 0))
    s = still[0]
    assert float(s["flow"].abs().max()) == 0.0 and not bool(s["occlusion"].any())
    assert torch.allclose(s["image1"], s["image2"])
    small = SyntheticFlowDataset(3, H, W, seed=2, max_displacement=2.0)
    assert max(float(small[i]["flow"].norm(dim=0).max()) for i in range(3)) <= 2.0 + 1e-4
    crowded = SyntheticFlowDataset(1, H, W, seed=2, num_objects=(8, 8))
    assert crowded.scene(0).motions.shape == (9, 2, 3)
    # Rich texture: almost every 8x8 block has visible structure (no flat regions).
    image = crowded[0]["image1"].mean(0).numpy()
    blocks = image.reshape(H // 8, 8, W // 8, 8).std(axis=(1, 3))
    assert (blocks > 1.0).mean() > 0.95
    with pytest.raises(ValueError, match="num_objects"):
        SyntheticFlowDataset(1, H, W, num_objects=(3, 2))


def test_photo_backgrounds(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no images"):
        SyntheticFlowDataset(1, H, W, backgrounds=tmp_path)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 80), (200, 300)]):
        photo = cv2.resize(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), (w, h))
        cv2.imwrite(str(tmp_path / f"p{i}.jpg"), photo)
    ds = SyntheticFlowDataset(3, H, W, seed=0, backgrounds=tmp_path, object_photo_prob=0.5)
    assert "photos" in ds.describe()
    for i in range(3):
        s = ds[i]
        assert s["image1"].shape == (3, H, W) and bool(torch.isfinite(s["flow"]).all())


def test_background_photo_prob_mixes_photo_and_procedural_backgrounds(tmp_path: Path) -> None:
    # One flat photograph: a background drawn from it is a single colour, a procedural one is not.
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((300, 400, 3), 77, np.uint8))
    with pytest.raises(ValueError, match="background_photo_prob"):
        SyntheticFlowDataset(1, H, W, backgrounds=tmp_path, background_photo_prob=1.5)
    ds = SyntheticFlowDataset(
        24, H, W, seed=3, backgrounds=tmp_path, object_photo_prob=0.0, background_photo_prob=0.5
    )
    flat = []
    for i in range(len(ds)):
        scene = ds.scene(i)
        background = scene.image1[scene.labels1 == 0]
        flat.append(bool(background.size) and bool(np.abs(background - 77).max() < 0.5))
    assert 4 <= sum(flat) <= 20  # both kinds occur
    everything = SyntheticFlowDataset(4, H, W, seed=3, backgrounds=tmp_path, object_photo_prob=0.0)
    for i in range(4):
        scene = everything.scene(i)
        assert np.abs(scene.image1[scene.labels1 == 0] - 77).max() < 0.5


def test_packaged_training_backgrounds_are_disjoint_from_the_evaluation_photographs() -> None:
    from flownet2_ros.data import packaged_photographs, packaged_training_photographs
    from flownet2_ros.data.photo_motion import PACKAGED_TRAINING_PHOTOS

    training = packaged_training_photographs()
    assert len(training) == len(PACKAGED_TRAINING_PHOTOS)  # scikit-image and matplotlib: dev extras
    evaluation = packaged_photographs()
    assert evaluation and not {p.resolve() for p in training} & {p.resolve() for p in evaluation}
    # No other view of an evaluation scene either (e.g. the right image of the motorcycle stereo pair).
    stems = {p.stem.split("_")[0] for p in evaluation}
    assert not {p.stem.split("_")[0] for p in training} & stems
    ds = SyntheticFlowDataset(2, H, W, seed=0, backgrounds="packaged", background_photo_prob=0.5)
    assert "packaged" in ds.describe()
    assert ds[0]["image1"].shape == (3, H, W) and ds[1]["image2"].shape == (3, H, W)


def test_packaged_training_backgrounds_need_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    from flownet2_ros.data import photo_motion

    monkeypatch.setattr(photo_motion, "packaged_training_photographs", lambda: [])
    with pytest.raises(DatasetError, match="scikit-image and matplotlib"):
        SyntheticFlowDataset(1, H, W, backgrounds="packaged")
