"""Package a trained checkpoint as the embedded default model (weights only, float16, ≤ 20 MB).

python scripts/package_default_model.py runs/embedded_default_stage2/checkpoint_best.pth.tar [--output PATH]
"""

from __future__ import annotations

import argparse

from flownet2_ros.models.embedded import DEFAULT_CHECKPOINT_NAME, WEIGHTS_DIR, package_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("source", help="checkpoint written by flownet2-train")
    parser.add_argument(
        "--output", default=str(WEIGHTS_DIR / DEFAULT_CHECKPOINT_NAME), help="destination file"
    )
    args = parser.parse_args()
    path = package_checkpoint(args.source, args.output, half=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
