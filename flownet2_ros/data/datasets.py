"""Readers for the standard optical-flow datasets, as ``torch.utils.data.Dataset`` s.

Every item is a dict (the package's sample contract):

* ``image1``, ``image2``: float32 ``(3, H, W)`` RGB, values 0..255;
* ``flow``: float32 ``(2, H, W)``, (u, v) in pixels from image1 to image2; 0 where not valid;
* ``valid``: bool ``(H, W)``: all True for dense ground truth except where the flow is NaN/inf (or marked
  invalid by the dataset); KITTI's sparse mask;
* ``occlusion``: bool ``(H, W)``, only where the dataset provides it (Sintel training);
* ``name``: str naming the sample, e.g. ``"alley_1/frame_0001"``; ``sequence``: str, e.g. ``"alley_1"``.

Sets without ground truth (Sintel test, KITTI testing, folders without flow files) have no ``flow``/
``valid`` keys. The file lists are built (and checked) in the constructors, which raise
:class:`DatasetError` for a wrong root or missing files; files are read in ``__getitem__``.

Expected layouts (``<root>`` is what you pass):

* :class:`FlyingChairs`: ``<root>/data/NNNNN_img1.ppm``, ``NNNNN_img2.ppm``, ``NNNNN_flow.flo`` (the
  ``FlyingChairs_release`` folder, or its parent), split file ``FlyingChairs_train_val.txt`` (one line per
  sample in numeric order: 1 = training, 2 = validation) in ``<root>``, next to ``data/`` or in the parent.
* :class:`ChairsSDHom`: ``<root>/data/{train,test}/{t0,t1,flow}/NNNNN.{png,png,pfm}`` (or
  ``<root>/ChairsSDHom/data/...``). The PFM flow is read like FlyingThings3D's: rows stored bottom-to-top
  (flipped on reading), channels 0 and 1 are u (rightward) and v (downward); a third channel is ignored.
  No sign change is applied: this is the convention public ChairsSDHom readers use, not a documented
  guarantee. Some files contain NaNs (e.g. ``train/flow/08755.pfm``); those pixels are marked invalid.
* :class:`FlyingThings3D`: ``<root>/frames_{clean,final}pass/{TRAIN,TEST}/{A,B,C}/NNNN/{left,right}/NNNN.png``
  and ``<root>/optical_flow/{TRAIN,TEST}/{A,B,C}/NNNN/{into_future,into_past}/{left,right}/
  OpticalFlowInto{Future,Past}_NNNN_{L,R}.pfm`` (the full release; not the "DispNet/FlowNet2.0 subset").
  Forward pairs are (frame i, frame i+1) with ``into_future`` flow of frame i; backward pairs are
  (frame i+1, frame i) with ``into_past`` flow of frame i+1.
* :class:`MpiSintel`: ``<root>/{training,test}/{clean,final}/<scene>/frame_NNNN.png``,
  ``<root>/training/flow/<scene>/frame_NNNN.flo`` (flow from frame N to N+1), optional
  ``<root>/training/occlusions/<scene>/frame_NNNN.png`` (white = occluded) and
  ``<root>/training/invalid/<scene>/frame_NNNN.png`` (white = no valid ground truth).
* :class:`KittiFlow`: 2012: ``<root>/{training,testing}/colored_0/NNNNNN_{10,11}.png``; 2015:
  ``<root>/{training,testing}/image_2/NNNNNN_{10,11}.png``; ground truth
  ``<root>/training/flow_{occ,noc}/NNNNNN_10.png`` (16-bit KITTI PNG with validity mask).
* :class:`FlowFolder`: any folder (searched recursively) of ``X_img1.<ext>``, ``X_img2.<ext>`` and an
  optional ``X_flow.{flo,pfm,png}`` (``.png`` = KITTI 16-bit format) and ``X_occ.png``; or a list file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from ..flowio import FlowFormatError, read_flo, read_kitti_flow, read_pfm
from ..flowio.frames import IMAGE_SUFFIXES, read_rgb
from .errors import DatasetError

__all__ = [
    "ChairsSDHom",
    "DatasetError",
    "FlowDataset",
    "FlowFolder",
    "FlyingChairs",
    "FlyingThings3D",
    "Kitti2012",
    "Kitti2015",
    "KittiFlow",
    "MpiSintel",
    "PairRecord",
    "read_flow_file",
    "read_mask",
    "to_sample",
]

Transform = Callable[[dict[str, Any]], dict[str, Any]]
PathLike = str | os.PathLike[str]
_MAX_LISTED = 3  # missing files named in an error message


# ------------------------------------------------------------------------------------------- file access


def read_flow_file(path: PathLike, fmt: str | None = None) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Read a flow file as ``(flow (H, W, 2) float32, valid (H, W) bool)``.

    ``fmt`` is ``"flo"``, ``"pfm"`` or ``"kitti"`` (16-bit PNG); None picks it from the suffix (``.png`` is
    KITTI). Non-finite flow values are invalid and set to 0. A PFM needs at least two channels.
    """
    path = Path(path)
    fmt = fmt or {".flo": "flo", ".pfm": "pfm", ".png": "kitti"}.get(path.suffix.lower())
    valid: NDArray[np.bool_]
    if fmt == "flo":
        flow = read_flo(path)
        valid = np.ones(flow.shape[:2], dtype=bool)
    elif fmt == "pfm":
        array, _ = read_pfm(path)
        if array.ndim != 3 or array.shape[2] < 2:
            raise FlowFormatError(f"{path}: PFM of shape {array.shape} has no (u, v) channels")
        flow = np.ascontiguousarray(array[..., :2])
        valid = np.ones(flow.shape[:2], dtype=bool)
    elif fmt == "kitti":
        flow, valid = read_kitti_flow(path)
    else:
        raise DatasetError(f"{path}: unknown flow format (expected .flo, .pfm or a KITTI .png)")
    finite: NDArray[np.bool_] = np.asarray(np.isfinite(flow).all(axis=2), dtype=bool)
    if not finite.all():
        flow = np.where(finite[..., None], flow, np.float32(0.0)).astype(np.float32)
        valid = np.logical_and(valid, finite)
    return flow, valid


