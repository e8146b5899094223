"""Choose the embedded model's variant by trained accuracy per millisecond on this CPU.

Trains each thin candidate from scratch for the same number of steps on the same data (the stage-2
generator of config/train_embedded_default_stage2.yaml: motions up to 40 px over procedural and
photographic backgrounds), then measures every trained network on flownet2-compare's 640×480 sets
(``--sets``; by default synthetic and photos, the two the recorded sweep used; photos_large can be added):
EPE and CPU time per pair (the mean of the sets' medians). The score is mean EPE × ms (lower is better:
accuracy per millisecond).

    python scripts/choose_embedded_variant.py [--steps 400] [--variants FlowNet2S FlowNet2C FlowNet2SD]
        [--sets synthetic photos photos_large]

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


def train(variant: str, steps: int, output: Path) -> float:
    """Train ``variant`` (thin, from scratch) for ``steps``; return the wall time in seconds."""
    command = [
        sys.executable,
        "-m",
        "flownet2_ros.cli.train",
        "--config",
        str(STAGE2_CONFIG),
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
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


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
    parser.add_argument("--output", type=Path, default=Path("runs/variant_sweep"), help="run folder")
    args = parser.parse_args()

    from flownet2_ros.backends import BackendConfig, create_torch
    from flownet2_ros.cli.common import describe_machine
    from flownet2_ros.training.comparison import compare, comparison_sets

    sets = comparison_sets(480, 640, args.pairs, max_displacement=24.0, sets=args.sets)
    lines = [
        "| variant (thin) | train s | "
        + " | ".join(f"{name} EPE px" for name in sets)
        + " | ms/pair 640×480 | mean EPE × ms |",
        "|---|---:|" + "---:|" * len(sets) + "---:|---:|",
    ]
    scores = {}
    for variant in args.variants:
        run = args.output / variant
        checkpoint = run / "checkpoint_latest.pth.tar"
        seconds = train(variant, args.steps, run)
        estimator = create_torch(BackendConfig(checkpoint=str(checkpoint), device="cpu"))
        rows = compare({variant: estimator}, sets, progress=False)
        epe = {r.dataset: r.epe for r in rows}
        ms = sum(r.time_ms for r in rows) / len(rows)
        mean_epe = sum(epe.values()) / len(epe)
        scores[variant] = mean_epe * ms
        cells = " | ".join(f"{epe[name]:.2f}" for name in sets)
        lines.append(f"| {variant} | {seconds:.0f} | {cells} | {ms:.1f} | {scores[variant]:.0f} |")
        print(lines[-1], flush=True)
    best = min(scores, key=scores.__getitem__)
    lines += [
        "",
        f"{args.steps} steps each from scratch (batch 8, 192×256, lr 3e-4 constant, seed 1); "
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
