"""The deterministic weight rule of ../shared/reference/README.md, shared by the parity tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def reference_keys(reference_dir: Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    raw = json.loads((reference_dir / "flownet2_state_dict_keys.json").read_text())
    return {stack: [(k, tuple(shape)) for k, shape in entries] for stack, entries in raw.items()}


def reference_state_dict(keys: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """i-th key: default_rng(1000 + i).standard_normal(shape), scaled by sqrt(1/fan_in) (4-D) or 0.01 (1-D)."""
    state = {}
    for index, (key, shape) in enumerate(keys):
        weight = np.random.default_rng(1000 + index).standard_normal(shape)
        if len(shape) == 4:
            kh, kw = shape[2], shape[3]
            transposed = "deconv" in key or "upsampled_flow" in key
            fan_in = shape[0] * kh * kw / 4 if transposed else shape[1] * kh * kw
            weight = weight * math.sqrt(1.0 / fan_in)
        elif len(shape) == 1:
            weight = weight * 0.01
        state[key] = torch.from_numpy(weight.astype(np.float32))
    return state