def read_mask(path: PathLike) -> NDArray[np.bool_]:
    """Read an 8-bit mask image (e.g. Sintel occlusions): True where the pixel is brighter than 127."""
    import cv2

    data = np.fromfile(Path(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise DatasetError(f"{path}: not a readable mask image")
    return np.asarray(image) > 127


def to_sample(
    image1: NDArray[np.uint8] | NDArray[np.float32],
    image2: NDArray[np.uint8] | NDArray[np.float32],
    name: str,
    sequence: str,
    flow: NDArray[np.float32] | None = None,
    valid: NDArray[np.bool_] | None = None,
    occlusion: NDArray[np.bool_] | None = None,
) -> dict[str, Any]:
    """Build a sample dict from ``(H, W, 3)`` RGB images and ``(H, W, 2)`` flow (numpy, HWC)."""

    def chw(array: NDArray[Any]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))

    sample: dict[str, Any] = {"image1": chw(image1), "image2": chw(image2)}
    if flow is not None:
        sample["flow"] = chw(flow)
        mask = np.ones(flow.shape[:2], dtype=bool) if valid is None else valid
        sample["valid"] = torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))
    if occlusion is not None:
        sample["occlusion"] = torch.from_numpy(np.ascontiguousarray(occlusion, dtype=bool))
    sample["name"] = name
    sample["sequence"] = sequence
    return sample


@dataclass(frozen=True)
class PairRecord:
    """Where the files of one sample are. ``flow_format``: ``"flo"``, ``"pfm"``, ``"kitti"`` or None (from
    the suffix, see :func:`read_flow_file`)."""

    image1: Path
    image2: Path
    name: str
    sequence: str
    flow: Path | None = None
    flow_format: str | None = None
    occlusion: Path | None = None
    invalid: Path | None = None


def _missing_error(dataset: str, what: str, missing: Sequence[Path]) -> DatasetError:
    listed = ", ".join(str(p) for p in missing[:_MAX_LISTED])
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return DatasetError(f"{dataset}: {len(missing)} {what} missing: {listed}{more}")


