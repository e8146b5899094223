"""``flownet2-train --time-budget``: a run stopped by its budget resumes exactly (training in slices)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import quiet, synthetic, tiny_config

from flownet2_ros.training import load_config
from flownet2_ros.training.trainer import Trainer, read_resume


def test_budget_stops_with_a_checkpoint_and_resume_is_exact(tmp_path: Path) -> None:
    data = synthetic(6)
    straight = Trainer(
        load_config(None, tiny_config(tmp_path / "a", "run.checkpoint_interval=0")),
        train_dataset=data,
        val_dataset=False,
        log=quiet,
    )
    assert not straight.run().stopped_by_budget

    sliced = tmp_path / "b"
    config = load_config(None, tiny_config(sliced, "run.checkpoint_interval=0"))
    first = Trainer(config, train_dataset=data, val_dataset=False, log=quiet)
    result = first.run(time_budget_s=1e-9)  # stops after the first step
    assert result.stopped_by_budget and result.step == 1 < result.iterations
    payload, _ = read_resume(sliced)
    assert payload["resume"]["step"] == 1  # written although no checkpoint interval fell there
    steps = [1]
    while True:
        part = Trainer(
            load_config(None, tiny_config(sliced, "run.checkpoint_interval=0")),
            train_dataset=data,
            val_dataset=False,
            resume=sliced,
            log=quiet,
        )
        result = part.run(time_budget_s=1e-9)
        steps.append(result.step)
        if not result.stopped_by_budget:
            break
    assert steps == list(range(1, straight.step + 1))
    for (name, a), b in zip(
        straight.model.state_dict().items(), part.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_train_cli_rejects_a_bad_budget(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flownet2_ros.cli import train as train_cli

    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--config", "config/train_synthetic_flownet2s_thin.yaml", "--time-budget", "0"])
    assert exit_info.value.code == 2
    assert "--time-budget must be a positive number" in capsys.readouterr().err
