"""Photographs under known homographies (evaluation ground truth) and the OpenCV baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flownet2_ros.backends.base import BackendError
from flownet2_ros.backends.opencv_backend import CLASSICAL_METHODS, OpenCVFlowEstimator
from flownet2_ros.data.photo_motion import (
    PhotoMotionDataset,
    homography_flow,
    packaged_photographs,
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
