"""The training loop: stacked FlowNet 2.0 training with exact resume, validation, logs and checkpoints.

``Trainer(config).run()`` builds the stack, loads earlier stages (``model.init``), freezes all but the
trained sub-network, and runs ``optim.iterations`` Adam steps of the multi-scale loss under the chosen lr
schedule. In ``run.output`` it writes:

- ``checkpoint_latest.pth.tar``: the official layout (``state_dict``, ``iteration``, ``epoch``,
  ``best_EPE``, ``arch``, ...), readable by ``flownet2_ros.models.load_checkpoint``, plus a ``resume`` entry
  (optimiser, AMP scaler, step, RNG states, config: plain containers and tensors, so ``torch.load`` with
  ``weights_only=True`` reads it) that ``load_checkpoint`` ignores;
- ``checkpoint_best.pth.tar``: the weights with the lowest validation EPE so far (no resume state);
- ``log.csv`` (step, lr, loss, per-scale EPE, val EPE, time), ``config.yaml``, and TensorBoard events in
  ``tensorboard/`` when tensorboard is importable.

Resuming (``resume=`` a run folder or checkpoint) restores model, optimiser, scaler, step and RNG states; as
the data of a step depends only on (seed, step) (see ``datasets``), a resumed run on CPU reproduces the
uninterrupted run bit for bit.

Multi-GPU: launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment), each rank
trains on its share of every global batch (``optim.batch_size`` is the global batch) inside
``DistributedDataParallel``; rank 0 validates, logs and writes checkpoints. AMP (``run.amp``) is CUDA only:
``torch.autocast`` float16 with a ``GradScaler``; the loss is computed in float32.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..models import build
from .config import ConfigError, DatasetSpec, TrainConfig, config_from_dict
from .datasets import (
    HELD_OUT_SPLIT,
    DatasetError,
    StepBatchSampler,
    TrainingView,
    build_dataset,
    canonical_name,
    seed_everything,
    worker_init,
)
from .evaluation import evaluate
from .losses import MultiScaleLoss
from .schedules import LRSchedule, get_schedule, make_optimizer, set_lr
from .stacking import (
    DEFAULT_STAGE,
    frozen_subnetworks,
    initialise_from,
    prepare_stack_for_training,
    trainable_summary,
)

LATEST = "checkpoint_latest.pth.tar"
BEST = "checkpoint_best.pth.tar"
LOG_CSV = "log.csv"
_VAL_SEED_OFFSET = 1_000_003
_DEFAULT_VAL_SAMPLES = 64


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad resume file, non-finite loss, unusable data)."""


@dataclass
class TrainResult:
    step: int
    iterations: int
    initial_val_epe: float | None
    final_val_epe: float | None
    best_val_epe: float | None
    final_loss: float | None
    seconds: float
    steps_per_second: float
    output: Path
    stopped_by_budget: bool = False


# --------------------------------------------------------------------------------------------- helpers


def distributed_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when launched by torchrun, else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return None


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors and plain values (weights_only-loadable)."""
    np_state: Any = np.random.get_state()  # noqa: NPY002 - the global RNG is what is saved
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": py_version,
            "state": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"].tolist()), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run folder → its ``checkpoint_latest.pth.tar``; a file → itself."""
    path = Path(path)
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise TrainingError(f"no checkpoint to resume at {path}")
    return path


