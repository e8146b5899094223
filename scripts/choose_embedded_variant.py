"""Choose the embedded model's variant by trained accuracy per millisecond on this CPU.

Trains each thin candidate from scratch for the same number of steps on the same data (the stage-2
generator of config/train_embedded_default_stage2.yaml: motions up to 40 px over procedural and
photographic backgrounds), then measures every trained network on flownet2-compare's 640×480 sets
(``--sets``; by default synthetic and photos, the two the recorded sweep used; photos_large can be added):
EPE and CPU time per pair (the mean of the sets' medians). The score is mean EPE × ms (lower is better:
accuracy per millisecond).

    python scripts/choose_embedded_variant.py [--steps 400] [--variants FlowNet2S FlowNet2C FlowNet2SD]
        [--sets synthetic photos photos_large]
    # at equal cost: each variant at the largest network size within 32 ms per 640x480 pair, 5 minutes each
    python scripts/choose_embedded_variant.py --variants FlowNet2S FlowNet2C --equal-ms 32 --minutes 5 \
        --config config/train_embedded_default_stage3.yaml --sets synthetic photos photos_large

Short runs rank early learning speed, not final accuracy: the result is a proxy, recorded as such in the
model card. Runs go to runs/variant_sweep/<variant>; the table also to runs/variant_sweep/table.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

STAGE2_CONFIG = Path(__file__).resolve().parents[1] / "config" / "train_embedded_default_stage2.yaml"


def train(
    variant: str, steps: int, output: Path, minutes: float | None = None, config: Path = STAGE2_CONFIG
) -> float:
    """Train ``variant`` (thin, from scratch) for ``steps``, or for ``minutes`` of wall time when given;
    return the wall time in seconds."""
    command = [
        sys.executable,
        "-m",
        "flownet2_ros.cli.train",
        "--config",
        str(config),
        "--output",
        str(output),
        "--set",
        f"model.name={variant}",
        "--set",
        "model.init=[]",
        "--set",
        "run.val_interval=0",
        "--schedule",
        "constant",
        "--lr",
        "3e-4",
        "--iterations",
        str(steps),
        "--threads",
        "1",
        "--quiet",
        "--no-tensorboard",
    ]
    if minutes is not None:
        command += ["--time-budget", str(minutes)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


#: Network-size caps tried by --equal-ms, largest first (width x height at 4:3-ish sizes for 640x480).
CAPS = [640 * 512, 512 * 384, 448 * 384, 448 * 320, 384 * 320, 384 * 256, 320 * 256, 256 * 192, 192 * 128]


def size_for_budget(variant: str, budget_ms: float, repeats: int = 5) -> tuple[int, tuple[int, int], float]:
    """The largest network-size cap (from CAPS) at which thin ``variant`` takes at most ``budget_ms`` per
    640x480 pair on this CPU (uint8 frames in, flow out; median of ``repeats``): (cap, size, ms).
    Falls back to the smallest cap when none fits."""
    import numpy as np

    from flownet2_ros.models import FlowInference, build
    from flownet2_ros.models.inference import network_size_for

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    model = build(variant, width=0.375)
    result = (CAPS[-1], network_size_for(480, 640, max_pixels=CAPS[-1]), float("inf"))
    for cap in CAPS:
        core = FlowInference(model, device="cpu", max_network_pixels=cap)
        core.estimate(*frames)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            core.estimate(*frames)
            times.append((time.perf_counter() - start) * 1000.0)
        ms = sorted(times)[len(times) // 2]
        if ms <= budget_ms:
            return cap, network_size_for(480, 640, max_pixels=cap), ms
        result = (cap, network_size_for(480, 640, max_pixels=cap), ms)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps per variant (default 400)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["FlowNet2S", "FlowNet2C", "FlowNet2SD"],
        help="stacks to compare, all thin (default FlowNet2S FlowNet2C FlowNet2SD)",
    )
    parser.add_argument("--pairs", type=int, default=12, help="pairs per evaluation set (default 12)")
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=["synthetic", "photos", "photos_large"],
        default=["synthetic", "photos"],
        help="flownet2-compare sets to score on (default: synthetic photos)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        help="train each variant for this many minutes of wall time instead of --steps (a fixed budget)",
    )
    parser.add_argument(
        "--equal-ms",
        type=float,
        metavar="MS",
        help="run each variant at the largest network size (the node's max_network_pixels) whose CPU time "
        "per 640x480 pair is at most MS, so variants are compared at equal cost (default: every variant "
        "at the automatic size)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=STAGE2_CONFIG,
        help="training config whose data every variant trains on (default: the stage-2 config; "
        "config/train_embedded_default_stage3.yaml for large motions with camera effects)",
    )
    parser.add_argument("--output", type=Path, default=Path("runs/variant_sweep"), help="run folder")
    args = parser.parse_args()

    from flownet2_ros.backends import BackendConfig, create_torch
    from flownet2_ros.cli.common import describe_machine
    from flownet2_ros.training.comparison import compare, comparison_sets

    sets = comparison_sets(480, 640, args.pairs, max_displacement=24.0, sets=args.sets)
    lines = [
        "| variant (thin) | network size | train s | steps | "
        + " | ".join(f"{name} EPE px" for name in sets)
        + " | ms/pair 640×480 | mean EPE × ms |",
        "|---|---|---:|---:|" + "---:|" * len(sets) + "---:|---:|",
    ]
    scores = {}
    for variant in args.variants:
        cap = 0  # the model's own cap (1024x576: the automatic size of a 640x480 frame)
        if args.equal_ms is not None:
            cap, size, timed = size_for_budget(variant, args.equal_ms)
            print(f"{variant}: {size[1]}x{size[0]} takes {timed:.1f} ms per pair (budget {args.equal_ms:g})")
        run = args.output / variant
        checkpoint = run / "checkpoint_latest.pth.tar"
        seconds = train(
            variant, args.steps if args.minutes is None else 10**7, run, args.minutes, args.config
        )
        import torch

        steps = int(torch.load(checkpoint, weights_only=True, map_location="cpu").get("iteration", 0))
        estimator = create_torch(
            BackendConfig(checkpoint=str(checkpoint), device="cpu", max_network_pixels=cap)
        )
        rows = compare({variant: estimator}, sets, progress=False)
        net_h, net_w = estimator.info.network_size or (0, 0)
        epe = {r.dataset: r.epe for r in rows}
        ms = sum(r.time_ms for r in rows) / len(rows)
        mean_epe = sum(epe.values()) / len(epe)
        scores[variant] = mean_epe * ms
        cells = " | ".join(f"{epe[name]:.2f}" for name in sets)
        lines.append(
            f"| {variant} | {net_w}×{net_h} | {seconds:.0f} | {steps} | {cells} | {ms:.1f} | {scores[variant]:.0f} |"
        )
        print(lines[-1], flush=True)
    best = min(scores, key=scores.__getitem__)
    budget = f"{args.minutes:g} minutes" if args.minutes is not None else f"{args.steps} steps"
    cost = f"at most {args.equal_ms:g} ms per pair" if args.equal_ms is not None else "the automatic size"
    lines += [
        "",
        f"{budget} each from scratch on {args.config.name}'s data, network size for {cost} "
        "(batch 8, lr 3e-4 constant); "
        f"{args.pairs} pairs per set ({', '.join(sets)}; synthetic motion ≤ 24 px, photos translated "
        "≤ 16 px, photos_large 40–96 px); "
        f"measured on {describe_machine('cpu')}. Best EPE × ms: {best}.",
    ]
    table = "\n".join(lines)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
