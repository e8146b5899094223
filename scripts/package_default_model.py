"""Package a trained checkpoint as the embedded default model (weights only, float16, ≤ 20 MB).

python scripts/package_default_model.py runs/embedded_default_stage3/checkpoint_best.pth.tar \
    [--max-network-pixels 81920] [--output PATH]

``--max-network-pixels`` is stored in the file: the cap on the automatic network size that the node,
flownet2-infer, -bag and -compare use for this model unless told otherwise (``max_network_pixels: 0``), chosen
so that the model meets its CPU budget (320×256 = 81920 runs a 640×480 camera at half resolution).
"""

from __future__ import annotations

import argparse
import sys

from flownet2_ros.models.embedded import DEFAULT_CHECKPOINT_NAME, WEIGHTS_DIR, package_checkpoint

MAX_BYTES = 20_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("source", help="checkpoint written by flownet2-train")
    parser.add_argument(
        "--output", default=str(WEIGHTS_DIR / DEFAULT_CHECKPOINT_NAME), help="destination file"
    )
    parser.add_argument(
        "--max-network-pixels",
        type=int,
        default=0,
        help="the model's own cap on the automatic network size (width x height, at least 4096); "
        "0: none (1024x576 applies)",
    )
    args = parser.parse_args()
    if args.max_network_pixels and args.max_network_pixels < 64 * 64:
        print(
            "package_default_model: error: --max-network-pixels must be 0 or at least 4096", file=sys.stderr
        )
        return 2
    metadata = {"max_network_pixels": args.max_network_pixels} if args.max_network_pixels else {}
    path = package_checkpoint(args.source, args.output, half=True, **metadata)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB)")
    if size > MAX_BYTES:
        print(f"package_default_model: error: {size / 1e6:.1f} MB is over the 20 MB limit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
