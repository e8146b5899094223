"""Frame sources for offline tools: image files, a folder of images, or a video, as RGB uint8 arrays."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})


class FrameSourceError(ValueError):
    """An input image or video is missing, unreadable, or the frames cannot be paired."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB (grey and 16-bit images are converted)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FrameSourceError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # via bytes, so non-ASCII paths work everywhere
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise FrameSourceError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder in name order."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def count_frames(inputs: Sequence[str | Path]) -> int | None:
    """How many frames ``iter_frames(inputs)`` will yield, when known without decoding (None for videos
    whose container does not say)."""
    import cv2

    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        return len(list_images(inputs[0]))
    if len(inputs) == 1 and Path(inputs[0]).suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(inputs[0]))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        return count if count > 0 else None
    return len(inputs)


def iter_frames(inputs: Sequence[str | Path]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, rgb)`` for each frame of: two or more image files, one folder of images, or one video.

    Names are file stems, or ``frame_000123`` for video frames.
    """
    import cv2

    if not inputs:
        raise FrameSourceError("no input given")
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise FrameSourceError(f"input not found: {path}")
    if len(paths) == 1 and paths[0].is_dir():
        files = list_images(paths[0])
        if len(files) < 2:
            raise FrameSourceError(f"{paths[0]}: a folder needs at least two images, found {len(files)}")
        for file in files:
            yield file.stem, read_rgb(file)
    elif len(paths) == 1 and paths[0].suffix.lower() in IMAGE_SUFFIXES:
        raise FrameSourceError(
            f"{paths[0]}: one image gives no pair; give two or more images, a folder or a video"
        )
    elif len(paths) == 1:
        capture = cv2.VideoCapture(str(paths[0]))
        if not capture.isOpened():
            raise FrameSourceError(f"{paths[0]}: not a readable video")
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                yield f"frame_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()
        if index < 2:
            raise FrameSourceError(f"{paths[0]}: a video needs at least two frames, decoded {index}")
    else:
        for path in paths:
            if path.is_dir():
                raise FrameSourceError(f"{path} is a folder: give one folder alone, or image files")
            yield path.stem, read_rgb(path)


def iter_pairs(inputs: Sequence[str | Path]) -> Iterator[tuple[str, np.ndarray, str, np.ndarray]]:
    """Consecutive pairs ``(name1, rgb1, name2, rgb2)`` of ``iter_frames``; frames of a pair must match in size."""
    previous: tuple[str, np.ndarray] | None = None
    for name, frame in iter_frames(inputs):
        if previous is not None:
            if previous[1].shape != frame.shape:
                raise FrameSourceError(
                    f"frames {previous[0]} and {name} differ in size: "
                    f"{previous[1].shape[1]}x{previous[1].shape[0]} vs {frame.shape[1]}x{frame.shape[0]}"
                )
            yield previous[0], previous[1], name, frame
        previous = (name, frame)