def _choices(value: str | Sequence[str], allowed: Sequence[str], option: str, dataset: str) -> list[str]:
    """Normalise an option that takes one value, a list of values, or "both"/"all"."""
    if isinstance(value, str):
        values = list(allowed) if value.lower() in ("both", "all") else [value]
    else:
        values = list(value)
    out = []
    for v in values:
        if v.lower() not in allowed:
            raise ValueError(
                f"{dataset}: {option} must be one of {', '.join(allowed)} (or 'both'), got {v!r}"
            )
        if v.lower() not in out:
            out.append(v.lower())
    if not out:
        raise ValueError(f"{dataset}: {option} is empty")
    return out


def _frame_number(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


# ----------------------------------------------------------------------------------------- base dataset


class FlowDataset(Dataset[dict[str, Any]]):
    """A list of :class:`PairRecord` read on demand; the readers below are thin subclasses.

    Args:
        records: the samples.
        transform: optional callable applied to every sample dict (e.g. an augmentation).
        label: the dataset's name in messages and :meth:`describe`.
        options: ``key=value`` settings shown by :meth:`describe`.
        root: the dataset root shown by :meth:`describe`.
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        transform: Transform | None = None,
        label: str = "FlowDataset",
        options: dict[str, Any] | None = None,
        root: PathLike | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.label = label
        self.options = dict(options or {})
        self.root = Path(root) if root is not None else None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_flow(self) -> bool:
        """Whether the samples carry ground truth (``flow``/``valid`` keys)."""
        return bool(self.records) and self.records[0].flow is not None

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.options.items())
        where = f" at {self.root}" if self.root is not None else ""
        gt = "with ground truth" if self.has_flow else "without ground truth"
        sequences = len({r.sequence for r in self.records})
        return f"{self.label}({settings}){where}: {len(self)} pairs in {sequences} sequences, {gt}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def load(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` without the transform."""
        record = self.records[index]
        image1 = read_rgb(record.image1)
        image2 = read_rgb(record.image2)
        if image1.shape != image2.shape:
            raise DatasetError(
                f"{self.label}: frames differ in size: {record.image1} is {image1.shape[1]}x{image1.shape[0]}, "
                f"{record.image2} is {image2.shape[1]}x{image2.shape[0]}"
            )
        flow = valid = occlusion = None
        size = image1.shape[:2]
        if record.flow is not None:
            flow, valid = read_flow_file(record.flow, record.flow_format)
            if flow.shape[:2] != size:
                raise DatasetError(
                    f"{self.label}: flow {record.flow} is {flow.shape[1]}x{flow.shape[0]} but image "
                    f"{record.image1} is {size[1]}x{size[0]}"
                )
            if record.invalid is not None:
                valid = valid & ~self._mask(record.invalid, size)
                flow[~valid] = 0.0
        if record.occlusion is not None:
            occlusion = self._mask(record.occlusion, size)
        return to_sample(image1, image2, record.name, record.sequence, flow, valid, occlusion)

    def _mask(self, path: Path, size: tuple[int, ...]) -> NDArray[np.bool_]:
        mask = read_mask(path)
        if mask.shape != size:
            raise DatasetError(
                f"{self.label}: mask {path} is {mask.shape[1]}x{mask.shape[0]}, expected {size[1]}x{size[0]}"
            )
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.label}: index {index} out of range for {len(self)} samples")
        sample = self.load(index % len(self))
        return self.transform(sample) if self.transform is not None else sample


# -------------------------------------------------------------------------------------------- FlyingChairs


