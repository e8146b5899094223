"""Training: multi-scale loss, schedules, stacking, the trainer (loss decreases, exact resume), config, CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from flownet2_ros.cli import train as train_cli
from flownet2_ros.models import CheckpointError, build, load_checkpoint, save_checkpoint
from flownet2_ros.training import (
    CAFFE_WEIGHTS,
    FUSION_WEIGHTS,
    PYTORCH_WEIGHTS,
    ConfigError,
    MultiScaleLoss,
    Trainer,
    downsample_flow,
    frozen_subnetworks,
    get_schedule,
    initialise_from,
    load_config,
    prepare_stack_for_training,
    read_resume,
)
from flownet2_ros.training.datasets import StepBatchSampler, TrainingView

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = 0.125  # width multiplier: tiny networks, fast on CPU


def synthetic(num: int, height: int = 64, width: int = 64, seed: int = 0) -> Dataset:
    """The project's synthetic generator (small displacements)."""
    try:
        from flownet2_ros.data import SyntheticFlowDataset
    except ImportError:
        from flownet2_ros.data.synthetic import SyntheticFlowDataset
    return SyntheticFlowDataset(num, height, width, seed=seed, max_displacement=6.0, num_objects=(1, 3))


def tiny_config(tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"model.width={TINY}",
        "optim.schedule=constant",
        "optim.iterations=4",
        "optim.lr=1e-4",
        "optim.batch_size=2",
        f"run.output={tmp_path}",
        "run.device=cpu",
        "run.tensorboard=false",
        "run.progress=false",
        "run.log_interval=1",
        "run.val_interval=0",
        "run.checkpoint_interval=0",
        "run.validate_at_start=false",
        *extra,
    ]


