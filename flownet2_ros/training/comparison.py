"""Learned vs classical flow on the same pairs, same machine, one run: the embedded model's report card.

Three sets with exact ground truth at a robot camera's resolution (640×480 by default):
- ``synthetic``: held-out procedural pairs (a seed never used for training), FlyingChairs-like motion up to
  ``max_displacement``;
- ``photos``: real photographs under random near-identity homographies (``PhotoMotionDataset``), no
  photograph of which is used by the synthetic training data: translation up to ``max_displacement / 1.5``
  per axis, rotation ≤ 4°, scale ±6 %;
- ``photos_large``: the same photographs under large motions (``LARGE_MOTION``: a 48–88 px translation in a
  random direction, rotation ≤ 1°, scale ±1 %, so pixels move by 40–96 px at 640×480; the translation is
  scaled by ``min(height / 480, width / 640)`` at other sizes), seeded with ``seed + 1``.

In all photograph sets, pixels whose motion takes them out of frame 2 are invalid (not scored).
Each estimator sees the uint8 frames exactly as a node would hand them over (``FlowEstimator.estimate``);
the time per pair is wall time on this machine, every method free to use all cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from .evaluation import EvaluationResult, evaluate


@dataclass
class ComparisonRow:
    method: str
    dataset: str
    epe: float
    fl_all: float
    time_ms: float
    pairs: int


SET_NAMES = ("synthetic", "photos", "photos_large")

# ``photos_large`` is seeded with ``seed + PHOTOS_LARGE_SEED_OFFSET`` (424243 by default): a seed of its own,
# never a training seed (those are small: 0, 1, 2, and 1000003 more for validation).
PHOTOS_LARGE_SEED_OFFSET = 1


def comparison_sets(
    height: int = 480,
    width: int = 640,
    pairs: int = 24,
    seed: int = 424242,
    max_displacement: float = 24.0,
    sets: Sequence[str] = SET_NAMES,
) -> dict[str, Dataset]:
    """The evaluation sets named in ``sets`` (see the module docstring), in that order.

    The photograph sets are left out when scikit-image (which carries the photographs) is not installed.

    Raises:
        ValueError: for a name not in ``SET_NAMES``.
    """
    from ..data import PhotoMotionDataset, SyntheticFlowDataset, packaged_photographs
    from ..data.photo_motion import LARGE_MOTION

    unknown = [name for name in sets if name not in SET_NAMES]
    if unknown:
        raise ValueError(
            f"unknown evaluation set(s) {', '.join(unknown)}; choose from {', '.join(SET_NAMES)}"
        )
    photos = packaged_photographs()
    result: dict[str, Dataset] = {}
    for name in dict.fromkeys(sets):
        if name == "synthetic":
            result[name] = SyntheticFlowDataset(
                pairs, height, width, seed=seed, max_displacement=max_displacement
            )
        elif not photos:
            continue
        elif name == "photos":
            result[name] = PhotoMotionDataset(
                photos, pairs, height, width, seed=seed, max_translation=max_displacement / 1.5
            )
        else:  # photos_large: the law is set at 640×480 and scales with the frame
            factor = min(height / 480, width / 640)
            law = dict(LARGE_MOTION)
            law["min_translation"] *= factor
            law["max_translation"] *= factor
            result[name] = PhotoMotionDataset(
                photos, pairs, height, width, seed=seed + PHOTOS_LARGE_SEED_OFFSET, **law
            )
    return result


def compare(
    estimators: dict[str, Any], sets: dict[str, Dataset], progress: bool = True
) -> list[ComparisonRow]:
    """Evaluate every estimator on every set; one row each."""
    rows = []
    for set_name, dataset in sets.items():
        for method, estimator in estimators.items():
            result: EvaluationResult = evaluate(estimator, dataset, progress=progress, label=method)
            # The first pair includes one-off costs (allocation, thread start): time the rest.
            times = [s["time_ms"] for s in result.samples[1:]] or [result.samples[0]["time_ms"]]
            times.sort()
            rows.append(
                ComparisonRow(
                    method=method,
                    dataset=set_name,
                    epe=result.summary["epe"],
                    fl_all=result.summary["fl_all"],
                    time_ms=times[len(times) // 2],
                    pairs=len(result.samples),
                )
            )
    return rows


def markdown_table(rows: list[ComparisonRow], machine: str) -> str:
    """Rows as a Markdown table: EPE (px), Fl-all (%), median ms per pair, per set."""
    sets = list(dict.fromkeys(r.dataset for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    by_key = {(r.method, r.dataset): r for r in rows}
    header = "| method | " + " | ".join(f"{s} EPE px | {s} Fl-all % | {s} ms/pair" for s in sets) + " |"
    rule = "|---|" + "---:|" * (3 * len(sets))
    lines = [header, rule]
    for method in methods:
        cells = []
        for s in sets:
            r = by_key[(method, s)]
            cells += [f"{r.epe:.2f}", f"{r.fl_all:.1f}", f"{r.time_ms:.1f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    pairs = ", ".join(f"{s}: {by_key[(methods[0], s)].pairs} pairs" for s in sets)
    lines.append("")
    lines.append(f"Measured on {machine}; {pairs}; time = median wall time per pair, same run.")
    return "\n".join(lines)
