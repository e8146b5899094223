"""Wall-clock timing shared by the benchmarks (medians, with device synchronisation)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(
    run: Callable[[], object], repeats: int, warmup: int = 0, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``run()`` in milliseconds over ``repeats`` calls, after ``warmup`` untimed calls.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read so asynchronous device
    work is counted.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        run()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
