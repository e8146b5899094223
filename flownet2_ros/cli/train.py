"""``flownet2-train``: train a FlowNet 2.0 stack (or one stage of it) from a YAML config."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

PROG = "flownet2-train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a FlowNet 2.0 network following the paper: multi-scale loss, S_short/S_long/S_fine "
        "schedules, Adam, stacked training of one sub-network at a time. Writes checkpoint_latest.pth.tar / "
        "checkpoint_best.pth.tar (official layout, usable by flownet2-infer and the ROS node), log.csv, "
        "config.yaml and TensorBoard events to the output folder.",
        epilog="Examples: flownet2-train --config config/train_synthetic_flownet2s_thin.yaml ; "
        "flownet2-train --config config/train_chairs_flownet2s.yaml --set data.train.root=/data/FlyingChairs ; "
        "flownet2-train --resume runs/synthetic_flownet2s_thin --iterations 600. "
        "Several GPUs: torchrun --nproc_per_node=N $(which flownet2-train) --config ...",
    )
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        help="YAML training config (sections model, data, optim, loss, run; see config/train_*.yaml). "
        "Optional with --resume, which reuses the run's stored config",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value by its dotted key, e.g. --set optim.lr=5e-5 --set "
        "data.train.root=/data/chairs (repeatable; values in YAML syntax)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="DIR|PATH",
        help="continue a run exactly where it stopped: its output folder or a checkpoint_latest.pth.tar",
    )
    parser.add_argument(
        "--output", "-o", help="output folder (run.output); default: the config's, or the resumed run's"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (run.device)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (run.threads; 0 = automatic: its default, less one per loader worker). "
        "On a busy machine 1 can be many times faster",
    )
    parser.add_argument("--iterations", type=int, help="total iterations to train to (optim.iterations)")
    parser.add_argument(
        "--batch-size", type=int, help="global batch size (optim.batch_size; the paper's is 8)"
    )
    parser.add_argument("--lr", type=float, help="base learning rate replacing the schedule's (optim.lr)")
    parser.add_argument(
        "--schedule", help="S_short, S_long, S_fine or constant, optionally @SCALE, e.g. S_long@0.001"
    )
    parser.add_argument("--workers", type=int, help="data loader worker processes (data.num_workers)")
    parser.add_argument("--seed", type=int, help="random seed (run.seed)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA only; run.amp)")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop after this many minutes of training in this call (the step in progress finishes and "
        "checkpoint_latest is written there); --resume later continues exactly as one uninterrupted run",
    )
    parser.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard events")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit without training",
    )
    return parser


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    pairs = [
        ("run.output", args.output),
        ("run.device", args.device),
        ("run.threads", args.threads),
        ("optim.iterations", args.iterations),
        ("optim.batch_size", args.batch_size),
        ("optim.lr", args.lr),
        ("optim.schedule", args.schedule),
        ("data.num_workers", args.workers),
        ("run.seed", args.seed),
    ]
    out = [f"{key}={value}" for key, value in pairs if value is not None]
    if args.amp:
        out.append("run.amp=true")
    if args.no_tensorboard:
        out.append("run.tensorboard=false")
    if args.quiet:
        out.append("run.progress=false")
    return out


def main(argv: list[str] | None = None) -> int:
    from ..data.errors import DatasetError
    from ..models import CheckpointError
    from ..training import ConfigError, TrainingError
    from .common import run_main

    args = build_parser().parse_args(argv)
    return run_main(
        PROG, lambda: _run(args), (ConfigError, DatasetError, TrainingError, CheckpointError, OSError)
    )


def _run(args: argparse.Namespace) -> int:
    from ..training import load_config, resume_config, train
    from ..training.trainer import read_resume
    from .common import CliError, describe_machine

    overrides = [*args.overrides, *_flag_overrides(args)]
    if args.config is None and args.resume is None:
        raise CliError("give --config FILE (or --resume DIR to continue a run)")
    if args.config is not None:
        config = load_config(args.config, overrides)
        if args.resume is not None and args.output is None:
            _, path = read_resume(args.resume)
            config.run.output = str(path.parent)
    else:
        _, path = read_resume(args.resume)
        config = resume_config(path, [f"run.output={path.parent}", *overrides])
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.time_budget is not None and not args.time_budget > 0:
        raise CliError(f"--time-budget must be a positive number of minutes, got {args.time_budget}")
    budget = args.time_budget * 60.0 if args.time_budget is not None else None
    result = train(config, resume=args.resume, time_budget_s=budget)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from ..models.inference import resolve_device

    resolved = str(resolve_device(config.run.device))
    lines = [
        f"trained to step {result.step}/{result.iterations} in {result.seconds:.1f} s "
        f"({result.steps_per_second:.2f} steps/s on {describe_machine(resolved)})"
        + (" — time budget reached; --resume continues" if result.stopped_by_budget else ""),
    ]
    if result.initial_val_epe is not None or result.final_val_epe is not None:
        parts = [
            f"{label} {value:.3f} px"
            for label, value in (
                ("before training", result.initial_val_epe),
                ("now", result.final_val_epe),
                ("best", result.best_val_epe),
            )
            if value is not None
        ]
        lines.append("validation EPE: " + ", ".join(parts))
    lines.append(f"checkpoints in {result.output} (checkpoint_latest.pth.tar, checkpoint_best.pth.tar)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
