"""What every console script shares: one-line failures, device choice, machine description."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from typing import NoReturn


class CliError(Exception):
    """A failure to report as one line and a non-zero exit."""


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    first_line = " ".join(str(message).split("\n")[0].split())
    print(f"{prog}: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def run_main(prog: str, body: Callable[[], int | None], known_errors: tuple[type[BaseException], ...]) -> int:
    """Run a CLI body, turning the library's documented errors into one line and exit code 2."""
    try:
        return body() or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except CliError as exc:
        fail(prog, str(exc))
    except known_errors as exc:
        fail(prog, str(exc))


def resolve_device(requested: str) -> str:
    """The inference core's device rule (``auto``: CUDA when usable), as a string; a CliError otherwise."""
    from ..models.inference import InferenceError
    from ..models.inference import resolve_device as core_device

    try:
        device = core_device(requested)
    except InferenceError as exc:
        raise CliError(f"--device: {exc}") from None
    return str(device)


def describe_machine(device: str) -> str:
    """One line naming the hardware a measurement ran on."""
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` → (height, width), for argparse ``type=``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 512x384, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return height, width