def read_resume(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Load a resumable checkpoint (weights_only) → (its dict, its path)."""
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or "resume" not in payload or "state_dict" not in payload:
        raise TrainingError(
            f"{path} has no resume state (only checkpoint_latest.pth.tar of flownet2-train has)"
        )
    return payload, path


def resume_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The config stored in a resumable checkpoint, with ``key=value`` overrides applied."""
    from .config import apply_override

    payload, _ = read_resume(path)
    tree = payload["resume"]["config"]
    for assignment in overrides:
        apply_override(tree, assignment)
    return config_from_dict(tree)


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _length(dataset: Any) -> int:
    return len(dataset)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


# --------------------------------------------------------------------------------------------- trainer


class Trainer:
    """One training run; see the module docstring. ``train_dataset`` / ``val_dataset`` override the specs
    of the config (any Dataset of the data contract); ``val_dataset`` may be ``False`` for none."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        train_dataset: Dataset | None = None,
        val_dataset: Dataset | bool | None = None,
        resume: str | Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._print = log or (lambda text: print(text, file=sys.stderr))
        self._bar: Any = None
        self._owns_process_group = False
        self.rank, self.world_size, local_rank = 0, 1, 0
        env = distributed_env()
        if env is not None:
            self.rank, self.world_size, local_rank = env
        self.is_main = self.rank == 0
        self.threads = self._set_threads(config.run.threads, config.data.num_workers)
        self.device = self._resolve_device(config.run.device, local_rank if env else None)
        if config.run.amp and self.device.type != "cuda":
            raise ConfigError("run.amp needs a CUDA device (automatic mixed precision is CUDA only here)")
        if config.optim.batch_size % self.world_size:
            raise ConfigError(
                f"optim.batch_size {config.optim.batch_size} is not divisible by the {self.world_size} processes"
            )
        self.batch_per_rank = config.optim.batch_size // self.world_size
        if env is not None:
            self._init_distributed(local_rank)
        try:
            self._setup(config, train_dataset, val_dataset, resume, distributed=env is not None)
        except BaseException:
            self.close()
            raise

    def _setup(
        self,
        config: TrainConfig,
        train_dataset: Dataset | None,
        val_dataset: Dataset | bool | None,
        resume: str | Path | None,
        distributed: bool,
    ) -> None:
        self.schedule: LRSchedule = get_schedule(
            config.optim.schedule, config.optim.lr, config.optim.iterations
        )
        self.iterations = self.schedule.iterations
        self.output = Path(config.run.output)
        self.step = 0
        self.best_epe: float | None = None
        self.initial_val_epe: float | None = None
        self.last_val_epe: float | None = None
        self.elapsed = 0.0
        self.resumed_from: Path | None = None
        self.loss_history: list[float] = []  # training loss of every step run by this trainer

        # data first: a wrong root fails before a large model is built
        self.train_dataset = train_dataset if train_dataset is not None else self._dataset(config.data.train)
        self._data_label = (
            config.data.train.describe() if train_dataset is None else type(train_dataset).__name__
        )
        self.val_dataset = self._validation_dataset(val_dataset)
        augmentation = self._augmentation() if config.data.augment else None
        crop = tuple(config.data.crop_size) if config.data.crop_size else None
        self.view = TrainingView(self.train_dataset, config.run.seed, augmentation, crop)  # type: ignore[arg-type]

        seed_everything(config.run.seed)
        self.model = build(
            config.model.name,
            width=config.model.width,
            thin=config.model.thin,
            div_flow=config.model.div_flow,
        )
        self.init_report = initialise_from(self.model, *config.model.init) if config.model.init else []
        self.stage = config.model.train or DEFAULT_STAGE[config.model.name]
        try:
            self.params = prepare_stack_for_training(self.model, self.stage)
        except ValueError as exc:
            raise ConfigError(f"model.train: {exc}") from None
        self.model.to(self.device)
        self.criterion = MultiScaleLoss(
            config.loss.weights, config.loss.norm, div_flow=cast(float, self.model.train_flow_scale)
        )
        betas = (float(config.optim.betas[0]), float(config.optim.betas[1]))
        self.optimizer = make_optimizer(self.params, self.schedule.lr_at(0), betas, config.optim.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.run.amp)
        if resume is not None:
            self._load_resume(resume)

        self.ddp_model: nn.Module = self.model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    # ---------------------------------------------------------------- setup

    @staticmethod
    def _set_threads(requested: int, workers: int) -> int:
        """torch intra-op threads: ``requested``, or (0) torch's default lowered so that the loader workers
        do not oversubscribe the cores (oversubscribed OpenMP threads are many times slower)."""
        if requested > 0:
            torch.set_num_threads(requested)
        elif workers > 0:
            limit = max(1, (os.cpu_count() or 1) - workers)
            if torch.get_num_threads() > limit:
                torch.set_num_threads(limit)
        return torch.get_num_threads()

    @staticmethod
    def _resolve_device(requested: str, local_rank: int | None) -> torch.device:
        from ..models.inference import InferenceError, resolve_device

        try:
            device = resolve_device(requested)
        except InferenceError as exc:
            raise ConfigError(f"run.device: {exc}") from None
        if device.type == "cuda":
            if local_rank is not None and device.index is None:
                device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        return device

    def _init_distributed(self, local_rank: int) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._owns_process_group = True

    def _dataset(self, spec: DatasetSpec) -> Dataset:
        try:
            return build_dataset(spec.name, spec.root, spec.split, **spec.options)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None

    def _validation_dataset(self, given: Dataset | bool | None) -> Dataset | None:
        if given is False:
            return None
        if given is not None and given is not True:
            return given
        spec = self.config.data.val
        if spec is not None:
            return None if spec.name.lower() == "none" else self._dataset(spec)
        train = self.config.data.train
        if train.name.lower() == "synthetic":
            options = dict(train.options)
            options["seed"] = int(options.get("seed", 0)) + _VAL_SEED_OFFSET
            options["num_samples"] = self.config.data.val_max_samples or _DEFAULT_VAL_SAMPLES
            return self._dataset(DatasetSpec("synthetic", options=options))
        split = HELD_OUT_SPLIT.get(canonical_name(train.name))
        if split is None:
            self._log(f"no validation: {train.name} has no standard held-out split (set data.val)")
            return None
        try:
            return build_dataset(train.name, train.root, split, **train.options)
        except DatasetError as exc:
            self._log(f"no validation: {exc} (set data.val to choose a held-out set)")
            return None

    def _augmentation(self) -> Callable[..., dict]:
        try:
            from ..data import FlowAugmentation
        except ImportError:
            raise ConfigError(
                "data.augment needs flownet2_ros.data.FlowAugmentation, which is missing"
            ) from None
        options = dict(self.config.data.augment_options)
        if self.config.data.crop_size:
            options.setdefault("crop_size", tuple(self.config.data.crop_size))
        try:
            return FlowAugmentation(**options)
        except TypeError as exc:
            raise ConfigError(f"data.augment_options: {exc}") from None

    def _load_resume(self, path: str | Path) -> None:
        payload, path = read_resume(path)
        resume = payload["resume"]
        stored = resume.get("config", {}).get("model", {})
        if stored.get("name") != self.config.model.name:
            raise TrainingError(f"{path} is a {stored.get('name')} run, not {self.config.model.name}")
        try:
            self.model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise TrainingError(
                f"{path}: weights do not fit the configured model ({str(exc)[:300]})"
            ) from None
        self.optimizer.load_state_dict(resume["optimizer"])
        if resume.get("scaler") and self.config.run.amp:
            self.scaler.load_state_dict(resume["scaler"])
        self.step = int(resume["step"])
        self.best_epe = resume.get("best_EPE")
        self.initial_val_epe = resume.get("initial_val_EPE")
        self.last_val_epe = resume.get("last_val_EPE")
        self.elapsed = float(resume.get("elapsed", 0.0))
        set_rng_state(resume["rng"])
        self.resumed_from = path
        changed = [
            key
            for key in ("seed", "batch_size")
            if resume.get("config", {}).get("run" if key == "seed" else "optim", {}).get(key)
            != (self.config.run.seed if key == "seed" else self.config.optim.batch_size)
        ]
        if changed:
            self._log(f"note: {', '.join(changed)} differ from the resumed run; it will not replay exactly")

    # ---------------------------------------------------------------- logging

    def _log(self, text: str) -> None:
        if not self.is_main:
            return
        if self._bar is not None and not self._bar.disable:
            self._bar.write(text, file=sys.stderr)
        else:
            self._print(text)

    def _scale_names(self) -> list[str]:
        last = {"FlowNet2": "flownetfusion", "FlowNet2CSS": "flownets_2", "FlowNet2CS": "flownets_1"}
        sub = last.get(self.config.model.name)
        if sub is not None and sub in frozen_subnetworks(self.model):
            return MultiScaleLoss.scale_names(1)
        return MultiScaleLoss.scale_names(3 if self.config.model.name == "FlowNet2" else 5)

    def _csv_fields(self) -> list[str]:
        return [
            "step",
            "lr",
            "loss",
            *(f"epe_{n}" for n in self._scale_names()),
            "val_epe",
            "time_s",
            "pairs_per_s",
        ]

    def _open_logs(self) -> tuple[Any, Any]:
        """CSV writer (rows after the resumed step dropped) and an optional TensorBoard writer."""
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / LOG_CSV
        fields = self._csv_fields()
        kept: list[dict[str, str]] = []
        if self.step > 0 and path.is_file():
            with path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row.get("step") or 0) <= self.step]
        handle = path.open("w", newline="")
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        handle.flush()
        tensorboard = None
        if self.config.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tensorboard = SummaryWriter(
                    log_dir=str(self.output / "tensorboard"), purge_step=self.step if self.step else None
                )
            except ImportError as exc:
                self._log(f"TensorBoard logging skipped: {exc}")
        return (handle, writer), tensorboard

    # ---------------------------------------------------------------- checkpoints

    def _payload(self, with_resume: bool) -> dict[str, Any]:
        epoch = (self.step * self.config.optim.batch_size) // max(1, len(self.train_dataset))  # type: ignore[arg-type]
        payload: dict[str, Any] = {
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "iteration": self.step,
            "epoch": epoch,
            "arch": self.config.model.name,
            "width": float(getattr(self.model, "width", 1.0)),
            "stage": self.stage if isinstance(self.stage, str) else ",".join(self.stage),
            "schedule": self.schedule.name,
        }
        if self.best_epe is not None and math.isfinite(self.best_epe):
            payload["best_EPE"] = float(self.best_epe)
        if with_resume:
            payload["resume"] = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.config.run.amp else {},
                "rng": rng_state(),
                "config": self.config.to_dict(),
                "best_EPE": self.best_epe,
                "initial_val_EPE": self.initial_val_epe,
                "last_val_EPE": self.last_val_epe,
                "elapsed": self.elapsed,
                "world_size": self.world_size,
            }
        return payload

    def save_checkpoint(self, best: bool = False) -> Path:
        """Write ``checkpoint_latest.pth.tar`` (or ``checkpoint_best.pth.tar`` without resume state)."""
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / (BEST if best else LATEST)
        _atomic_save(self._payload(with_resume=not best), path)
        return path

    # ---------------------------------------------------------------- validation

    def validate(self) -> float | None:
        """Mean EPE (px, full resolution) on the validation set; None without one. Rank 0 only."""
        if self.val_dataset is None:
            return None
        result = evaluate(
            self.model,
            self.val_dataset,
            device=self.device,
            max_samples=self.config.data.val_max_samples,
            progress=False,
        )
        self.model.train()
        return float(result.summary["epe"])

    def _validate_and_record(self) -> float | None:
        epe = None
        if self.is_main:
            epe = self.validate()
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
        if epe is None:
            return None
        self.last_val_epe = epe
        if self.step == 0:  # the untrained network: a reference, not a candidate for "best"
            self.initial_val_epe = epe
            return epe
        if self.best_epe is None or epe < self.best_epe:
            self.best_epe = epe
            self.save_checkpoint(best=True)
        return epe

    # ---------------------------------------------------------------- loop

    def describe(self) -> str:
        c = self.config
        lines = [
            f"model {c.model.name} (width {getattr(self.model, 'width', 1.0):.3g}); training {self.stage}: "
            f"{trainable_summary(self.model, self.params)}",
            *(f"  initialised {line}" for line in self.init_report),
            f"data {self._data_label} ({_length(self.train_dataset)} pairs)"
            + (
                f"; validation {_length(self.val_dataset)} pairs"
                if self.val_dataset is not None
                else "; no validation"
            ),
            f"schedule {self.schedule.describe()}; batch {c.optim.batch_size}"
            + (f" over {self.world_size} processes" if self.world_size > 1 else "")
            + f"; loss {c.loss.weights if isinstance(c.loss.weights, str) else list(c.loss.weights)} {c.loss.norm}",
            f"device {self.device}{' with AMP' if c.run.amp else ''}"
            + (f" ({self.threads} threads)" if self.device.type == "cpu" else "")
            + f"; output {self.output}",
        ]
        if self.resumed_from is not None:
            lines.append(f"resumed from {self.resumed_from} at step {self.step}")
        return "\n".join(lines)

    def run(self, time_budget_s: float | None = None) -> TrainResult:
        """Train until ``iterations``, or until ``time_budget_s`` seconds of this call have passed (the
        step in progress finishes and ``checkpoint_latest`` is written there, so ``--resume`` continues
        exactly as if the run had not stopped); returns what happened (``stopped_by_budget``)."""
        from tqdm import tqdm

        c = self.config
        sampler = StepBatchSampler(
            len(self.view),
            self.batch_per_rank,
            c.run.seed,
            self.iterations,
            self.step,
            self.rank,
            self.world_size,
        )
        loader = DataLoader(
            self.view,
            batch_sampler=sampler,
            num_workers=c.data.num_workers,
            worker_init_fn=worker_init if c.data.num_workers else None,
            pin_memory=self.device.type == "cuda",
        )
        logs, tensorboard = self._open_logs() if self.is_main else ((None, None), None)
        if self.is_main:
            (self.output / "config.yaml").write_text(c.to_yaml())
        start_step = self.step
        self._bar = tqdm(
            total=self.iterations,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not (self.is_main and c.run.progress),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        window: dict[str, float] = {}
        window_steps = 0
        window_start = time.perf_counter()
        last_loss: float | None = None
        scale_names: list[str] | None = None
        run_start = time.perf_counter()
        base_elapsed = self.elapsed
        stopped_by_budget = False
        try:
            self.model.train()
            if c.run.validate_at_start and self.step == 0 and self.step < self.iterations:
                epe = self._validate_and_record()
                if epe is not None:
                    self._log(f"step 0: validation EPE {epe:.4f} px (before training)")
                    self._write_row(logs, tensorboard, {"step": 0, "val_epe": epe, "time_s": 0.0})
            for batch in loader:
                lr = self.schedule.lr_at(self.step)
                set_lr(self.optimizer, lr)
                loss, epe_terms = self._train_step(batch)
                self.step += 1
                last_loss = float(loss)
                self.loss_history.append(last_loss)
                scale_names = scale_names or list(epe_terms)
                window["loss"] = window.get("loss", 0.0) + last_loss
                for name, value in epe_terms.items():
                    window[f"epe_{name}"] = window.get(f"epe_{name}", 0.0) + float(value)
                window_steps += 1
                self.elapsed = base_elapsed + time.perf_counter() - run_start
                finest = epe_terms[scale_names[0]]
                self._bar.set_postfix(
                    loss=f"{last_loss:.4g}", epe=f"{float(finest):.3f}", lr=f"{lr:.2g}", refresh=False
                )
                self._bar.update(1)
                at_end = self.step == self.iterations
                row: dict[str, Any] = {}
                if (c.run.log_interval and self.step % c.run.log_interval == 0) or at_end:
                    means = self._reduce_window(window, window_steps)
                    seconds = time.perf_counter() - window_start
                    row.update(means)
                    row.update(
                        lr=lr,
                        pairs_per_s=window_steps * c.optim.batch_size / seconds if seconds > 0 else 0.0,
                    )
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if (c.run.val_interval and self.step % c.run.val_interval == 0) or at_end:
                    epe = self._validate_and_record()
                    if epe is not None:
                        row["val_epe"] = epe
                        self._log(
                            f"step {self.step}: validation EPE {epe:.4f} px (best {_fmt(self.best_epe)}); "
                            f"train loss {last_loss:.4g}"
                        )
                if row:
                    row.update(step=self.step, time_s=self.elapsed)
                    self._write_row(logs, tensorboard, row)
                saved = bool(
                    (c.run.checkpoint_interval and self.step % c.run.checkpoint_interval == 0) or at_end
                )
                if saved and self.is_main:
                    self.save_checkpoint()
                if (
                    time_budget_s is not None
                    and not at_end
                    and time.perf_counter() - run_start >= time_budget_s
                ):
                    stopped_by_budget = True
                    if not saved and self.is_main:
                        self.save_checkpoint()
                    self._log(
                        f"step {self.step}: time budget of {time_budget_s:g} s reached; checkpoint_latest "
                        "written, --resume continues exactly from here"
                    )
                    break
        finally:
            self._bar.close()
            self._bar = None
            if logs[0] is not None:
                logs[0].close()
            if tensorboard is not None:
                tensorboard.close()
        steps = self.step - start_step
        seconds = time.perf_counter() - run_start
        return TrainResult(
            step=self.step,
            iterations=self.iterations,
            initial_val_epe=self.initial_val_epe,
            final_val_epe=self.last_val_epe,
            best_val_epe=self.best_epe,
            final_loss=last_loss,
            seconds=seconds,
            steps_per_second=steps / seconds if seconds > 0 and steps else 0.0,
            output=self.output,
            stopped_by_budget=stopped_by_budget,
        )

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        image1 = batch["image1"].to(self.device, non_blocking=non_blocking)
        image2 = batch["image2"].to(self.device, non_blocking=non_blocking)
        flow = batch["flow"].to(self.device, non_blocking=non_blocking)
        valid = batch["valid"].to(self.device, non_blocking=non_blocking)
        if image1.shape[-2] % 64 or image1.shape[-1] % 64:
            raise TrainingError(
                f"training pairs are {image1.shape[-2]}x{image1.shape[-1]}; the networks need multiples of 64 "
                "(set data.crop_size)"
            )
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.config.run.amp):
            predictions = self.ddp_model(image1, image2)
        loss, epe = self.criterion(predictions, flow, valid)
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {float(loss)} at step {self.step + 1}; lower optim.lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), epe

    def _reduce_window(self, window: dict[str, float], steps: int) -> dict[str, float]:
        means = {k: v / max(steps, 1) for k, v in window.items()}
        if self.world_size > 1:
            import torch.distributed as dist

            keys = sorted(means)
            values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            means = {k: float(v) / self.world_size for k, v in zip(keys, values.tolist(), strict=True)}
        return means

    def _write_row(self, logs: tuple[Any, Any], tensorboard: Any, row: dict[str, Any]) -> None:
        handle, writer = logs
        if writer is None:
            return
        writer.writerow({k: (_fmt(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
        handle.flush()
        if tensorboard is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key in ("step", "time_s") or value is None:
                    continue
                tag = {
                    "loss": "train/loss",
                    "lr": "train/lr",
                    "val_epe": "val/epe",
                    "pairs_per_s": "train/pairs_per_s",
                }
                tensorboard.add_scalar(tag.get(key, f"train/{key}"), float(value), step)

    def close(self) -> None:
        """Tear down the process group this trainer created (torchrun runs)."""
        if self._owns_process_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_process_group = False


def train(
    config: TrainConfig,
    *,
    train_dataset: Dataset | None = None,
    val_dataset: Dataset | bool | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    time_budget_s: float | None = None,
) -> TrainResult:
    """Build a ``Trainer``, print what it does, run it (at most ``time_budget_s``), tear down."""
    trainer = Trainer(config, train_dataset=train_dataset, val_dataset=val_dataset, resume=resume, log=log)
    try:
        trainer._log(trainer.describe())
        return trainer.run(time_budget_s=time_budget_s)
    finally:
        trainer.close()
