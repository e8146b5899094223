"""Data sets by name for training and evaluation, and the deterministic, resumable sampling of training data.

``build_dataset(name, root, split, **options)`` resolves a name to a class of ``flownet2_ros.data``:
``synthetic`` (SyntheticFlowDataset), ``FlyingChairs``, ``ChairsSDHom``, ``FlyingThings3D``, ``Sintel``,
``KITTI``, ``FlowFolder`` (case-insensitive). Every item is a dict: ``image1``, ``image2`` float32 (3, H, W)
RGB 0..255, ``flow`` float32 (2, H, W) px, ``valid`` bool (H, W), ``name``, ``sequence``.

Training draws sample ``(epoch, index)`` for global position ``g``: ``epoch = g // N`` and ``index`` the
``g % N``-th entry of a permutation seeded by (seed, epoch). Step ``s`` of rank ``r`` of ``W`` takes
positions ``(s·W + r)·b … + b − 1`` (b = per-rank batch). Before a sample is loaded and augmented, the
``random``, numpy and torch RNGs are seeded from (seed, epoch, index), so a batch depends on nothing but
its step: resuming is exact and the number of loader workers does not change the data.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..data.errors import DatasetError as _DataError

DATASET_NAMES: dict[str, tuple[str, ...]] = {
    "synthetic": ("SyntheticFlowDataset", "SyntheticFlow"),
    "flyingchairs": ("FlyingChairs",),
    "chairssdhom": ("ChairsSDHom",),
    "flyingthings3d": ("FlyingThings3D", "FlyingThings"),
    "sintel": ("MpiSintel", "Sintel"),
    "kitti": ("KittiFlow", "KITTI", "Kitti"),
    "kitti2012": ("Kitti2012",),
    "kitti2015": ("Kitti2015",),
    "flowfolder": ("FlowFolder",),
}
_OPTION_ALIASES = {"pass": "pass_name", "pass_": "pass_name", "dstype": "pass_name"}
HELD_OUT_SPLIT = {"flyingchairs": "val", "chairssdhom": "test", "flyingthings3d": "test"}
"""The split a training run on this data set validates on by default (others need data.val)."""


class DatasetError(_DataError):
    """A data set name, root or option that cannot be used (a ``flownet2_ros.data`` DatasetError, so one
    ``except`` catches the readers' errors too)."""


def canonical_name(name: str) -> str:
    """Lower-case registry key of a data set name (``MPI-Sintel`` → ``sintel``)."""
    key = name.replace("-", "").replace("_", "").lower()
    aliases = {"syntheticflowdataset": "synthetic", "syntheticflow": "synthetic", "mpisintel": "sintel"}
    aliases.update({"kittiflow": "kitti", "flyingthings": "flyingthings3d", "things3d": "flyingthings3d"})
    return aliases.get(key, key)


def dataset_class(name: str) -> type:
    """The ``flownet2_ros.data`` class for a data set name (DatasetError when unknown or not available)."""
    key = canonical_name(name)
    if key not in DATASET_NAMES:
        raise DatasetError(
            f"unknown data set {name!r}; expected one of synthetic, FlyingChairs, ChairsSDHom, FlyingThings3D, "
            "Sintel, KITTI, Kitti2012, Kitti2015, FlowFolder"
        )
    from .. import data

    for attribute in DATASET_NAMES[key]:
        cls = getattr(data, attribute, None)
        if cls is not None:
            return cls
    raise DatasetError(
        f"data set {name!r} is not available in flownet2_ros.data (no {DATASET_NAMES[key][0]})"
    )


def build_dataset(name: str, root: str | None = None, split: str | None = None, **options: Any) -> Dataset:
    """Create a data set by name. ``options`` go to its constructor (``pass`` is accepted for
    ``pass_name``, KITTI takes ``year``); the synthetic generator takes ``num_samples``, ``height``,
    ``width``, ``seed``, ``max_displacement``, ... and no root."""
    cls = dataset_class(name)
    options = {_OPTION_ALIASES.get(k, k): v for k, v in options.items()}
    params = inspect.signature(cls).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = dict(options)
    if root is not None:
        if "root" not in params and not takes_kwargs:
            raise DatasetError(f"data set {name} takes no root")
        kwargs["root"] = root
    elif "root" in params and params["root"].default is inspect.Parameter.empty:
        raise DatasetError(f"data set {name} needs a root folder")
    if split is not None:
        if "split" not in params and not takes_kwargs:
            raise DatasetError(f"data set {name} has no splits (got split {split!r})")
        kwargs["split"] = split
    if not takes_kwargs:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            accepted = ", ".join(p for p in params if p != "self")
            raise DatasetError(
                f"data set {name}: unknown option(s) {', '.join(unknown)} (accepted: {accepted})"
            )
    try:
        dataset = cls(**kwargs)
    except (TypeError, ValueError, OSError) as exc:  # the readers' DatasetError is a ValueError
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(text if name.lower() in text.lower() else f"data set {name}: {text}") from None
    if len(dataset) == 0:
        raise DatasetError(f"data set {name} at {root} ({split or 'default split'}) holds no samples")
    return dataset


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample draw, well mixed from (seed, epoch, index)."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0]
    return int(mixed)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)  # noqa: NPY002 - deliberately the global RNG
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore python ``random``, numpy's and torch's CPU RNG states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def _to_tensor(value: Any, dtype: torch.dtype) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.from_numpy(np.ascontiguousarray(value))
    return tensor.to(dtype)