def quiet(_text: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------ loss


def test_named_weights_follow_the_spec() -> None:
    assert CAFFE_WEIGHTS == (0.005, 0.01, 0.02, 0.08, 0.32)  # flow2 … flow6
    assert PYTORCH_WEIGHTS == (0.32, 0.16, 0.08, 0.04, 0.02)
    assert MultiScaleLoss.scale_names(5) == ["flow2", "flow3", "flow4", "flow5", "flow6"]
    assert MultiScaleLoss.scale_names(3) == ["flow0", "flow1", "flow2"]


def test_loss_single_scale_units() -> None:
    """Prediction zero at 1/4 resolution, target a constant (3, 4) px: EPE 5 px; loss in flow/20 units."""
    target = torch.zeros(1, 2, 8, 8)
    target[:, 0], target[:, 1] = 3.0, 4.0
    loss, epe = MultiScaleLoss("caffe", "EPE", div_flow=20)(torch.zeros(1, 2, 2, 2), target)
    assert loss.item() == pytest.approx(0.25)  # |(3, 4)| / 20, weight 1 for a single prediction
    assert epe["flow"].item() == pytest.approx(5.0)
    l1, _ = MultiScaleLoss("caffe", "L1", div_flow=20)(torch.zeros(1, 2, 2, 2), target)
    assert l1.item() == pytest.approx((3 + 4) / 2 / 20)  # mean absolute error over both components


@pytest.mark.parametrize(("weighting", "weights"), [("caffe", CAFFE_WEIGHTS), ("pytorch", PYTORCH_WEIGHTS)])
def test_loss_five_scales_weighted(weighting: str, weights: tuple[float, ...]) -> None:
    target = torch.zeros(2, 2, 64, 64)
    target[:, 0] = 6.0
    target[:, 1] = 8.0  # |flow| 10 px everywhere
    preds = tuple(torch.zeros(2, 2, 64 // r, 64 // r) for r in (4, 8, 16, 32, 64))
    loss, epe = MultiScaleLoss(weighting)(preds, target)
    assert loss.item() == pytest.approx(0.5 * sum(weights))  # 10 / 20 per scale
    assert set(epe) == {"flow2", "flow3", "flow4", "flow5", "flow6"}
    assert all(v.item() == pytest.approx(10.0) for v in epe.values())
    # a perfect prediction at one scale removes exactly that term
    perfect = list(preds)
    perfect[4] = torch.stack([torch.full((2, 1, 1), 0.3), torch.full((2, 1, 1), 0.4)], dim=1)
    loss2, epe2 = MultiScaleLoss(weighting)(tuple(perfect), target)
    assert loss2.item() == pytest.approx(0.5 * sum(weights[:4]))
    assert epe2["flow6"].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_fusion_outputs_in_pixels() -> None:
    target = torch.full((1, 2, 16, 16), 2.0)
    preds = (torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4))
    loss, epe = MultiScaleLoss("caffe", div_flow=1.0)(preds, target)
    assert loss.item() == pytest.approx(math.sqrt(8) * sum(FUSION_WEIGHTS), rel=1e-6)
    assert list(epe) == ["flow0", "flow1", "flow2"]
    assert epe["flow0"].item() == pytest.approx(math.sqrt(8), rel=1e-6)


def test_masked_pooling_ignores_invalid_pixels() -> None:
    flow = torch.full((1, 2, 4, 4), float("nan"))  # invalid pixels hold garbage
    valid = torch.zeros(1, 4, 4, dtype=torch.bool)
    flow[0, :, 0, 0] = torch.tensor([4.0, 2.0])
    flow[0, :, 1, 1] = torch.tensor([2.0, 0.0])
    valid[0, 0, 0] = valid[0, 1, 1] = True
    flow[0, :, 3, 3] = torch.tensor([-8.0, 8.0])
    valid[0, 3, 3] = True
    pooled, pooled_valid = downsample_flow(flow, 2, valid)
    assert pooled_valid is not None
    assert pooled_valid[0].tolist() == [[True, False], [False, True]]
    assert pooled[0, :, 0, 0].tolist() == [3.0, 1.0]  # mean of the two valid vectors only
    assert pooled[0, :, 1, 1].tolist() == [-8.0, 8.0]
    assert torch.isfinite(pooled).all()
    # the loss averages over valid coarse pixels only, and nothing NaN leaks
    pred = torch.zeros(1, 2, 2, 2)
    loss, epe = MultiScaleLoss("caffe", "EPE", div_flow=1.0)(pred, flow, valid)
    expected = (math.hypot(3, 1) + math.hypot(8, 8)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert epe["flow"].item() == pytest.approx(expected, rel=1e-6)


def test_loss_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="weighting"):
        MultiScaleLoss("nvidia")
    with pytest.raises(ValueError, match="norm"):
        MultiScaleLoss(norm="L3")
    with pytest.raises(ValueError, match="integer factor"):
        MultiScaleLoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="2 loss weights for 5"):
        MultiScaleLoss([1.0, 2.0])(
            tuple(torch.zeros(1, 2, 64 // r, 64 // r) for r in (4, 8, 16, 32, 64)), torch.zeros(1, 2, 64, 64)
        )


# ------------------------------------------------------------------------------------------- schedules


def test_schedules_at_milestones() -> None:
    long = get_schedule("S_long")
    assert long.iterations == 1_200_000
    assert [long.lr_at(s) for s in (0, 399_999, 400_000, 600_000, 800_000, 999_999, 1_000_000)] == [
        1e-4,
        1e-4,
        5e-5,
        2.5e-5,
        1.25e-5,
        1.25e-5,
        6.25e-6,
    ]
    fine = get_schedule("S_fine")
    assert fine.iterations == 500_000
    assert [fine.lr_at(s) for s in (0, 200_000, 300_000, 400_000)] == [1e-5, 5e-6, 2.5e-6, 1.25e-6]
    short = get_schedule("S_short")
    assert short.iterations == 600_000
    assert [short.lr_at(s) for s in (299_999, 300_000, 400_000, 500_000)] == [1e-4, 5e-5, 2.5e-5, 1.25e-5]


def test_schedule_scaling_lr_and_constant() -> None:
    small = get_schedule("S_long@0.001")
    assert small.iterations == 1200 and small.milestones == (400, 600, 800, 1000)
    assert small.lr_at(599) == 5e-5 and small.lr_at(600) == 2.5e-5
    custom = get_schedule("s_fine@0.01", lr=2e-5, iterations=100)
    assert custom.iterations == 100 and custom.lr_at(2000) == 1e-5
    assert get_schedule("constant", lr=3e-4, iterations=10).lr_at(9) == 3e-4
    for bad in ("S_medium", "S_long@x", "S_long@-1"):
        with pytest.raises(ValueError):
            get_schedule(bad)
    with pytest.raises(ValueError, match="iteration"):
        get_schedule("constant")


# ------------------------------------------------------------------------------------------- stacking


def test_stacking_freezes_all_but_the_trained_network() -> None:
    model = build("FlowNet2CS", width=TINY)
    params = prepare_stack_for_training(model)
    assert frozen_subnetworks(model) == ["flownetc"]
    assert all(not p.requires_grad for p in model.flownetc.parameters())
    assert all(p.requires_grad for p in model.flownets_1.parameters())
    assert {id(p) for p in params} == {id(p) for p in model.flownets_1.parameters()}
    model.train()  # must not undo the freezing
    assert model.training and model.flownets_1.training and not model.flownetc.training
    assert not any(m.training for m in model.flownetc.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(params, lr=1e-3)
    image = torch.rand(1, 3, 64, 64) * 255
    loss, _ = MultiScaleLoss()(model(image, image.roll(2, dims=3)), torch.ones(1, 2, 64, 64))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("flownetc."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("flownets_1."))
    assert all(model.flownetc.conv1[0].weight.grad is None for _ in [0])


def test_stacking_defaults_and_errors() -> None:
    full = build("FlowNet2", width=TINY)
    prepare_stack_for_training(full)
    assert frozen_subnetworks(full) == ["flownetc", "flownets_1", "flownets_2", "flownets_d"]
    full.train()
    assert full.flownetfusion.training and not full.flownets_d.training
    prepare_stack_for_training(full, "all")  # re-deciding undoes the earlier freezing
    assert frozen_subnetworks(full) == [] and all(p.requires_grad for p in full.parameters())
    single = build("FlowNet2S", width=TINY)
    assert len(prepare_stack_for_training(single)) == len(list(single.parameters()))
    with pytest.raises(ValueError, match="no sub-network"):
        prepare_stack_for_training(build("FlowNet2CS", width=TINY), "flownets_2")
    with pytest.raises(ValueError, match="no sub-networks"):
        prepare_stack_for_training(single, "flownetc")


def test_initialise_from_other_stacks(tmp_path: Path) -> None:
    c_model = build("FlowNet2C", width=TINY)
    save_checkpoint(tmp_path / "c.pth.tar", c_model, epoch=1)
    cs = build("FlowNet2CS", width=TINY)
    report = initialise_from(cs, tmp_path / "c.pth.tar")
    assert len(report) == 1 and "flownetc" in report[0]
    for key, value in c_model.state_dict().items():
        assert torch.equal(cs.state_dict()[f"flownetc.{key}"], value)
    css = build("FlowNet2CSS", width=TINY)
    save_checkpoint(tmp_path / "css.pth.tar", css)
    sd = build("FlowNet2SD", width=TINY)
    save_checkpoint(tmp_path / "sd.pth.tar", sd)
    full = build("FlowNet2", width=TINY)
    initialise_from(full, tmp_path / "css.pth.tar", tmp_path / "sd.pth.tar")
    state = full.state_dict()
    assert all(torch.equal(state[k], v) for k, v in css.state_dict().items())
    assert all(torch.equal(state[f"flownets_d.{k}"], v) for k, v in sd.state_dict().items())
    # a stack's own part back out: flownetc of the CSS checkpoint into a standalone FlowNet2C
    standalone = build("FlowNet2C", width=TINY)
    initialise_from(standalone, tmp_path / "css.pth.tar")
    assert torch.equal(standalone.conv1[0].weight, css.flownetc.conv1[0].weight)
    with pytest.raises(CheckpointError, match="shares no network"):
        initialise_from(build("FlowNet2CS", width=TINY), tmp_path / "sd.pth.tar")
    with pytest.raises(CheckpointError, match="mis-shaped"):
        initialise_from(build("FlowNet2CS", width=0.25), tmp_path / "c.pth.tar")


# -------------------------------------------------------------------------------------------- config


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: {name: FlowNet2CS, thin: true}\n"
        "data:\n  train: {name: FlyingChairs, root: /data/chairs, split: train}\n  crop_size: [320, 448]\n"
        "optim: {schedule: S_long@0.01}\n"
    )
    config = load_config(
        path, ["optim.lr=5e-5", "data.train.split=val", "loss.weights=pytorch", "run.seed=3"]
    )
    assert config.model.name == "FlowNet2CS" and config.model.thin
    assert config.optim.lr == 5e-5 and config.run.seed == 3
    assert config.data.train.name == "FlyingChairs" and config.data.train.split == "val"
    assert config.data.train.options == {}
    config = load_config(None, ["data.train.height=128", "loss.weights=[1, 1, 1, 1, 1]"])
    assert config.data.train.options["height"] == 128 and config.data.train.options["num_samples"] == 2000
    assert config.loss.weights == [1.0] * 5
    for bad, match in [
        ("optim.batchsize=4", "unknown setting"),
        ("optim.batch_size=four", "integer"),
        ("model.name=FlowNet3", "model.name"),
        ("data.crop_size=[100, 100]", "multiples of 64"),
        ("optim.schedule=S_long@fast", "schedule"),
        ("optim", "key=value"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(None, [bad])
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


# -------------------------------------------------------------------------------------------- sampler


def test_sampler_is_deterministic_and_resumable() -> None:
    full = list(StepBatchSampler(5, 2, seed=1, total_steps=6))
    tail = list(StepBatchSampler(5, 2, seed=1, total_steps=6, start_step=4))
    assert full[4:] == tail
    assert sorted(i for _, i in [s for batch in full for s in batch][:5]) == [0, 1, 2, 3, 4]  # one epoch
    ranks = [list(StepBatchSampler(5, 1, seed=1, total_steps=6, rank=r, world_size=2)) for r in (0, 1)]
    assert [b for pair in zip(*ranks, strict=True) for b in pair] == [[s] for batch in full for s in batch]
    view = TrainingView(synthetic(3), seed=0, crop_size=(64, 64))
    a, b = view[(0, 1)], view[(0, 1)]
    assert torch.equal(a["image1"], b["image1"]) and a["valid"].dtype == torch.bool


# -------------------------------------------------------------------------------------------- trainer


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    """Fixed seed, 4 pairs, 20 steps: the mean of the last 5 losses is well below that of the first 5
    (measured ratios 0.61-0.75 over seeds 0-3)."""
    overrides = tiny_config(
        tmp_path, "optim.iterations=20", "optim.lr=1e-3", "optim.batch_size=4", "loss.weights=pytorch"
    )
    trainer = Trainer(load_config(None, overrides), train_dataset=synthetic(4), val_dataset=False, log=quiet)
    trainer.run()
    losses = trainer.loss_history
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])


def test_resume_is_exact_and_checkpoints_load(tmp_path: Path) -> None:
    data, val = synthetic(6), synthetic(2, seed=99)
    straight = Trainer(
        load_config(None, tiny_config(tmp_path / "a")), train_dataset=data, val_dataset=False, log=quiet
    )
    straight.run()

    first = load_config(None, tiny_config(tmp_path / "b", "optim.iterations=2", "run.val_interval=2"))
    Trainer(first, train_dataset=data, val_dataset=val, log=quiet).run()
    payload, _ = read_resume(tmp_path / "b")
    assert payload["iteration"] == 2 and payload["resume"]["step"] == 2
    resumed = Trainer(
        load_config(None, tiny_config(tmp_path / "b")),
        train_dataset=data,
        val_dataset=False,
        resume=tmp_path / "b",
        log=quiet,
    )
    assert resumed.step == 2
    resumed.run()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert straight.loss_history[2:] == resumed.loss_history

    # the checkpoints are official-layout files that load_checkpoint reads (extra keys ignored)
    model = load_checkpoint(tmp_path / "b" / "checkpoint_latest.pth.tar")
    assert type(model).__name__ == "FlowNet2S"
    assert model.checkpoint_metadata["iteration"] == 4 and "best_EPE" in model.checkpoint_metadata
    best = load_checkpoint(tmp_path / "b" / "checkpoint_best.pth.tar")
    assert best.checkpoint_metadata["iteration"] == 2
    assert "resume" not in torch.load(tmp_path / "b" / "checkpoint_best.pth.tar", weights_only=True)
    with (tmp_path / "b" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["val_epe"] and set(rows[0]) >= {"lr", "loss", "epe_flow2", "epe_flow6", "time_s"}


def test_stacked_stage_training_keeps_frozen_weights(tmp_path: Path) -> None:
    c_model = build("FlowNet2C", width=TINY)
    save_checkpoint(tmp_path / "c.pth.tar", c_model)
    config = load_config(
        None,
        tiny_config(
            tmp_path / "run",
            "model.name=FlowNet2CS",
            f"model.init=[{tmp_path / 'c.pth.tar'}]",
            "optim.iterations=2",
        ),
    )
    trainer = Trainer(config, train_dataset=synthetic(2), val_dataset=False, log=quiet)
    trainer.run()
    assert not trainer.model.flownetc.training
    for key, value in c_model.state_dict().items():
        assert torch.equal(trainer.model.flownetc.state_dict()[key], value)


def test_distributed_code_path_world_size_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(
        load_config(None, tiny_config(tmp_path, "optim.iterations=2")),
        train_dataset=synthetic(4),
        val_dataset=False,
        log=quiet,
    )
    try:
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert type(trainer.ddp_model).__name__ == "DistributedDataParallel"
        trainer.run()
    finally:
        trainer.close()
    assert not dist.is_initialized()
    assert load_checkpoint(tmp_path / "checkpoint_latest.pth.tar").checkpoint_metadata["iteration"] == 2


def test_amp_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ConfigError, match="CUDA"):
        Trainer(
            load_config(None, tiny_config(tmp_path, "run.amp=true")),
            train_dataset=synthetic(2),
            val_dataset=False,
        )


# ------------------------------------------------------------------------------------------------ CLI


def test_train_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--set", "--resume", "--output", "--device", "--iterations", "--amp"):
        assert flag in out
    parser = train_cli.build_parser()
    assert all(action.help for action in parser._actions)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --config"),
        (["--config", "/nonexistent/c.yaml"], "cannot read config"),
        (["--config", "{cfg}", "--set", "optim.nope=1"], "unknown setting"),
        (["--resume", "/nonexistent/run"], "no checkpoint to resume"),
        (["--config", "{cfg}", "--set", "model.train=flownets_1"], "model.train"),
        (
            ["--config", "{cfg}", "--set", "data.train.name=Sintel", "--set", "data.train.root=/nonexistent"],
            "Sintel",
        ),
    ],
)
def test_train_cli_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run: {{output: {tmp_path / 'out'}, device: cpu}}\n")
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main([a.replace("{cfg}", str(cfg)) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flownet2-train: error:") and message in err[0]


def test_train_cli_runs_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"model: {{name: FlowNet2S, width: {TINY}}}\n"
        "data:\n  train: {name: synthetic, num_samples: 4, height: 64, width: 64, max_displacement: 4}\n"
        "  val: {name: synthetic, num_samples: 2, height: 64, width: 64, seed: 5}\n"
        "optim: {schedule: constant, iterations: 2, batch_size: 2}\n"
        f"run: {{output: {tmp_path / 'out'}, device: cpu, tensorboard: false}}\n"
    )
    assert train_cli.main(["--config", str(cfg), "--quiet"]) == 0
    assert "validation EPE" in capsys.readouterr().out
    assert train_cli.main(["--resume", str(tmp_path / "out"), "--iterations", "3", "--quiet"]) == 0
    assert (
        load_checkpoint(tmp_path / "out" / "checkpoint_latest.pth.tar").checkpoint_metadata["iteration"] == 3
    )
    assert train_cli.main(["--resume", str(tmp_path / "out"), "--print-config"]) == 0
    assert "iterations: null" not in capsys.readouterr().out


STAGE3 = Path(__file__).resolve().parents[1] / "config" / "train_embedded_default_stage3.yaml"


def test_stage3_config_camera_like_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flownet2_ros.bench.data_throughput import STAGE3_TRAIN_DATA
    from flownet2_ros.training import DatasetError, build_dataset

    config = load_config(STAGE3)
    train = config.data.train
    assert train.name == "synthetic" and train.options["motion_distribution"] == "small"
    assert train.options["camera_effects"] is True and train.options["max_displacement"] == 48
    assert train.options["background_photo_prob"] == 0.7 and train.options["seed"] == 2
    assert config.model.init == ["runs/embedded_default_stage2/checkpoint_best.pth.tar"]
    assert config.optim.lr == 1e-4 and config.optim.batch_size == 8
    assert config.run.val_interval == 500 and config.run.checkpoint_interval == 250
    assert {"name": train.name, **train.options} == STAGE3_TRAIN_DATA  # the benchmark measures this config
    # The options reach the generator; bad values fail with the option's name.
    small = {**train.options, "num_samples": 2, "height": 32, "width": 32, "backgrounds": None}
    dataset = build_dataset("synthetic", **small)
    assert "camera effects" in dataset.describe()  # type: ignore[attr-defined]
    with pytest.raises(DatasetError, match="motion_distribution must be one of uniform, small"):
        build_dataset("synthetic", **{**small, "motion_distribution": "big"})
    with pytest.raises(DatasetError, match=r"camera_effects: unknown option\(s\) noise"):
        build_dataset("synthetic", **{**small, "camera_effects": {"noise": 1}})
    # The config trains (tiny network and pairs here; on a fresh machine model.init=[] as documented).
    argv = ["--config", str(STAGE3), "--iterations", "1", "--output", str(tmp_path / "out"), "--quiet"]
    argv += ["--set", "model.init=[]", "--set", "model.thin=false", "--set", f"model.width={TINY}"]
    argv += [
        "--set",
        "data.train.height=64",
        "--set",
        "data.train.width=64",
        "--set",
        "data.val_max_samples=2",
    ]
    argv += ["--batch-size", "2", "--workers", "0", "--no-tensorboard"]
    assert train_cli.main(argv) == 0
    assert "validation EPE" in capsys.readouterr().out


def test_data_throughput_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from flownet2_ros.bench import data_throughput

    argv = ["--set", "data.train.height=64", "--set", "data.train.width=64", "--set", "model.thin=false"]
    argv += ["--set", f"model.width={TINY}", "--batch", "2", "--workers", "0", "--batches", "1"]
    argv += ["--steps", "1", "--train-workers", "0", "--repeat", "1"]
    assert data_throughput.main(argv) == 0
    out = capsys.readouterr().out
    for line in (
        "(a) generator alone, in the main process:",
        "(b) network alone",
        "(c) DataLoader (0 workers)",
    ):
        assert line in out
    assert "samples/s the network consumes" in out and "real loop / network alone" in out
    assert data_throughput.main(["--set", "data.train.motion_distribution=big", "--skip", "network"]) == 2
    assert "motion_distribution" in capsys.readouterr().err
