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


# ------------------------------------------------------------------ motion-size law and camera effects (#15)


def _fingerprint(scene: object) -> np.ndarray:
    """Sums that change with any change of the random draws (motions, layers, textures), robust to the
    last-bit differences between OpenCV builds that a byte digest would not survive."""
    motions = np.asarray(scene.motions)  # type: ignore[attr-defined]
    flow = np.asarray(scene.flow)  # type: ignore[attr-defined]
    return np.array(
        [
            motions.sum(),
            np.abs(motions).sum(),
            flow[..., 0].mean(),
            flow[..., 1].mean(),
            np.asarray(scene.image1).mean(),  # type: ignore[attr-defined]
            np.asarray(scene.image2).mean(),  # type: ignore[attr-defined]
            np.asarray(scene.occlusion).mean(),  # type: ignore[attr-defined]
            np.asarray(scene.labels1).sum(),  # type: ignore[attr-defined]
        ]
    )


# Computed with the generator as it was before motion_distribution and camera_effects existed (byte
# digests of every array matched then too; these sums are what survives another OpenCV build).
_ORIGINAL_FINGERPRINTS = {
    (5, 48, 64, 20.0, (2, 8), 0): [
        75.92927,
        183.87534,
        -3.07621,
        3.65245,
        117.35037,
        114.58383,
        0.29329,
        3295,
    ],
    (5, 48, 64, 20.0, (2, 8), 3): [
        60.32896,
        119.97153,
        0.57421,
        -3.49271,
        176.81706,
        171.07504,
        0.10352,
        1039,
    ],
    (123, 40, 56, 6.0, (1, 3), 1): [
        -9.28172,
        28.00804,
        -1.82398,
        -2.35943,
        128.73453,
        127.17577,
        0.13527,
        304,
    ],
}


def test_uniform_motion_law_reproduces_the_original_samples() -> None:
    for (seed, h, w, top, objects, index), expected in _ORIGINAL_FINGERPRINTS.items():
        default = SyntheticFlowDataset(4, h, w, seed=seed, max_displacement=top, num_objects=objects)
        explicit = SyntheticFlowDataset(
            4, h, w, seed=seed, max_displacement=top, num_objects=objects, motion_distribution="uniform"
        )
        assert default.motion_distribution == "uniform" and default.camera_effects is None
        for dataset in (default, explicit):
            np.testing.assert_allclose(_fingerprint(dataset.scene(index)), expected, rtol=1e-4, atol=2e-4)
        assert default.scene(index).camera is None