def as_training_sample(sample: dict) -> dict:
    """The fields training uses, as tensors: image1, image2 (3, H, W) float32, flow (2, H, W), valid (H, W)."""
    flow = _to_tensor(sample["flow"], torch.float32)
    valid = sample.get("valid")
    valid_t = torch.isfinite(flow).all(dim=0) if valid is None else _to_tensor(valid, torch.bool)
    return {
        "image1": _to_tensor(sample["image1"], torch.float32),
        "image2": _to_tensor(sample["image2"], torch.float32),
        "flow": torch.nan_to_num(flow, nan=0.0, posinf=0.0, neginf=0.0),
        "valid": valid_t,
    }


def random_crop(sample: dict, size: tuple[int, int], rng: np.random.Generator) -> dict:
    """Crop every (…, H, W) field of a training sample to ``size`` at one random position."""
    height, width = sample["flow"].shape[-2:]
    ch, cw = size
    if ch > height or cw > width:
        raise DatasetError(f"crop {ch}x{cw} is larger than the sample {height}x{width}")
    y = int(rng.integers(0, height - ch + 1))
    x = int(rng.integers(0, width - cw + 1))
    return {k: v[..., y : y + ch, x : x + cw] for k, v in sample.items()}


class TrainingView(Dataset):
    """Indexed by ``(epoch, index)``: seeds the RNGs for that draw, loads, augments or crops.

    ``augmentation``: a callable on a sample dict (e.g. ``flownet2_ros.data.FlowAugmentation``), given a
    seeded ``generator`` (torch) or ``rng`` (numpy) keyword when it accepts one; else ``crop_size`` crops at a random position; else the sample is
    used whole.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        augmentation: Callable[..., dict] | None = None,
        crop_size: tuple[int, int] | None = None,
    ) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.augmentation = augmentation
        self.crop_size = crop_size
        self._augment_rng_kind = ""
        if augmentation is not None:
            try:
                params = inspect.signature(augmentation).parameters
            except (TypeError, ValueError):
                params = {}  # type: ignore[assignment]
            self._augment_rng_kind = (
                "generator" if "generator" in params else "rng" if "rng" in params else ""
            )

    def __len__(self) -> int:
        return _length(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        seed = sample_seed(self.seed, epoch, index)
        with isolated_rng():
            seed_everything(seed)
            rng = np.random.default_rng(seed)
            sample = self.dataset[index]
            if self.augmentation is not None:
                if self._augment_rng_kind == "generator":
                    generator = torch.Generator().manual_seed(seed)
                    return as_training_sample(self.augmentation(sample, generator=generator))
                if self._augment_rng_kind == "rng":
                    return as_training_sample(self.augmentation(sample, rng=rng))
                return as_training_sample(self.augmentation(sample))
            sample = as_training_sample(sample)
            if self.crop_size is not None:
                sample = random_crop(sample, self.crop_size, rng)
            return sample


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields the batches of steps ``start_step … total_steps − 1`` for one rank (see the module docstring)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError("need at least one sample and a batch size >= 1")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self._perm_epoch = -1
        self._perm: list[int] = []

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, 2**31 - 1))
            self._perm = torch.randperm(self.num_samples, generator=generator).tolist()
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world_size + self.rank) * self.batch_size
        batch = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.num_samples)
            batch.append((epoch, self._permutation(epoch)[offset]))
        return batch

    def epoch_at(self, step: int) -> int:
        return (step * self.world_size * self.batch_size) // self.num_samples

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch_at(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def worker_init(worker_id: int) -> None:
    """DataLoader worker seeding (every draw is reseeded anyway; this covers anything else)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002


def _length(dataset: Any) -> int:
    return len(dataset)
