"""How fast and how cheaply a PNG decompression bomb is refused by ``compressed_msg_to_rgb``.

``python -m flownet2_ros.bench.compressed_bomb`` builds a real bomb: a valid PNG declaring
``side x side`` 8-bit grey pixels whose IDAT holds a deflate stream of zeros of exactly the right raw
size (``side * (side + 1)`` bytes: one filter byte per row).  For the default 30000 x 30000 that is
about 0.9 MB on disk, 900 MB inflated, and 2.7 GB once OpenCV expands it to 3-channel colour.  The
stream is built in chunks, so building it needs no more memory than the file itself.

It then hands the file to :func:`~flownet2_ros.ros.image_convert.compressed_msg_to_rgb` with the
node's default ``max_image_pixels`` (4096 x 4096) ``--repeats`` times and prints, one result per
line: the time per rejection (median and max, ms) and the process's resident memory (``VmRSS``)
before and after, in MB.  The guard reads the size from the PNG header, so the targets are under
10 ms per rejection and under 20 MB of growth.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import time
import zlib

#: The node's default ``max_image_pixels`` parameter (flownet2_ros.ros.parameters).
NODE_MAX_PIXELS = 4096 * 4096

_CHUNK = 1 << 20  # zeros fed to the compressor per call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flownet2_ros.bench.compressed_bomb",
        description="Build a PNG decompression bomb (small file, huge declared image) and time how fast "
        "compressed_msg_to_rgb refuses it with the node's default pixel limit "
        f"({NODE_MAX_PIXELS}), and how much resident memory that costs. Prints one result per line.",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=100,
        help="how many times the same message is converted (each must be refused); default 100",
    )
    parser.add_argument(
        "--side",
        type=int,
        default=30000,
        help="width and height the PNG declares, in pixels; its deflate stream really inflates to "
        "side * (side + 1) bytes of grey (default 30000: ~0.9 MB file, 2.7 GB once decoded to colour)",
    )
    return parser


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def build_bomb_png(side: int) -> bytes:
    """A valid 8-bit grey PNG, ``side x side``, all black: filter byte 0 and zero pixels on every row."""
    raw_size = side * (side + 1)
    compressor = zlib.compressobj(9)
    parts = []
    zeros = bytes(_CHUNK)
    remaining = raw_size
    while remaining > 0:
        take = min(remaining, _CHUNK)
        parts.append(compressor.compress(zeros[:take] if take < _CHUNK else zeros))
        remaining -= take
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    )


def resident_mb() -> float:
    """Resident set size now (``VmRSS``), in MB; the peak from ``getrusage`` where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.side < 1:
        print("--repeats and --side must be positive", file=sys.stderr)
        return 2

    from sensor_msgs.msg import CompressedImage

    from ..ros.image_convert import KIND_TOO_LARGE, ImageConversionError, compressed_msg_to_rgb

    start = time.perf_counter()
    png = build_bomb_png(args.side)
    build_s = time.perf_counter() - start
    msg = CompressedImage(format="png")
    msg.data.frombytes(png)
    decoded_gb = args.side * args.side * 3 / 1e9

    # One conversion outside the timing: imports and first-call costs are not the guard's.
    try:
        compressed_msg_to_rgb(msg, NODE_MAX_PIXELS)
        refused_kind = None
    except ImageConversionError as exc:
        refused_kind = exc.kind
    if refused_kind != KIND_TOO_LARGE:
        print(f"error: the bomb was not refused as {KIND_TOO_LARGE} (got {refused_kind})", file=sys.stderr)
        return 1

    rss_before = resident_mb()
    times_ms = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        try:
            compressed_msg_to_rgb(msg, NODE_MAX_PIXELS)
        except ImageConversionError as exc:
            if exc.kind != KIND_TOO_LARGE:
                raise
        else:
            print("error: the bomb was decoded", file=sys.stderr)
            return 1
        times_ms.append((time.perf_counter() - t0) * 1e3)
    rss_after = resident_mb()

    print(f"png: {args.side}x{args.side} grey, {len(png)} bytes, built in {build_s:.1f} s")
    print(f"decoded size it declares: {decoded_gb:.2f} GB as 8-bit colour")
    print(f"max_pixels: {NODE_MAX_PIXELS}")
    print(f"rejections: {args.repeats} x {KIND_TOO_LARGE}")
    print(f"median ms per rejection: {statistics.median(times_ms):.4f}")
    print(f"max ms per rejection: {max(times_ms):.4f}")
    print(f"rss before MB: {rss_before:.1f}")
    print(f"rss after MB: {rss_after:.1f}")
    print(f"rss growth MB: {rss_after - rss_before:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
