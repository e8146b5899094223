"""Datasets (FlyingChairs, ChairsSDHom, FlyingThings3D, Sintel, KITTI, folders), the synthetic generator and augmentation.

Every dataset is a ``torch.utils.data.Dataset`` whose items are dicts: ``image1``/``image2`` float32
``(3, H, W)`` RGB 0..255, ``flow`` float32 ``(2, H, W)`` (u, v pixels, image1 -> image2), ``valid`` bool
``(H, W)``, optionally ``occlusion`` bool ``(H, W)``, ``name`` and ``sequence`` strings. Sets without ground
truth have no ``flow``/``valid``. See :mod:`.datasets`, :mod:`.synthetic` (with :mod:`.camera_effects`) and
:mod:`.augment`.
"""

from .augment import CenterCrop, Compose, FlowAugmentation, Resize, apply_transforms
from .camera_effects import CameraEffects
from .datasets import (
    ChairsSDHom,
    FlowDataset,
    FlowFolder,
    FlyingChairs,
    FlyingThings3D,
    Kitti2012,
    Kitti2015,
    KittiFlow,
    MpiSintel,
    PairRecord,
    read_flow_file,
    read_mask,
    to_sample,
)
from .errors import DatasetError
from .photo_motion import PhotoMotionDataset, packaged_photographs, packaged_training_photographs
from .synthetic import SyntheticFlowDataset, SyntheticScene, render_scene

__all__ = [
    "CameraEffects",
    "CenterCrop",
    "ChairsSDHom",
    "Compose",
    "DatasetError",
    "FlowAugmentation",
    "FlowDataset",
    "FlowFolder",
    "FlyingChairs",
    "FlyingThings3D",
    "Kitti2012",
    "Kitti2015",
    "KittiFlow",
    "MpiSintel",
    "PairRecord",
    "PhotoMotionDataset",
    "Resize",
    "SyntheticFlowDataset",
    "SyntheticScene",
    "apply_transforms",
    "packaged_photographs",
    "packaged_training_photographs",
    "read_flow_file",
    "read_mask",
    "render_scene",
    "to_sample",
]
