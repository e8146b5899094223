"""Is the synthetic generator fast enough to keep a CPU training run busy?

``python -m flownet2_ros.bench.data_throughput [--config YAML] [--set KEY=VALUE] [--workers 1 2] [--steps 6]``

With the training data and model of a config (default: the stage-3 settings of
``config/train_embedded_default_stage3.yaml``: synthetic 192x256, motions up to 48 px drawn from the
"small" law, camera effects, packaged photographs with p = 0.7, batch 8, thin FlowNet2S) it measures:

a. **generator alone**: samples/s of the training data pipeline (the trainer's ``TrainingView`` and step
   sampler in a ``DataLoader``) with N worker processes (0 = in the main process), nothing else running;
b. **network alone**: training steps/s of forward + multi-scale loss + backward + Adam on one fixed batch in
   memory, with ``--threads`` torch threads (default 1, what ``flownet2-train`` uses beside one worker on
   two cores);
c. **both**: steps/s of the real loop, ``DataLoader`` with ``--train-workers`` workers (default 1) feeding
   the same training step.

The first batch or step of each measurement is a warm-up and is not timed; ``b`` and ``c`` alternate
``--repeat`` times and the best of each counts. It prints the three rates and
whether the generator keeps up: its samples/s with the training run's worker count against the samples/s
the network consumes (``b`` x batch), and the ratio ``c / b`` (1.0: the data costs the training nothing).
Other processes on the machine slow every number; run it on an idle machine for figures to quote.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, cast

PROG = "data_throughput"

STAGE3_TRAIN_DATA: dict[str, Any] = {
    "name": "synthetic",
    "num_samples": 1000000,
    "height": 192,
    "width": 256,
    "seed": 2,
    "max_displacement": 48,
    "motion_distribution": "small",
    "camera_effects": True,
    "backgrounds": "packaged",
    "background_photo_prob": 0.7,
}
"""``data.train`` of ``config/train_embedded_default_stage3.yaml`` (the default measured here)."""

STAGE3_DEFAULTS: dict[str, Any] = {
    "model": {"name": "FlowNet2S", "thin": True},
    "data": {"train": STAGE3_TRAIN_DATA, "num_workers": 1},
    "optim": {"schedule": "S_fine@0.045", "lr": 1.0e-4, "iterations": 12000, "batch_size": 8},
    "loss": {"weights": "pytorch", "norm": "EPE"},
    "run": {"seed": 2},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Measure the synthetic generator's samples/s (N workers), the training step's steps/s on a "
        "fixed batch (network only) and the steps/s of the real DataLoader + training step, and say whether "
        "the generator keeps up. Default data and model: the stage-3 embedded settings (192x256, motions up to "
        "48 px, 'small' motion law, camera effects, batch 8, thin FlowNet2S).",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="training config YAML whose data.train, model, optim.batch_size and loss are measured "
        "(default: the built-in copy of config/train_embedded_default_stage3.yaml's settings)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by its dotted key, as flownet2-train --set (repeatable), e.g. "
        "--set data.train.camera_effects=false",
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="batch size (default: the config's optim.batch_size)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts for the generator-alone measurement (a), --train-workers always included; 0 = in "
        "the main process (default: 1 2)",
    )
    parser.add_argument(
        "--train-workers",
        type=int,
        default=1,
        help="DataLoader workers of the combined measurement (c) (default 1, the embedded configs' num_workers)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=8,
        help="batches timed per worker count in (a), after one warm-up batch (default 8)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=6,
        help="training steps timed in (b) and (c), after one warm-up step each (default 6)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="alternating rounds of (b) and (c); the best rate of each counts, so that a burst of other work "
        "on a shared machine does not decide the comparison (default 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the training step in (b) and (c) (default 1: the trainer's choice beside one "
        "worker on two cores)",
    )
    parser.add_argument(
        "--skip",
        choices=("generator", "network", "combined"),
        nargs="+",
        default=[],
        help="leave out measurement(s) a (generator), b (network) or c (combined)",
    )
    return parser


def _config(args: argparse.Namespace) -> Any:
    from ..training.config import config_with_overrides, load_config

    if args.config is not None:
        config = load_config(args.config, args.overrides)
    else:
        config = config_with_overrides(STAGE3_DEFAULTS, args.overrides)
    if args.batch is not None:
        config.optim.batch_size = args.batch
    return config


def _loader(view: Any, batch: int, seed: int, steps: int, workers: int) -> Any:
    from torch.utils.data import DataLoader

    from ..training.datasets import StepBatchSampler, worker_init

    sampler = StepBatchSampler(len(view), batch, seed, steps)
    return DataLoader(
        view,
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        persistent_workers=False,
    )


def measure_generator(view: Any, batch: int, seed: int, batches: int, workers: int) -> float:
    """Samples/s of the data pipeline alone (first batch not timed)."""
    iterator = iter(_loader(view, batch, seed, batches + 1, workers))
    next(iterator)  # warm-up: worker start, photo cache
    start = time.perf_counter()
    count = 0
    for item in iterator:
        count += int(item["image1"].shape[0])
    return count / (time.perf_counter() - start)


class _Step:
    """The trainer's training step (forward, multi-scale loss, backward, Adam) on the CPU."""

    def __init__(self, config: Any) -> None:
        from ..models import build
        from ..training.losses import MultiScaleLoss
        from ..training.schedules import make_optimizer
        from ..training.stacking import DEFAULT_STAGE, prepare_stack_for_training

        m = config.model
        self.model = build(m.name, width=m.width, thin=m.thin, div_flow=m.div_flow)
        params = prepare_stack_for_training(self.model, m.train or DEFAULT_STAGE[m.name])
        self.model.train()
        self.criterion = MultiScaleLoss(
            config.loss.weights, config.loss.norm, div_flow=cast(float, self.model.train_flow_scale)
        )
        self.optimizer = make_optimizer(params, config.optim.lr or 1e-4)

    def __call__(self, batch: dict[str, Any]) -> float:
        predictions = self.model(batch["image1"], batch["image2"])
        loss, _ = self.criterion(predictions, batch["flow"], batch["valid"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def measure_network(step: _Step, batch: dict[str, Any], steps: int) -> float:
    """Steps/s of the training step on one fixed in-memory batch (first step not timed)."""
    step(batch)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return steps / (time.perf_counter() - start)


def measure_combined(step: _Step, view: Any, batch: int, seed: int, steps: int, workers: int) -> float:
    """Steps/s of DataLoader (``workers``) + training step (first step not timed)."""
    iterator = iter(_loader(view, batch, seed, steps + 1, workers))
    step(next(iterator))
    start = time.perf_counter()
    for item in iterator:
        step(item)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batches", "steps", "threads", "repeat", "train_workers"):
        if getattr(args, name) < (0 if name == "train_workers" else 1):
            print(f"{PROG}: --{name.replace('_', '-')} is too small", file=sys.stderr)
            return 2
    if any(w < 0 for w in args.workers):
        print(f"{PROG}: --workers must be >= 0", file=sys.stderr)
        return 2

    import torch

    from ..training.config import ConfigError
    from ..training.datasets import DatasetError, TrainingView, build_dataset

    try:
        config = _config(args)
        spec = config.data.train
        dataset = build_dataset(spec.name, spec.root, spec.split, **spec.options)
    except (ConfigError, DatasetError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    batch, seed = config.optim.batch_size, config.run.seed
    crop = tuple(config.data.crop_size) if config.data.crop_size else None
    view = TrainingView(dataset, seed, None, cast("tuple[int, int] | None", crop))
    torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(
        f"cpu: {os.cpu_count()} cores (load average {load}: other work slows every number); torch "
        f"{torch.__version__}, {args.threads} thread(s) for the training step"
    )
    print(f"data: {getattr(dataset, 'describe', lambda: spec.describe())()}")
    print(
        f"model: {config.model.name}{' (thin)' if config.model.thin else ''}; batch {batch}"
        + (f"; crop {crop[0]}x{crop[1]}" if crop else "")
    )

    generator: dict[int, float] = {}
    if "generator" not in args.skip:
        for workers in sorted(set(args.workers) | {args.train_workers}):
            rate = measure_generator(view, batch, seed, args.batches, workers)
            generator[workers] = rate
            label = "in the main process" if workers == 0 else f"{workers} worker{'s' if workers > 1 else ''}"
            print(f"(a) generator alone, {label}: {rate:.1f} samples/s ({rate / batch:.2f} batches/s)")
    network = combined = None
    step = None
    fixed = None
    for round_ in range(args.repeat):
        tag = f" [round {round_ + 1}/{args.repeat}]" if args.repeat > 1 else ""
        if "network" not in args.skip:
            step = step or _Step(config)
            fixed = fixed if fixed is not None else next(iter(_loader(view, batch, seed, 1, 0)))
            rate = measure_network(step, fixed, args.steps)
            network = max(network or 0.0, rate)
            print(
                f"(b) network alone (forward + loss + backward + Adam, fixed batch): {rate:.3f} steps/s "
                f"({rate * batch:.1f} samples/s, {1000 / rate:.0f} ms/step){tag}"
            )
        if "combined" not in args.skip:
            step = step or _Step(config)
            rate = measure_combined(step, view, batch, seed, args.steps, args.train_workers)
            combined = max(combined or 0.0, rate)
            workers = f"{args.train_workers} worker{'s' if args.train_workers != 1 else ''}"
            print(
                f"(c) DataLoader ({workers}) + training step: {rate:.3f} steps/s ({1000 / rate:.0f} ms/step){tag}"
            )
    if args.repeat > 1 and (network or combined):
        best = [f"(b) {network:.3f}" if network else "", f"(c) {combined:.3f}" if combined else ""]
        print(f"best of {args.repeat} rounds: {', '.join(b for b in best if b)} steps/s")
    if network is not None:
        need = network * batch
        have = generator.get(args.train_workers)
        if have is not None:
            verdict = "keeps up" if have >= need else "does NOT keep up"
            print(
                f"generator with {args.train_workers} worker(s): {have:.1f} samples/s against {need:.1f} samples/s "
                f"the network consumes ({have / need:.1f}x): it {verdict}"
            )
        if combined is not None:
            ratio = combined / network
            print(
                f"real loop / network alone: {ratio:.2f} "
                + (
                    "(the data costs the training almost nothing)"
                    if ratio >= 0.9
                    else "(the data slows training)"
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