class FlyingChairs(FlowDataset):
    """FlyingChairs (Dosovitskiy et al. 2015): 22 872 pairs of 512×384, ``.ppm`` images, ``.flo`` flow.

    Args:
        root: the ``FlyingChairs_release`` folder (holding ``data/``) or its parent.
        split: ``"train"`` (lines marked 1 in the split file), ``"val"`` (2) or ``"all"`` (no split file needed).
        split_file: explicit path of ``FlyingChairs_train_val.txt``; by default looked for in the root,
            next to ``data/`` and in the parent folder.
        transform: optional callable applied to each sample.

    Names are the five-digit sample numbers (``"00001"``); each sample is its own sequence.
    """

    SPLIT_FILE = "FlyingChairs_train_val.txt"

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        split_file: PathLike | None = None,
        transform: Transform | None = None,
    ) -> None:
        label = "FlyingChairs"
        if split not in ("train", "val", "all"):
            raise ValueError(f"{label}: split must be 'train', 'val' or 'all', got {split!r}")
        root = Path(root)
        base = next(
            (d for d in (root, root / "FlyingChairs_release") if any((d / "data").glob("*_img1.ppm"))), None
        )
        if base is None:
            raise DatasetError(
                f"{label}: expected {root}/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo ... "
                f"(FlyingChairs_release layout, or {root}/FlyingChairs_release/data/...) and "
                f"{self.SPLIT_FILE}; found no *_img1.ppm under {root}/data"
            )
        data = base / "data"
        numbered = []
        for img1 in data.glob("*_img1.ppm"):
            stem = img1.name[: -len("_img1.ppm")]
            if stem.isdigit():
                numbered.append((int(stem), stem))
        numbered.sort()
        missing = []
        records = []
        for _, stem in numbered:
            img2, flow = data / f"{stem}_img2.ppm", data / f"{stem}_flow.flo"
            missing += [p for p in (img2, flow) if not p.is_file()]
            records.append(PairRecord(data / f"{stem}_img1.ppm", img2, stem, stem, flow, "flo"))
        if missing:
            raise _missing_error(label, "files of the pairs listed by *_img1.ppm are", missing)
        if split != "all":
            candidates = (
                [Path(split_file)]
                if split_file is not None
                else [root / self.SPLIT_FILE, base / self.SPLIT_FILE, base.parent / self.SPLIT_FILE]
            )
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise DatasetError(
                    f"{label}: split {split!r} needs {self.SPLIT_FILE} (one line per sample: 1 = train, "
                    f"2 = val); looked at {', '.join(str(p) for p in dict.fromkeys(candidates))}; "
                    "use split='all' to read every sample"
                )
            marks = found.read_text().split()
            if len(marks) != len(records) or any(m not in ("1", "2") for m in marks):
                raise DatasetError(
                    f"{label}: {found} has {len(marks)} entries (each must be 1 or 2) but {data} holds "
                    f"{len(records)} samples: they must match one to one"
                )
            keep = "1" if split == "train" else "2"
            records = [r for r, m in zip(records, marks, strict=True) if m == keep]
        super().__init__(records, transform, label, {"split": split}, base)


# --------------------------------------------------------------------------------------------- ChairsSDHom


class ChairsSDHom(FlowDataset):
    """ChairsSDHom (Ilg et al. 2017): small-displacement chairs, ``.png`` frames, ``.pfm`` flow.

    Args:
        root: the folder holding ``data/`` (``ChairsSDHom``) or its parent.
        split: ``"train"`` or ``"test"``.
        transform: optional callable applied to each sample.

    Names are ``"<split>/<number>"``; each sample is its own sequence. See the module docstring for the
    flow convention assumed.
    """

    def __init__(self, root: PathLike, split: str = "train", transform: Transform | None = None) -> None:
        label = "ChairsSDHom"
        if split not in ("train", "test"):
            raise ValueError(f"{label}: split must be 'train' or 'test', got {split!r}")
        root = Path(root)
        base = next(
            (
                d
                for d in (root / "data" / split, root / "ChairsSDHom" / "data" / split)
                if (d / "t0").is_dir()
            ),
            None,
        )
        if base is None:
            raise DatasetError(
                f"{label}: expected {root}/data/{split}/t0/00000.png, {root}/data/{split}/t1/00000.png and "
                f"{root}/data/{split}/flow/00000.pfm (ChairsSDHom layout); found no {root}/data/{split}/t0 "
                f"(nor {root}/ChairsSDHom/data/{split}/t0)"
            )
        frames = sorted(base.glob("t0/*.png"))
        if not frames:
            raise DatasetError(f"{label}: {base / 't0'} holds no .png frames")
        records, missing = [], []
        for img1 in frames:
            img2, flow = base / "t1" / img1.name, base / "flow" / f"{img1.stem}.pfm"
            missing += [p for p in (img2, flow) if not p.is_file()]
            name = f"{split}/{img1.stem}"
            records.append(PairRecord(img1, img2, name, name, flow, "pfm"))
        if missing:
            raise _missing_error(label, "files of the pairs listed by t0/*.png are", missing)
        super().__init__(records, transform, label, {"split": split}, base.parent.parent)


