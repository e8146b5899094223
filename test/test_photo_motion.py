"""Photographs under known homographies (evaluation ground truth) and the OpenCV baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flownet2_ros.backends.base import BackendError
from flownet2_ros.backends.opencv_backend import CLASSICAL_METHODS, OpenCVFlowEstimator
from flownet2_ros.data.photo_motion import (
    LARGE_MOTION,
    PACKAGED_PHOTO_NAMES,
    PhotoMotionDataset,
    homography_flow,
    packaged_photographs,
    packaged_training_photographs,
    random_homography,
)
from flownet2_ros.ops import warp


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A textured test 'photograph' written to disk (smooth noise at several scales)."""
    import cv2

    rng = np.random.default_rng(3)
    image = np.zeros((300, 400, 3), np.float32)
    for cells in (5, 20, 80):
        image += cv2.resize(rng.uniform(0, 85, (cells, cells * 4 // 3, 3)).astype(np.float32), (400, 300))
    path = tmp_path_factory.mktemp("photos") / "texture.png"
    cv2.imwrite(str(path), image.clip(0, 255).astype(np.uint8))
    return path


def test_homography_flow_of_a_pure_translation():
    matrix = np.array([[1, 0, 3.5], [0, 1, -2], [0, 0, 1]], np.float64)
    flow, valid = homography_flow(matrix, 10, 12)
    assert np.allclose(flow[..., 0], 3.5) and np.allclose(flow[..., 1], -2)
    assert not valid[:, -3:].any() and valid[2:, :8].all()  # points leaving the view are invalid
    assert not valid[:2].any()


def test_samples_are_deterministic_and_consistent_with_their_flow(photo):
    dataset = PhotoMotionDataset([photo], 3, height=96, width=128, seed=5, max_translation=6)
    first, again = dataset[1], dataset[1]
    assert torch.equal(first["image2"], again["image2"]) and torch.equal(first["flow"], again["flow"])
    assert not torch.equal(dataset[0]["flow"], first["flow"])
    for index in range(3):
        sample = dataset[index]
        assert sample["image1"].shape == (3, 96, 128) and sample["flow"].shape == (2, 96, 128)
        assert sample["sequence"] == "texture" and sample["valid"].float().mean() > 0.5
        # Warping frame 2 back by the exact flow reproduces frame 1 up to bilinear resampling.
        warped = warp(sample["image2"][None], sample["flow"][None])[0]
        residual = (warped - sample["image1"]).abs().mean(0)[sample["valid"]]
        assert residual.mean() < 1.5
        assert sample["flow"].abs().max() > 1.0  # real motion
    with pytest.raises(IndexError):
        dataset[3]


def test_random_homography_stays_near_identity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        matrix = random_homography(rng, 480, 640, max_translation=10)
        flow, _ = homography_flow(matrix, 480, 640)
        assert np.abs(flow).max() < 10 + 640 * 0.14


def test_the_box_law_draws_in_its_documented_order():
    """The small-motion law (the ``photos`` set) is unchanged by the ring law: θ, s, (tx, ty), (gx, gy)."""
    matrix = random_homography(np.random.default_rng(7), 480, 640, max_translation=10)
    twin = np.random.default_rng(7)
    angle, scale = np.deg2rad(twin.uniform(-4, 4)), 1 + twin.uniform(-0.06, 0.06)
    (tx, ty), (gx, gy) = twin.uniform(-10, 10, 2), twin.uniform(-4e-5, 4e-5, 2)
    c = np.array([319.5, 239.5])
    p = np.array([100.0, 50.0])
    u, v = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ (p - c)
    w = 1 + gx * (p - c)[0] + gy * (p - c)[1]
    expected = np.array([u, v]) / w + c + (tx, ty)
    moved = matrix @ [*p, 1.0]
    np.testing.assert_allclose(moved[:2] / moved[2], expected, atol=1e-9)


def test_the_large_motion_law_moves_every_pixel_by_40_to_96_px():
    """Ring law: |t| in [48, 88] px in any direction; the rest adds at most 14 px (module bound), in
    practice far less, at 640×480."""
    rng = np.random.default_rng(11)
    directions = []
    for _ in range(40):
        matrix = random_homography(rng, 480, 640, **LARGE_MOTION)
        flow, valid = homography_flow(matrix, 480, 640)
        magnitude = np.linalg.norm(flow, axis=-1)
        assert 48 - 14 <= magnitude.min() and magnitude.max() <= 88 + 14  # the analytic bound
        inside = (magnitude[valid] >= 40) & (magnitude[valid] <= 96)
        assert inside.mean() > 0.99 and 48 <= np.linalg.norm(_translation(matrix)) <= 88
        assert valid.mean() > 0.6  # an 88 px motion still leaves most of the frame scored
        directions.append(np.arctan2(*flow[240, 320][::-1]))
    assert np.ptp(np.cos(directions)) > 1.5 and np.ptp(np.sin(directions)) > 1.5  # all directions
    with pytest.raises(ValueError, match="min_translation"):
        random_homography(rng, 480, 640, max_translation=10, min_translation=20)


def _translation(matrix: np.ndarray, height: int = 480, width: int = 640) -> np.ndarray:
    """t of M = [[I, c + t], [0, 1]] · [[sR, 0], [gᵀ, 1]] · [[I, −c], [0, 1]]: M[:2, 2] + M[:2, :2]·c = c + t."""
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    return matrix[:2, 2] + matrix[:2, :2] @ c - c


def test_packaged_photographs_are_found_when_scikit_image_is_installed():
    pytest.importorskip("skimage", reason="scikit-image (which carries the photographs) not installed")
    photos = packaged_photographs()
    assert len(photos) >= 5 and all(p.is_file() for p in photos)


@pytest.mark.parametrize("method", CLASSICAL_METHODS)
def test_classical_baselines_recover_a_homography(photo, method):
    sample = PhotoMotionDataset(
        [photo], 1, height=128, width=160, seed=2, max_translation=4, max_rotation_deg=1
    )[0]
    rgb1, rgb2 = (sample[k].permute(1, 2, 0).numpy().astype(np.uint8) for k in ("image1", "image2"))
    estimator = OpenCVFlowEstimator(method)
    flow = estimator.estimate(rgb1, rgb2)
    gt = sample["flow"].permute(1, 2, 0).numpy()
    epe = np.linalg.norm(flow - gt, axis=-1)[sample["valid"].numpy()].mean()
    zero_epe = np.linalg.norm(gt, axis=-1)[sample["valid"].numpy()].mean()
    assert epe < 0.5 * zero_epe, (epe, zero_epe)
    half = estimator.estimate(rgb1, rgb2, output_size=(64, 80))
    assert half.shape == (64, 80, 2)
    np.testing.assert_allclose(np.median(half[..., 0]), np.median(flow[..., 0]) / 2, atol=0.3)


def test_unknown_classical_method():
    with pytest.raises(BackendError, match="unknown classical method"):
        OpenCVFlowEstimator("lucas_kanade")


# ---------------------------------------------------------------- flownet2-compare's photos_large set (#15)


@pytest.fixture(scope="module")
def large_set():
    pytest.importorskip("skimage", reason="scikit-image (which carries the photographs) not installed")
    from flownet2_ros.training.comparison import comparison_sets

    return comparison_sets(480, 640, 3, sets=["photos_large"])["photos_large"]


def test_photos_large_moves_the_evaluation_photographs_by_40_to_96_px(large_set):
    import cv2

    assert len(large_set) == 3
    for index in range(3):
        sample = large_set[index]
        flow, valid = sample["flow"], sample["valid"]
        magnitude = flow.norm(dim=0)[valid].numpy()
        assert 40 <= np.median(magnitude) <= 96 and ((magnitude >= 40) & (magnitude <= 96)).mean() > 0.99
        assert valid.float().mean() > 0.6
        # Out-of-frame targets are exactly the invalid pixels, as in the photos set.
        xs, ys = np.meshgrid(np.arange(640), np.arange(480))
        tx, ty = xs + flow[0].numpy(), ys + flow[1].numpy()
        assert np.array_equal(valid.numpy(), (tx >= 0) & (tx <= 639) & (ty >= 0) & (ty <= 479))
        # Frame 2 warped back by the exact flow is frame 1, away from the edges of the valid region: real
        # photographs, so bilinear resampling twice leaves more than on smooth texture, but far less than
        # the difference of the two frames.
        inner = (
            cv2.erode(valid.numpy().astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2, borderValue=0)
            > 0
        )
        warped = warp(sample["image2"][None], flow[None])[0]
        residual = (warped - sample["image1"]).abs().mean(0).numpy()[inner]
        unmoved = (sample["image2"] - sample["image1"]).abs().mean(0).numpy()[inner]
        assert residual.mean() < 4.0 and residual.mean() < 0.25 * unmoved.mean(), (
            sample["name"],
            residual.mean(),
            unmoved.mean(),
        )


def test_photos_large_is_deterministic_with_its_own_seed(large_set):
    from flownet2_ros.training.comparison import PHOTOS_LARGE_SEED_OFFSET, comparison_sets

    again = comparison_sets(480, 640, 3, sets=["photos_large"])["photos_large"]
    first = large_set[2]
    second = again[2]
    assert all(torch.equal(first[k], second[k]) for k in ("image1", "image2", "flow", "valid"))
    assert large_set.seed == 424242 + PHOTOS_LARGE_SEED_OFFSET
    # Never a training seed (0, 1, 2 and their validation seeds + 1000003), nor the photos set's.
    assert large_set.seed not in {0, 1, 2, 1000003, 1000004, 1000005, 424242}


def test_photos_large_uses_only_evaluation_photographs_disjoint_from_training(large_set):
    evaluation = {Path(name).stem for name in PACKAGED_PHOTO_NAMES}
    sequences = {large_set[i]["sequence"] for i in range(len(large_set))}
    assert sequences <= evaluation
    assert {name for name, _ in large_set._photos} == {p.stem for p in packaged_photographs()}
    training = packaged_training_photographs()
    assert training, (
        "the training pictures (scikit-image, matplotlib) should be installed with the dev extras"
    )
    scenes = {p.stem.split("_")[0] for p in training}
    assert not scenes & {name.split("_")[0] for name in evaluation}
    assert not {p.resolve() for p in training} & {p.resolve() for p in packaged_photographs()}


def test_comparison_sets_by_name():
    pytest.importorskip("skimage", reason="scikit-image (which carries the photographs) not installed")
    from flownet2_ros.training.comparison import SET_NAMES, comparison_sets

    assert SET_NAMES == ("synthetic", "photos", "photos_large")
    assert list(comparison_sets(96, 128, 2)) == list(SET_NAMES)
    assert list(comparison_sets(96, 128, 2, sets=["photos_large", "synthetic"])) == [
        "photos_large",
        "synthetic",
    ]
    with pytest.raises(ValueError, match="unknown evaluation set"):
        comparison_sets(96, 128, 2, sets=["kitti"])
    # The photos set keeps its law: same samples as a PhotoMotionDataset built the way it always was.
    photos = comparison_sets(96, 128, 2, seed=9, max_displacement=12.0, sets=["photos"])["photos"]
    reference = PhotoMotionDataset(packaged_photographs(), 2, 96, 128, seed=9, max_translation=8.0)
    assert torch.equal(photos[1]["flow"], reference[1]["flow"])
    assert torch.equal(photos[1]["image2"], reference[1]["image2"])
    # The large law scales with the frame: a quarter-size frame gets a quarter of the motion.
    small = comparison_sets(120, 160, 2, sets=["photos_large"])["photos_large"]
    magnitude = small[0]["flow"].norm(dim=0)[small[0]["valid"]]
    assert 10 <= magnitude.median() <= 24