def test_new_options_are_validated_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="motion_distribution must be one of uniform, small"):
        SyntheticFlowDataset(1, H, W, motion_distribution="exponential")
    with pytest.raises(ValueError, match="camera_effects must be true, false or a mapping"):
        SyntheticFlowDataset(1, H, W, camera_effects="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"camera_effects: unknown option\(s\) blur"):
        SyntheticFlowDataset(1, H, W, camera_effects={"blur": 1})
    with pytest.raises(ValueError, match=r"camera_effects.exposure must be \(lo, hi\)"):
        SyntheticFlowDataset(1, H, W, camera_effects={"exposure": [0.5, 0.2]})
    with pytest.raises(ValueError, match="fraction of the frame interval"):
        SyntheticFlowDataset(1, H, W, camera_effects={"exposure": [0.0, 2.0]})
    with pytest.raises(ValueError, match=r"camera_effects\.read_noise must be a pair"):
        SyntheticFlowDataset(1, H, W, camera_effects={"read_noise": 3})
    with pytest.raises(ValueError, match=r"camera_effects.gamma must be a number in \[0, 1\]"):
        SyntheticFlowDataset(1, H, W, camera_effects={"gamma": -0.1})
    with pytest.raises(ValueError, match="max_taps"):
        SyntheticFlowDataset(1, H, W, camera_effects={"max_taps": 0})
    # YAML gives lists: accepted as pairs.
    ds = SyntheticFlowDataset(1, H, W, camera_effects={"exposure": [0.1, 0.2], "max_taps": 4})
    assert ds.camera_effects is not None and ds.camera_effects.exposure == (0.1, 0.2)
    assert SyntheticFlowDataset(1, H, W, camera_effects=None).camera_effects is None


def test_small_motion_law_is_weighted_towards_small_motions_with_a_tail_to_the_maximum() -> None:
    top, n = 96.0, 200
    pooled: dict[str, list[np.ndarray]] = {"small": [], "uniform": []}
    sample_max = []
    for law in pooled:
        ds = SyntheticFlowDataset(n, 48, 64, seed=4, max_displacement=top, motion_distribution=law)
        for i in range(n if law == "small" else 40):
            flow = ds.scene(i).flow
            magnitude = np.hypot(flow[..., 0], flow[..., 1])
            pooled[law].append(magnitude[::2, ::2].ravel())
            if law == "small":
                sample_max.append(float(magnitude.max()))
    small = np.concatenate(pooled["small"])
    uniform = np.concatenate(pooled["uniform"])
    assert small.max() <= top + 1e-3
    median = float(np.median(small))
    assert median < 0.15 * top  # well below max/4 (measured ~0.11·max)
    assert float(np.median(uniform)) > 2.0 * median  # the original law spreads over the range
    assert np.mean(small < 0.05 * top) > 0.2  # many small motions (< 4.8 px)
    assert np.mean(np.array(sample_max) > 0.75 * top) > 0.1  # and a tail up to the maximum


def test_camera_effects_change_the_images_and_keep_the_flow_exact() -> None:
    sharp = SyntheticFlowDataset(4, H, W, seed=6, max_displacement=16.0, motion_distribution="small")
    camera = SyntheticFlowDataset(
        4, H, W, seed=6, max_displacement=16.0, motion_distribution="small", camera_effects=True
    )
    assert "camera effects" in camera.describe() and "small motion sizes" in camera.describe()
    for i in range(len(camera)):
        a, b = sharp[i], camera[i]
        assert torch.equal(a["flow"], b["flow"]) and torch.equal(a["occlusion"], b["occlusion"])
        assert torch.equal(a["valid"], b["valid"])
        for key in ("image1", "image2"):
            assert b[key].dtype == torch.float32 and b[key].shape == (3, H, W)
            assert float(b[key].min()) >= 0.0 and float(b[key].max()) <= 255.0
            assert float((a[key] - b[key]).abs().mean()) > 0.5
        drawn = camera.scene(i).camera
        assert drawn is not None and 0.0 <= drawn.exposure <= 0.5
    # Blur, noise, gain and gamma off: the images are exactly the sharp ones.
    off = SyntheticFlowDataset(
        2,
        H,
        W,
        seed=6,
        max_displacement=16.0,
        motion_distribution="small",
        camera_effects={
            "exposure": [0, 0],
            "read_noise": [0, 0],
            "shot_noise": [0, 0],
            "gain": 0,
            "gain_change": 0,
            "gamma": 0,
            "gamma_change": 0,
        },
    )
    assert torch.equal(off[1]["image1"], sharp[1]["image1"]) and torch.equal(
        off[1]["image2"], sharp[1]["image2"]
    )


def test_camera_effects_are_deterministic_per_seed_and_index() -> None:
    a = SyntheticFlowDataset(5, H, W, seed=9, motion_distribution="small", camera_effects=True)
    b = SyntheticFlowDataset(5, H, W, seed=9, motion_distribution="small", camera_effects=True)
    late = b[3]  # out of order
    early = a[3]
    for key in ("image1", "image2", "flow", "occlusion"):
        assert torch.equal(early[key], late[key])
    assert not torch.equal(a[2]["image1"], early["image1"])
    other = SyntheticFlowDataset(5, H, W, seed=10, motion_distribution="small", camera_effects=True)
    assert not torch.equal(other[3]["image1"], early["image1"])


def test_motion_blur_is_along_the_motion() -> None:
    from flownet2_ros.data.camera_effects import motion_blur

    h, w = 32, 48
    stripes = np.zeros((h, w, 3), np.float32)
    stripes[:, (np.arange(w) // 3) % 2 == 1] = 200.0  # vertical stripes, period 6 px

    def horizontal_contrast(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image[8:-8, 8:-8, 0], axis=1)).mean())

    sideways = np.zeros((h, w, 2), np.float32)
    sideways[..., 0] = 12.0
    upwards = np.zeros((h, w, 2), np.float32)
    upwards[..., 1] = -12.0
    blurred = motion_blur(stripes, sideways, exposure=0.5)  # a 6 px box along x: one full period
    kept = motion_blur(stripes, upwards, exposure=0.5)  # along the stripes: nothing changes
    assert horizontal_contrast(blurred) < 0.2 * horizontal_contrast(stripes)
    np.testing.assert_allclose(kept, stripes, atol=1e-3)
    assert blurred.dtype == np.float32 and blurred.shape == stripes.shape
    assert np.abs(blurred[8:-8, 8:-8].mean() - stripes[8:-8, 8:-8].mean()) < 2.0  # mean preserved
    # No exposure or no motion: a copy.
    np.testing.assert_array_equal(motion_blur(stripes, sideways, exposure=0.0), stripes)
    np.testing.assert_array_equal(motion_blur(stripes, np.zeros_like(sideways), exposure=0.5), stripes)


def test_frame2_velocity_is_the_visible_layers_motion() -> None:
    from flownet2_ros.data.camera_effects import layer_velocity

    scene = SyntheticFlowDataset(2, H, W, seed=3, max_displacement=10.0).scene(1)
    velocity = layer_velocity(scene.labels2, scene.motions)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    for k in np.unique(scene.labels2):
        m = scene.labels2 == k
        # q - v(q) is the frame-1 position: the layer's motion takes it back to q.
        px, py = xs[m] - velocity[..., 0][m], ys[m] - velocity[..., 1][m]
        a = scene.motions[k]
        np.testing.assert_allclose(a[0, 0] * px + a[0, 1] * py + a[0, 2], xs[m], atol=1e-3)
        np.testing.assert_allclose(a[1, 0] * px + a[1, 1] * py + a[1, 2], ys[m], atol=1e-3)


def test_noise_grows_with_the_signal_and_exposure_changes_between_frames() -> None:
    from flownet2_ros.data.camera_effects import CameraEffects, apply_camera_effects

    image = np.zeros((64, 64, 3), np.float32)
    image[:, :32] = 16.0
    image[:, 32:] = 200.0
    still = np.zeros((64, 64, 2), np.float32)
    shot_only = CameraEffects(
        exposure=(0, 0),
        read_noise=(0, 0),
        shot_noise=(0.25, 0.25),
        gain=0,
        gain_change=0,
        gamma=0,
        gamma_change=0,
    )
    one, two, _ = apply_camera_effects(np.random.default_rng(0), image, image, still, still, shot_only)
    dark, bright = one[:, :32].std(), one[:, 32:].std()
    assert 1.7 < dark < 2.3 and 6.5 < bright < 7.6  # sqrt(0.25·16) = 2, sqrt(0.25·200) = 7.1
    assert not np.array_equal(one, two)  # fresh noise per frame
    tone_only = CameraEffects(exposure=(0, 0), read_noise=(0, 0), shot_noise=(0, 0), gain_change=0.2)
    one, two, drawn = apply_camera_effects(np.random.default_rng(1), image, image, still, still, tone_only)
    for out, gain, gamma in ((one, drawn.gains[0], drawn.gammas[0]), (two, drawn.gains[1], drawn.gammas[1])):
        expected = 255.0 * (np.clip(image * gain, 0, 255) / 255.0) ** gamma
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3)
    assert drawn.gains[0] != drawn.gains[1] and drawn.gammas[0] != drawn.gammas[1]
