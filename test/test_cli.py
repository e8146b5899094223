"""flownet2-infer and flownet2-benchmark: outputs, one-line failures, exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from flownet2_ros.cli import benchmark as benchmark_cli
from flownet2_ros.cli import infer
from flownet2_ros.flowio import read_flo
from flownet2_ros.models import build


@pytest.fixture(scope="module")
def thin_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("ckpt") / "thin_s.pth.tar"
    torch.save({"state_dict": build("FlowNet2S", thin=True).state_dict(), "epoch": 0}, path)
    return path


def _write_frames(folder, count=3, size=(70, 90)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[0], size[1] + 2 * count, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        path = folder / f"f{i:02d}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(base[:, i : i + size[1]]))
        paths.append(path)
    return paths


def _fails(argv, capsys, expected):
    with pytest.raises(SystemExit) as info:
        infer.main([str(a) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flownet2-infer: error:"), err
    assert expected in err[0]


def test_infer_folder_writes_flo_and_png(tmp_path, thin_checkpoint, capsys):
    frames = _write_frames(tmp_path / "frames")
    out = tmp_path / "out"
    assert (
        infer.main([str(tmp_path / "frames"), "-c", str(thin_checkpoint), "-o", str(out), "--max-flow", "5"])
        == 0
    )
    stdout = capsys.readouterr().out
    assert "f00 -> f01" in stdout and "f01 -> f02" in stdout and "ms" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["f00.flo", "f00.png", "f01.flo", "f01.png"]
    flow = read_flo(out / "f00.flo")
    assert flow.shape == (70, 90, 2) and np.isfinite(flow).all()
    assert cv2.imread(str(out / "f01.png")).shape == (70, 90, 3)
    # explicit pair of files, pad mode, no PNGs
    out2 = tmp_path / "out2"
    assert (
        infer.main(
            [
                *map(str, frames[:2]),
                "-c",
                str(thin_checkpoint),
                "-o",
                str(out2),
                "--mode",
                "pad",
                "--no-png",
                "-q",
            ]
        )
        == 0
    )
    assert [p.name for p in out2.iterdir()] == ["f00.flo"]


def test_infer_video(tmp_path, thin_checkpoint, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    assert writer.isOpened()
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 * i, dtype=np.uint8))
    writer.release()
    assert infer.main([str(video), "-c", str(thin_checkpoint), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.flo")) == [f"frame_00000{i}.flo" for i in range(3)]


def test_infer_without_checkpoint_uses_the_embedded_model_or_refuses(
    tmp_path, thin_checkpoint, capsys, monkeypatch
):
    from flownet2_ros.models import embedded

    frames = _write_frames(tmp_path / "frames", 2)
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path / "no_weights")
    _fails([*frames, "-o", tmp_path / "o"], capsys, "no --checkpoint given and the embedded default model")
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(thin_checkpoint, weights / embedded.DEFAULT_CHECKPOINT_NAME)
    monkeypatch.setattr(embedded, "WEIGHTS_DIR", weights)
    assert infer.main([*map(str, frames), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert (tmp_path / "o" / "f00.flo").is_file()


def test_infer_errors_are_one_line(tmp_path, thin_checkpoint, capsys):
    frames = _write_frames(tmp_path / "frames", 2)
    out = tmp_path / "o"
    _fails([frames[0], tmp_path / "missing.png", "-c", thin_checkpoint, "-o", out], capsys, "not found")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    _fails([frames[0], garbage, "-c", thin_checkpoint, "-o", out], capsys, "not a readable image")
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.zeros((30, 40, 3), np.uint8))
    _fails([frames[0], other, "-c", thin_checkpoint, "-o", out], capsys, "differ in size")
    _fails(
        [*frames, "-c", thin_checkpoint, "-m", "FlowNet2C", "-o", out],
        capsys,
        "holds FlowNet2S weights, not FlowNet2C",
    )
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(b"\x80\x02garbage")
    _fails([*frames, "-c", corrupt, "-o", out], capsys, "not a readable PyTorch checkpoint")
    _fails([*frames, "-c", tmp_path / "nope.pth", "-o", out], capsys, "checkpoint not found")
    if not torch.cuda.is_available():
        _fails(
            [*frames, "-c", thin_checkpoint, "-o", out, "--fp16", "--device", "cpu"],
            capsys,
            "--fp16 needs a CUDA",
        )
        _fails([*frames, "-c", thin_checkpoint, "-o", out, "--device", "cuda"], capsys, "no CUDA device")
    _fails([frames[0], "-c", thin_checkpoint, "-o", out], capsys, "one image gives no pair")
    fake_video = tmp_path / "clip.mp4"
    fake_video.write_bytes(b"garbage")
    _fails([fake_video, "-c", thin_checkpoint, "-o", out], capsys, "not a readable video")


def test_help_explains_every_flag(capsys):
    for module in (infer, benchmark_cli):
        with pytest.raises(SystemExit) as info:
            module.main(["--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        for action in module.build_parser()._actions:
            assert action.help, f"{module.PROG}: {action.option_strings} has no help"
            for option in action.option_strings:
                assert option in text


def test_console_scripts_are_installed():
    for script in ("flownet2-infer", "flownet2-benchmark"):
        path = shutil.which(script) or shutil.which(
            script, path=str(__import__("pathlib").Path(sys.executable).parent)
        )
        assert path, f"{script} not on PATH"
        result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_benchmark_small_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--stacks",
        "FlowNet2S",
        "--size",
        "128x64",
        "--repeats",
        "1",
        "--thin",
        "--onnx",
        "--json",
        str(out),
    ]
    assert benchmark_cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "machine:" in text and "correlation" in text
    import json

    results = json.loads(out.read_text())
    assert [row["stack"] for row in results["stacks"]] == ["FlowNet2S", "FlowNet2S-thin"]
    assert all(
        row["forward_ms"] > 0 and row["estimate_ms"] > row["forward_ms"] / 10 for row in results["stacks"]
    )
    assert all(row["batch"] == 1 and row["mode"] == "eager" for row in results["stacks"])
    onnx_rows = results["onnx_runtime"]
    assert [r["stack"] for r in onnx_rows] == ["FlowNet2S", "FlowNet2S-thin"]
    assert all(r["ort_plugin_ms"] > 0 and r["ort_decomposed_ms"] > 0 for r in onnx_rows)
    with pytest.raises(SystemExit) as info:
        benchmark_cli.main(["--size", "100x64"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        benchmark_cli.main(["--stacks", "--no-correlation", "--engine", str(tmp_path / "none.engine")])
    assert info.value.code == 2  # no TensorRT / no engine: one-line reason
    assert "error:" in capsys.readouterr().err


def test_compare_measures_the_learned_model_at_each_size_against_classical_flow(tmp_path, capsys):
    import json

    from flownet2_ros.cli import compare

    argv = ["--pairs", "2", "--size", "160x128", "--network-sizes", "auto", "128x64"]
    argv += ["--methods", "dis_ultrafast", "-o", str(tmp_path), "-q"]
    assert compare.main(argv) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    methods = list(dict.fromkeys(row["method"] for row in results["rows"]))
    assert methods == [
        "FlowNet2S from the embedded default model (cpu)",
        "FlowNet2S from the embedded default model (cpu) at 128×64",
        "OpenCV dis_ultrafast",
    ]
    assert [row["dataset"] for row in results["rows"]][::3] == ["synthetic", "photos", "photos_large"]
    for row in results["rows"]:
        assert row["pairs"] == 2 and row["time_ms"] > 0 and 0 <= row["epe"] < 50
        assert f"| {row['method']} |" in table
    assert "Measured on" in (tmp_path / "table.md").read_text()


def test_compare_measures_the_large_motion_set_alone(tmp_path, capsys):
    import json

    from flownet2_ros.cli import compare

    argv = ["--sets", "photos_large", "--pairs", "2", "--size", "160x128", "--network-sizes", "auto"]
    assert compare.main([*argv, "--methods", "dis_ultrafast", "-o", str(tmp_path), "-q"]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(row["method"], row["dataset"]) for row in results["rows"]] == [
        ("FlowNet2S from the embedded default model (cpu)", "photos_large"),
        ("OpenCV dis_ultrafast", "photos_large"),
    ]
    header = table.splitlines()[0]
    assert header == "| method | photos_large EPE px | photos_large Fl-all % | photos_large ms/pair |"
    dis = next(line for line in table.splitlines() if line.startswith("| OpenCV dis_ultrafast |"))
    assert len(dis.strip("|").split("|")) == 4
    assert all(row["pairs"] == 2 and row["time_ms"] > 0 and row["epe"] > 0 for row in results["rows"])


def test_compare_sets_help_and_choices(capsys):
    from flownet2_ros.cli import compare

    with pytest.raises(SystemExit) as info:
        compare.main(["--help"])
    assert info.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    for name in ("synthetic:", "photos:", "photos_large:", "40-96px", "seed--seed+1"):
        assert name in text
    with pytest.raises(SystemExit) as info:
        compare.main(["--sets", "kitti"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_compare_rejects_bad_network_sizes(capsys):
    from flownet2_ros.cli import compare

    with pytest.raises(SystemExit):
        compare.main(["--network-sizes", "100x100"])
    assert "multiples of 64" in capsys.readouterr().err


def test_infer_batch_gives_the_same_flow(tmp_path, thin_checkpoint, capsys):
    _write_frames(tmp_path / "frames", count=6)
    outs = {}
    for batch in (1, 4):
        out = tmp_path / f"out{batch}"
        argv = [str(tmp_path / "frames"), "-c", str(thin_checkpoint), "-o", str(out), "--batch", str(batch)]
        assert infer.main([*argv, "--no-png", "--device", "cpu", "--precision", "auto"]) == 0
        outs[batch] = {p.name: read_flo(p) for p in sorted(out.glob("*.flo"))}
    assert "(batch of 4)" in capsys.readouterr().out
    assert list(outs[1]) == list(outs[4]) == [f"f{i:02d}.flo" for i in range(5)]
    for name, flow in outs[1].items():
        np.testing.assert_allclose(outs[4][name], flow, atol=1e-5)
    _fails(
        [str(tmp_path / "frames"), "-c", thin_checkpoint, "-o", tmp_path / "x", "--batch", "0"],
        capsys,
        "--batch",
    )


def test_benchmark_batches_report_per_pair(tmp_path, capsys):
    import json

    out = tmp_path / "bench.json"
    argv = ["--stacks", "FlowNet2S", "--thin", "--size", "128x64", "--repeats", "1", "--batch", "1", "4"]
    assert benchmark_cli.main([*argv, "--no-correlation", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["stacks"]
    assert [(r["stack"], r["batch"]) for r in rows] == [
        ("FlowNet2S", 1),
        ("FlowNet2S", 4),
        ("FlowNet2S-thin", 1),
        ("FlowNet2S-thin", 4),
    ]
    for r in rows:
        assert r["forward_ms_per_pair"] == pytest.approx(r["forward_ms"] / r["batch"])
        assert r["precision"] == "fp32" and r["memory_format"] == "channels_last"
    assert "pairs/s against batch 1 (forward): batch 4:" in text
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as info:
            benchmark_cli.main(["--stacks", "FlowNet2S", "--modes", "graph", "--no-correlation"])
        assert info.value.code == 2
        assert "need a CUDA device" in capsys.readouterr().err