# ------------------------------------------------------------------------------------------ FlyingThings3D


class FlyingThings3D(FlowDataset):
    """FlyingThings3D (Mayer et al. 2016), full release: ``.png`` frames and ``.pfm`` flow.

    Args:
        root: the folder holding ``frames_cleanpass``/``frames_finalpass`` and ``optical_flow``.
        pass_name: ``"clean"``, ``"final"`` or ``"both"`` (or a list).
        split: ``"train"`` or ``"test"`` (the ``TRAIN``/``TEST`` folders).
        camera: ``"left"``, ``"right"`` or ``"both"``.
        direction: ``"forward"`` (frame i -> i+1, ``into_future``), ``"backward"`` (i+1 -> i, ``into_past``)
            or ``"both"``.
        exclude: sample names to leave out (e.g. known bad frames).
        transform: optional callable applied to each sample.

    Names are ``"<pass>/<SPLIT>/<letter>/<NNNN>/<camera>/<frame of image1>-<frame of image2>"``; the
    sequence is everything before the last ``/``.
    """

    def __init__(
        self,
        root: PathLike,
        pass_name: str | Sequence[str] = "clean",
        split: str = "train",
        camera: str | Sequence[str] = "left",
        direction: str | Sequence[str] = "forward",
        exclude: Iterable[str] = (),
        transform: Transform | None = None,
    ) -> None:
        label = "FlyingThings3D"
        if split.lower() not in ("train", "test"):
            raise ValueError(f"{label}: split must be 'train' or 'test', got {split!r}")
        passes = _choices(pass_name, ("clean", "final"), "pass_name", label)
        cameras = _choices(camera, ("left", "right"), "camera", label)
        directions = _choices(direction, ("forward", "backward"), "direction", label)
        excluded = set(exclude)
        root = Path(root)
        split_dir = split.upper()
        flow_root = root / "optical_flow" / split_dir
        example = (
            f"{root}/frames_{passes[0]}pass/{split_dir}/A/0000/{cameras[0]}/0006.png and "
            f"{root}/optical_flow/{split_dir}/A/0000/into_future/{cameras[0]}/OpticalFlowIntoFuture_0006_"
            f"{cameras[0][0].upper()}.pfm"
        )
        records: list[PairRecord] = []
        missing: list[Path] = []
        for pss in passes:
            frames_root = root / f"frames_{pss}pass" / split_dir
            if not frames_root.is_dir() or not flow_root.is_dir():
                absent = frames_root if not frames_root.is_dir() else flow_root
                raise DatasetError(
                    f"{label}: expected {example} (full FlyingThings3D layout); {absent} does not exist"
                )
            for seq_dir in sorted(p for p in frames_root.glob("*/*") if p.is_dir()):
                letter, number = seq_dir.parent.name, seq_dir.name
                for cam in cameras:
                    frames = {
                        n: p for p in (seq_dir / cam).glob("*.png") if (n := _frame_number(p)) is not None
                    }
                    sequence = f"{pss}/{split_dir}/{letter}/{number}/{cam}"
                    suffix = cam[0].upper()
                    flow_dir = flow_root / letter / number
                    for n in sorted(frames):
                        if n + 1 not in frames:
                            continue
                        for d in directions:
                            if d == "forward":
                                first, second = n, n + 1
                                flow = (
                                    flow_dir
                                    / "into_future"
                                    / cam
                                    / f"OpticalFlowIntoFuture_{n:04d}_{suffix}.pfm"
                                )
                            else:
                                first, second = n + 1, n
                                flow = (
                                    flow_dir
                                    / "into_past"
                                    / cam
                                    / f"OpticalFlowIntoPast_{n + 1:04d}_{suffix}.pfm"
                                )
                            name = f"{sequence}/{first:04d}-{second:04d}"
                            if name in excluded:
                                continue
                            if not flow.is_file():
                                missing.append(flow)
                            records.append(
                                PairRecord(frames[first], frames[second], name, sequence, flow, "pfm")
                            )
        if missing:
            raise _missing_error(label, "flow files are", missing)
        if not records:
            raise DatasetError(
                f"{label}: expected {example} (full FlyingThings3D layout); found no frame pairs"
            )
        options = {
            "pass": "+".join(passes),
            "split": split_dir,
            "camera": "+".join(cameras),
            "direction": "+".join(directions),
        }
        super().__init__(records, transform, label, options, root)


