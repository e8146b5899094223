"""Optical-flow file formats and visualisation (numpy only; OpenCV is imported lazily for PNG).

* Middlebury ``.flo``: :func:`read_flo`, :func:`write_flo`
* PFM (FlyingThings3D): :func:`read_pfm`, :func:`write_pfm`, :func:`read_pfm_flow`
* KITTI 16-bit PNG: :func:`read_kitti_flow`, :func:`write_kitti_flow`
* Colour coding: :func:`flow_to_color`, :func:`make_colorwheel`, :func:`flow_magnitude`

Flow arrays are ``(H, W, 2)``: ``[..., 0]`` is u (rightward), ``[..., 1]`` is v (downward), in pixels.
Malformed files and arrays raise :class:`FlowFormatError` (a ``ValueError``).
"""

from .errors import FlowFormatError
from .flo import FLO_MAGIC, MAX_DIMENSION, read_flo, write_flo
from .kitti import KITTI_FLOW_MAX, KITTI_FLOW_MIN, read_kitti_flow, write_kitti_flow
from .pfm import read_pfm, read_pfm_flow, write_pfm
from .visualize import COLORWHEEL_SEGMENTS, flow_magnitude, flow_to_color, make_colorwheel

__all__ = [
    "COLORWHEEL_SEGMENTS",
    "FLO_MAGIC",
    "KITTI_FLOW_MAX",
    "KITTI_FLOW_MIN",
    "MAX_DIMENSION",
    "FlowFormatError",
    "flow_magnitude",
    "flow_to_color",
    "make_colorwheel",
    "read_flo",
    "read_kitti_flow",
    "read_pfm",
    "read_pfm_flow",
    "write_flo",
    "write_kitti_flow",
    "write_pfm",
]
