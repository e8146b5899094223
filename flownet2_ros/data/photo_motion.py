"""Real photographs under known synthetic motion: an evaluation set with exact ground truth.

Each sample takes a photograph, cuts frame 1 out of it and renders frame 2 by moving the camera with a
random homography close to identity (translation, rotation, scale, a little perspective) about the frame
centre. Frame 2 is sampled from the whole photograph, so content entering the view is real. The ground
truth flow of pixel p is ``M·p − p`` (dehomogenised), valid where ``M·p`` stays inside frame 2; pixels
whose target leaves the frame keep their exact flow but are marked invalid (not scored).

Two motion laws (``random_homography``): small motions near identity (a translation drawn in a box, the
``photos`` set of ``flownet2-compare``), and large motions (``LARGE_MOTION``: a dominant 48–88 px translation
in a random direction, the ``photos_large`` set).

Photographs come from any folder, or from the sample images that scikit-image's wheel carries
(``packaged_photographs``; public-domain/CC0 pictures per scikit-image's data documentation), read from
the installed package: nothing is downloaded or copied into this repository.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

# Photographs (not drawings, scans or microscopy) among scikit-image's bundled data files: the
# evaluation photographs of ``flownet2-compare``.
PACKAGED_PHOTO_NAMES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
)

# Pictures for *training* backgrounds, disjoint from the evaluation photographs above (no picture, and no
# other view of a pictured scene: motorcycle_right.png is left out): (package, path inside the package).
PACKAGED_TRAINING_PHOTOS = (
    ("skimage", "data/camera.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/clock_motion.png"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/retina.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def _package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed ``package`` (None when the package or the file is missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def packaged_photographs(names: Sequence[str] = PACKAGED_PHOTO_NAMES) -> list[Path]:
    """Paths of the evaluation photographs shipped in the installed scikit-image wheel (empty if not
    installed)."""
    found = (_package_file("skimage", f"data/{name}") for name in names)
    return [path for path in found if path is not None]


def packaged_training_photographs() -> list[Path]:
    """Paths of the training pictures (``PACKAGED_TRAINING_PHOTOS``) found in the installed packages."""
    found = (_package_file(package, relative) for package, relative in PACKAGED_TRAINING_PHOTOS)
    return [path for path in found if path is not None]


# The large-motion law of the ``photos_large`` evaluation set at 640×480 (keywords of ``random_homography``
# and ``PhotoMotionDataset``): a translation of length uniform in [48, 88] px in a uniformly random
# direction, rotation uniform in ±1°, scale 1 + uniform ±1 %, perspective terms uniform in ±1e-5 /px.
# Pixel p (c the frame centre, t the translation) moves by t + (s·R·(p − c)/w − (p − c)) with
# w = 1 + g·(p − c): the non-translational part is at most |p − c|·(|s − 1| + s·|θ| + s·|1/w − 1|) ≤ 14 px
# (|p − c| ≤ 400 px at 640×480, |1/w − 1| ≤ 0.0057), so every pixel moves by 34–102 px; measured over 300
# draws it is ≤ 8.3 px, every pixel moving by 42.8–93.4 px (median 66.6 px): all of it in [40, 96] px.
LARGE_MOTION: dict[str, float] = {
    "min_translation": 48.0,
    "max_translation": 88.0,
    "max_rotation_deg": 1.0,
    "max_scale": 0.01,
    "max_perspective": 1e-5,
}


def random_homography(
    rng: np.random.Generator,
    height: int,
    width: int,
    max_translation: float = 16.0,
    max_rotation_deg: float = 4.0,
    max_scale: float = 0.06,
    max_perspective: float = 4e-5,
    min_translation: float = 0.0,
) -> np.ndarray:
    """A 3×3 homography about the frame centre: frame-1 pixel p moves to M·p in frame 2.

    Rotation θ ~ U(±max_rotation_deg), scale s = 1 + U(±max_scale), perspective terms g ~ U(±max_perspective)
    each, about the frame centre, then a translation t. With ``min_translation`` 0, t's components are each
    U(±max_translation) (a box); with ``min_translation`` > 0, |t| ~ U(min_translation, max_translation) in a
    direction U(0, 2π) (a ring: every pair has a large motion). The draws are made in that order (θ, s, t,
    g), so the box law gives the same homographies as it always did for the same generator state.
    """
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = 1.0 + rng.uniform(-max_scale, max_scale)
    if min_translation > 0:
        if min_translation > max_translation:
            raise ValueError(f"min_translation {min_translation} > max_translation {max_translation}")
        length, direction = rng.uniform(min_translation, max_translation), rng.uniform(0.0, 2 * np.pi)
        tx, ty = length * np.cos(direction), length * np.sin(direction)
    else:
        tx, ty = rng.uniform(-max_translation, max_translation, 2)
    px, py = rng.uniform(-max_perspective, max_perspective, 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    to_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    from_centre = np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1]], np.float64)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    core = np.array([[cos, -sin, 0], [sin, cos, 0], [px, py, 1]], np.float64)
    return from_centre @ core @ to_centre


def homography_flow(matrix: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow (H, W, 2) float32 of ``matrix`` on the pixel grid and the mask of pixels that stay in view."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack((xs, ys, np.ones_like(xs)), axis=-1) @ matrix.T
    moved = points[..., :2] / points[..., 2:3]
    flow = (moved - np.stack((xs, ys), axis=-1)).astype(np.float32)
    valid = (
        (moved[..., 0] >= 0)
        & (moved[..., 0] <= width - 1)
        & (moved[..., 1] >= 0)
        & (moved[..., 1] <= height - 1)
    )
    return flow, valid


def render_pair(
    photo: np.ndarray, matrix: np.ndarray, height: int, width: int, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frame 1 = ``photo`` cropped at ``offset`` (y, x); frame 2 = the photo seen through ``matrix``."""
    import cv2

    oy, ox = offset
    frame1 = np.ascontiguousarray(photo[oy : oy + height, ox : ox + width])
    # frame2(q) = frame1(M⁻¹ q) = photo(M⁻¹ q + offset): one inverse-mapped warp of the whole photograph.
    shift = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], np.float64)
    source_from_frame2 = shift @ np.linalg.inv(matrix)
    frame2 = cv2.warpPerspective(
        photo,
        source_from_frame2,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return frame1, frame2


class PhotoMotionDataset(Dataset):
    """Pairs from photographs under random homographies; item ``i`` depends only on ``(seed, i)``.

    Items follow the dataset contract: ``image1``/``image2`` (3, H, W) float32 0..255, ``flow`` (2, H, W)
    pixels, ``valid`` (H, W) bool, ``name``, ``sequence`` (the photograph's name). The motion law is
    ``random_homography``'s with these keywords (``PhotoMotionDataset(..., **LARGE_MOTION)`` for large
    motions).
    """

    def __init__(
        self,
        photos: Sequence[str | Path],
        num_samples: int,
        height: int = 480,
        width: int = 640,
        seed: int = 0,
        max_translation: float = 16.0,
        max_rotation_deg: float = 4.0,
        max_scale: float = 0.06,
        max_perspective: float = 4e-5,
        min_translation: float = 0.0,
    ) -> None:
        from ..flowio.frames import read_rgb

        if not photos:
            raise ValueError("PhotoMotionDataset needs at least one photograph (is scikit-image installed?)")
        self.height, self.width, self.seed, self.num_samples = height, width, seed, num_samples
        self.motion = {
            "max_translation": max_translation,
            "max_rotation_deg": max_rotation_deg,
            "max_scale": max_scale,
            "max_perspective": max_perspective,
            "min_translation": min_translation,
        }
        margin = (
            int(np.ceil(max_translation + max(height, width) * (max_scale + np.deg2rad(max_rotation_deg))))
            + 8
        )
        self._margin = margin
        self._photos: list[tuple[str, np.ndarray]] = []
        for path in photos:
            image = read_rgb(path)
            self._photos.append(
                (Path(path).stem, self._cover(image, height + 2 * margin, width + 2 * margin))
            )

    @staticmethod
    def _cover(image: np.ndarray, height: int, width: int) -> np.ndarray:
        """Resize (keeping aspect) so that the image covers height×width."""
        import cv2

        scale = max(height / image.shape[0], width / image.shape[1])
        if scale <= 1.0:
            return image
        size = (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)

    def __len__(self) -> int:
        return self.num_samples

    def describe(self) -> str:
        names = ", ".join(name for name, _ in self._photos)
        return f"PhotoMotion: {self.num_samples} pairs {self.width}x{self.height} from {len(self._photos)} photos ({names})"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        name, photo = self._photos[index % len(self._photos)]
        max_y, max_x = photo.shape[0] - self.height - self._margin, photo.shape[1] - self.width - self._margin
        offset = (int(rng.integers(self._margin, max_y + 1)), int(rng.integers(self._margin, max_x + 1)))
        matrix = random_homography(rng, self.height, self.width, **self.motion)
        frame1, frame2 = render_pair(photo, matrix, self.height, self.width, offset)
        flow, valid = homography_flow(matrix, self.height, self.width)
        return {
            "image1": torch.from_numpy(frame1).permute(2, 0, 1).float(),
            "image2": torch.from_numpy(frame2).permute(2, 0, 1).float(),
            "flow": torch.from_numpy(flow).permute(2, 0, 1).contiguous(),
            "valid": torch.from_numpy(valid),
            "name": f"{name}_{index:04d}",
            "sequence": name,
        }
