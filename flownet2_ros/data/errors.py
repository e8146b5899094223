"""The exception raised by the dataset readers."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset root is wrong, or files the dataset's layout requires are missing or inconsistent.

    The message names the dataset, the layout it expected (with an example path under the given root)
    and what was found, e.g.::

        FlyingChairs: expected <root>/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo ...
        (FlyingChairs_release layout); found no *_img1.ppm under /data/chairs/data

    Malformed files (a corrupt ``.flo``, ``.pfm`` or KITTI PNG) raise
    :class:`flownet2_ros.flowio.FlowFormatError` instead, also a ``ValueError``.
    """