# ---------------------------------------------------------------------------------------------- MPI-Sintel


class MpiSintel(FlowDataset):
    """MPI-Sintel (Butler et al. 2012): 1024×436 frames per scene, ``.flo`` flow, occlusion masks.

    Args:
        root: the ``MPI-Sintel-complete`` folder holding ``training/`` and ``test/``.
        split: ``"training"`` (or ``"train"``) or ``"test"`` (no ground truth: no flow/valid keys).
        pass_name: ``"clean"``, ``"final"`` or ``"both"`` (or a list).
        scenes: optional subset of scene names.
        transform: optional callable applied to each sample.

    Names are ``"<scene>/frame_NNNN"`` (the first frame of the pair; prefixed with ``"<pass>/"`` when more
    than one pass is read) and the sequence is the scene (likewise prefixed). Training samples carry
    ``occlusion`` when ``training/occlusions`` exists, and ``valid`` excludes ``training/invalid`` pixels when
    that folder exists.
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "training",
        pass_name: str | Sequence[str] = "clean",
        scenes: Iterable[str] | None = None,
        transform: Transform | None = None,
    ) -> None:
        label = "MPI-Sintel"
        split = {"train": "training", "training": "training", "test": "test"}.get(split, "")
        if not split:
            raise ValueError(f"{label}: split must be 'training' or 'test'")
        passes = _choices(pass_name, ("clean", "final"), "pass_name", label)
        wanted = set(scenes) if scenes is not None else None
        root = Path(root)
        records: list[PairRecord] = []
        missing: list[Path] = []
        for pss in passes:
            pass_dir = root / split / pss
            if not pass_dir.is_dir():
                raise DatasetError(
                    f"{label}: expected {root}/{split}/{pss}/<scene>/frame_0001.png"
                    + (f" and {root}/training/flow/<scene>/frame_0001.flo" if split == "training" else "")
                    + f" (MPI-Sintel-complete layout); {pass_dir} does not exist"
                )
            for scene_dir in sorted(p for p in pass_dir.iterdir() if p.is_dir()):
                scene = scene_dir.name
                if wanted is not None and scene not in wanted:
                    continue
                frames = {n: p for p in scene_dir.glob("frame_*.png") if (n := _frame_number(p)) is not None}
                prefix = f"{pss}/" if len(passes) > 1 else ""
                for n in sorted(frames):
                    if n + 1 not in frames:
                        continue
                    stem = f"frame_{n:04d}"
                    flow = occ = inv = None
                    if split == "training":
                        flow = root / "training" / "flow" / scene / f"{stem}.flo"
                        if not flow.is_file():
                            missing.append(flow)
                        occ_dir = root / "training" / "occlusions" / scene
                        if occ_dir.is_dir():
                            occ = occ_dir / f"{stem}.png"
                            if not occ.is_file():
                                missing.append(occ)
                        inv_dir = root / "training" / "invalid" / scene
                        if inv_dir.is_dir() and (inv_dir / f"{stem}.png").is_file():
                            inv = inv_dir / f"{stem}.png"
                    records.append(
                        PairRecord(
                            frames[n],
                            frames[n + 1],
                            f"{prefix}{scene}/{stem}",
                            f"{prefix}{scene}",
                            flow,
                            "flo",
                            occ,
                            inv,
                        )
                    )
        if missing:
            raise _missing_error(label, "ground-truth files are", missing)
        if not records:
            raise DatasetError(
                f"{label}: expected {root}/{split}/{passes[0]}/<scene>/frame_0001.png, frame_0002.png ...; "
                "found no consecutive frames"
            )
        super().__init__(records, transform, label, {"split": split, "pass": "+".join(passes)}, root)


# --------------------------------------------------------------------------------------------------- KITTI


class KittiFlow(FlowDataset):
    """KITTI 2012 / 2015 optical flow: frames ``_10`` -> ``_11``, sparse 16-bit PNG ground truth.

    Args:
        root: the folder holding ``training/`` and ``testing/``.
        year: 2012 (``colored_0``) or 2015 (``image_2``); None detects it from the folders present.
        split: ``"training"`` (or ``"train"``) or ``"testing"`` (or ``"test"``; no ground truth).
        flow_type: ``"occ"`` (all pixels with ground truth) or ``"noc"`` (non-occluded only).
        transform: optional callable applied to each sample.

    Names are the six-digit pair numbers (``"000000"``), each its own sequence. ``valid`` is the file's mask.
    """

    IMAGE_DIRS: ClassVar[dict[int, str]] = {2012: "colored_0", 2015: "image_2"}

    def __init__(
        self,
        root: PathLike,
        year: int | None = None,
        split: str = "training",
        flow_type: str = "occ",
        transform: Transform | None = None,
    ) -> None:
        split = {"train": "training", "training": "training", "test": "testing", "testing": "testing"}.get(
            split, ""
        )
        if not split:
            raise ValueError("KITTI: split must be 'training' or 'testing'")
        if flow_type not in ("occ", "noc"):
            raise ValueError(f"KITTI: flow_type must be 'occ' or 'noc', got {flow_type!r}")
        root = Path(root)
        if year is None:
            found = [y for y, d in self.IMAGE_DIRS.items() if (root / split / d).is_dir()]
            if len(found) != 1:
                raise DatasetError(
                    f"KITTI: cannot tell the year: expected exactly one of {root}/{split}/colored_0 (2012) and "
                    f"{root}/{split}/image_2 (2015), found {len(found)}; pass year="
                )
            year = found[0]
        if year not in self.IMAGE_DIRS:
            raise ValueError(f"KITTI: year must be 2012 or 2015, got {year}")
        label = f"KITTI{year}"
        image_dir = root / split / self.IMAGE_DIRS[year]
        flow_dir = root / "training" / f"flow_{flow_type}"
        expected = f"{image_dir}/000000_10.png, 000000_11.png" + (
            f" and {flow_dir}/000000_10.png" if split == "training" else ""
        )
        frames = sorted(image_dir.glob("*_10.png"))
        if not frames:
            raise DatasetError(
                f"{label}: expected {expected} (KITTI {year} flow layout); found no *_10.png in {image_dir}"
            )
        if split == "training" and not flow_dir.is_dir():
            raise DatasetError(f"{label}: expected {expected}; {flow_dir} does not exist")
        records, missing = [], []
        for img1 in frames:
            stem = img1.name[: -len("_10.png")]
            img2 = image_dir / f"{stem}_11.png"
            flow = flow_dir / img1.name if split == "training" else None
            missing += [p for p in (img2, flow) if p is not None and not p.is_file()]
            records.append(PairRecord(img1, img2, stem, stem, flow, "kitti"))
        if missing:
            raise _missing_error(label, "files of the pairs listed by *_10.png are", missing)
        options = {"split": split} | ({"flow": flow_type} if split == "training" else {})
        super().__init__(records, transform, label, options, root)


class Kitti2012(KittiFlow):
    """:class:`KittiFlow` with ``year=2012``."""

    def __init__(
        self,
        root: PathLike,
        split: str = "training",
        flow_type: str = "occ",
        transform: Transform | None = None,
    ) -> None:
        super().__init__(root, 2012, split, flow_type, transform)


class Kitti2015(KittiFlow):
    """:class:`KittiFlow` with ``year=2015``."""

    def __init__(
        self,
        root: PathLike,
        split: str = "training",
        flow_type: str = "occ",
        transform: Transform | None = None,
    ) -> None:
        super().__init__(root, 2015, split, flow_type, transform)


# ----------------------------------------------------------------------------------------------- folders


class FlowFolder(FlowDataset):
    """Pairs from a folder of your own.

    Without ``list_file``, ``root`` is searched recursively for ``X_img1.<ext>`` (any image suffix); each
    needs ``X_img2.<ext>`` (same suffix) and, optionally, ``X_flow.flo``, ``X_flow.pfm`` or ``X_flow.png``
    (KITTI 16-bit format) and ``X_occ.png`` (white = occluded). Either every pair has a flow file or none
    has (a test set). The name is ``X``'s path relative to ``root``; the sequence is its folder (``"."`` at
    the top).

    With ``list_file``, each non-empty line not starting with ``#`` is ``image1 image2 [flow [occlusion]]``
    (whitespace-separated paths, relative to ``root``); the name is image1's path without suffix.

    Args:
        root: the folder.
        list_file: optional list file (absolute, or relative to ``root``).
        transform: optional callable applied to each sample.
    """

    def __init__(
        self, root: PathLike, list_file: PathLike | None = None, transform: Transform | None = None
    ) -> None:
        label = "FlowFolder"
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{label}: {root} is not a folder")
        records: list[PairRecord] = []
        missing: list[Path] = []
        if list_file is not None:
            listing = Path(list_file) if Path(list_file).is_absolute() else root / list_file
            if not listing.is_file():
                raise DatasetError(f"{label}: list file {listing} not found")
            for number, line in enumerate(listing.read_text().splitlines(), 1):
                parts = line.split()
                if not parts or parts[0].startswith("#"):
                    continue
                if not 2 <= len(parts) <= 4:
                    raise DatasetError(
                        f"{label}: {listing}:{number}: expected 'image1 image2 [flow [occlusion]]', got {line!r}"
                    )
                paths = [root / p for p in parts]
                missing += [p for p in paths if not p.is_file()]
                rel = Path(parts[0]).with_suffix("")
                flow = paths[2] if len(paths) > 2 else None
                records.append(
                    PairRecord(
                        paths[0],
                        paths[1],
                        rel.as_posix(),
                        rel.parent.as_posix(),
                        flow,
                        None,
                        paths[3] if len(paths) > 3 else None,
                    )
                )
        else:
            for img1 in sorted(root.rglob("*_img1.*")):
                if img1.suffix.lower() not in IMAGE_SUFFIXES or not img1.is_file():
                    continue
                stem = img1.name[: -len(f"_img1{img1.suffix}")]
                img2 = img1.with_name(f"{stem}_img2{img1.suffix}")
                if not img2.is_file():
                    missing.append(img2)
                flows = [img1.with_name(f"{stem}_flow{s}") for s in (".flo", ".pfm", ".png")]
                flow = next((f for f in flows if f.is_file()), None)
                occ = img1.with_name(f"{stem}_occ.png")
                rel = img1.with_name(stem).relative_to(root)
                records.append(
                    PairRecord(
                        img1,
                        img2,
                        rel.as_posix(),
                        rel.parent.as_posix(),
                        flow,
                        None,
                        occ if occ.is_file() else None,
                    )
                )
        if missing:
            raise _missing_error(label, "files are", missing)
        if not records:
            raise DatasetError(
                f"{label}: expected pairs X_img1.png, X_img2.png (+ X_flow.flo) under {root}"
                + (f" or lines in {list_file}" if list_file is not None else "")
                + "; found none"
            )
        with_flow = [r.flow is not None for r in records]
        if any(with_flow) and not all(with_flow):
            lacking = [r.image1 for r in records if r.flow is None]
            raise DatasetError(
                f"{label}: {len(lacking)} of {len(records)} pairs have no flow file (X_flow.flo/.pfm/.png), e.g. "
                f"{lacking[0]}: give flow for every pair or for none"
            )
        super().__init__(records, transform, label, {"list": list_file} if list_file else {}, root)
