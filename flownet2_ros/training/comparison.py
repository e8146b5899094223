"""Learned vs classical flow on the same pairs, same machine, one run: the embedded model's report card.

Two sets with exact ground truth at a robot camera's resolution (640×480 by default):
- ``synthetic``: held-out procedural pairs (a seed never used for training), FlyingChairs-like motion;
- ``photos``: real photographs under random homographies (``PhotoMotionDataset``), no photograph of which
  is used by the synthetic training data.

Each estimator sees the uint8 frames exactly as a node would hand them over (``FlowEstimator.estimate``);
the time per pair is wall time on this machine, every method free to use all cores.
"""

from __future__ import annotations

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


def comparison_sets(
    height: int = 480, width: int = 640, pairs: int = 24, seed: int = 424242, max_displacement: float = 24.0
) -> dict[str, Dataset]:
    """The two evaluation sets (held-out synthetic, photographs under homographies)."""
    from ..data import PhotoMotionDataset, SyntheticFlowDataset, packaged_photographs

    sets: dict[str, Dataset] = {
        "synthetic": SyntheticFlowDataset(pairs, height, width, seed=seed, max_displacement=max_displacement)
    }
    photos = packaged_photographs()
    if photos:
        sets["photos"] = PhotoMotionDataset(
            photos, pairs, height, width, seed=seed, max_translation=max_displacement / 1.5
        )
    return sets


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
