"""Dataset readers on small fixtures written in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flownet2_ros.data import (
    ChairsSDHom,
    DatasetError,
    FlowFolder,
    FlyingChairs,
    FlyingThings3D,
    Kitti2012,
    KittiFlow,
    MpiSintel,
    read_flow_file,
)
from flownet2_ros.flowio import write_flo as _write_flo
from flownet2_ros.flowio import write_kitti_flow
from flownet2_ros.flowio import write_pfm as _write_pfm

H, W = 12, 16
_rng = np.random.default_rng(1234)


def write_image(path: Path, rgb: np.ndarray | None = None) -> np.ndarray:
    """Write an RGB uint8 image (random if not given) with OpenCV; returns what was written."""
    if rgb is None:
        rgb = _rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return rgb


def write_flo(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_flo(path, flow)


def write_pfm(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_pfm(path, array)


def random_flow(scale: float = 5.0) -> np.ndarray:
    return (_rng.standard_normal((H, W, 2)) * scale).astype(np.float32)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask.astype(np.uint8) * 255)


def check_contract(sample: dict, with_flow: bool = True) -> None:
    for key in ("image1", "image2"):
        assert sample[key].dtype == torch.float32 and sample[key].shape == (3, H, W)
        assert 0 <= float(sample[key].min()) and float(sample[key].max()) <= 255
    assert isinstance(sample["name"], str) and isinstance(sample["sequence"], str)
    if with_flow:
        assert sample["flow"].dtype == torch.float32 and sample["flow"].shape == (2, H, W)
        assert sample["valid"].dtype == torch.bool and sample["valid"].shape == (H, W)
    else:
        assert "flow" not in sample and "valid" not in sample


def as_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------ FlyingChairs


def make_chairs(root: Path, count: int = 3, split: str | None = "1\n2\n1\n") -> dict[int, tuple]:
    data = root / "FlyingChairs_release" / "data"
    written = {}
    for i in range(1, count + 1):
        a = write_image(data / f"{i:05d}_img1.ppm")
        b = write_image(data / f"{i:05d}_img2.ppm")
        f = random_flow()
        write_flo(data / f"{i:05d}_flow.flo", f)
        written[i] = (a, b, f)
    if split is not None:
        (root / "FlyingChairs_release" / "FlyingChairs_train_val.txt").write_text(split)
    return written


def test_flying_chairs_splits_and_contents(tmp_path: Path) -> None:
    written = make_chairs(tmp_path)
    train = FlyingChairs(tmp_path / "FlyingChairs_release", split="train")
    val = FlyingChairs(tmp_path, split="val")  # the parent folder works too
    everything = FlyingChairs(tmp_path / "FlyingChairs_release", split="all")
    assert len(train) == 2 and len(val) == 1 and len(everything) == 3
    assert [r.name for r in train.records] == ["00001", "00003"]
    sample = val[0]
    check_contract(sample)
    a, b, f = written[2]
    assert sample["name"] == "00002" and sample["sequence"] == "00002"
    np.testing.assert_array_equal(as_hwc(sample["image1"]), a)
    np.testing.assert_array_equal(as_hwc(sample["image2"]), b)
    np.testing.assert_array_equal(as_hwc(sample["flow"]), f)
    assert bool(sample["valid"].all())
    assert "FlyingChairs" in train.describe() and "2 pairs" in train.describe()
    assert val[-1]["name"] == "00002"
    with pytest.raises(IndexError):
        val[1]


def test_flying_chairs_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"FlyingChairs: expected .*data/00001_img1\.ppm.*found no"):
        FlyingChairs(tmp_path)
    make_chairs(tmp_path, split=None)
    with pytest.raises(DatasetError, match=r"FlyingChairs_train_val\.txt"):
        FlyingChairs(tmp_path, split="train")
    assert len(FlyingChairs(tmp_path, split="all")) == 3
    (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n2\n")
    with pytest.raises(DatasetError, match=r"2 entries.*3 samples"):
        FlyingChairs(tmp_path, split="train")
    (tmp_path / "FlyingChairs_release" / "data" / "00002_flow.flo").unlink()
    with pytest.raises(DatasetError, match=r"00002_flow\.flo"):
        FlyingChairs(tmp_path, split="all")
    with pytest.raises(ValueError, match="split"):
        FlyingChairs(tmp_path, split="validation")


# ------------------------------------------------------------------------------------------- ChairsSDHom


def test_chairs_sdhom_pfm_with_nan(tmp_path: Path) -> None:
    base = tmp_path / "data" / "train"
    for i in range(2):
        write_image(base / "t0" / f"{i:05d}.png")
        write_image(base / "t1" / f"{i:05d}.png")
        uv = random_flow()
        pfm = np.dstack([uv, np.zeros((H, W), np.float32)])
        if i == 1:
            pfm[3, 4, 0] = np.nan
        write_pfm(base / "flow" / f"{i:05d}.pfm", pfm)
    ds = ChairsSDHom(tmp_path, split="train")
    assert len(ds) == 2
    sample = ds[1]
    check_contract(sample)
    assert sample["name"] == "train/00001"
    assert not bool(sample["valid"][3, 4]) and int(sample["valid"].sum()) == H * W - 1
    assert float(sample["flow"][0, 3, 4]) == 0.0 and bool(torch.isfinite(sample["flow"]).all())
    with pytest.raises(DatasetError, match=r"ChairsSDHom: expected .*data/test/t0/00000\.png"):
        ChairsSDHom(tmp_path, split="test")
    (base / "t1" / "00000.png").unlink()
    with pytest.raises(DatasetError, match=r"t1/00000\.png"):
        ChairsSDHom(tmp_path)


# ---------------------------------------------------------------------------------------- FlyingThings3D


def make_things(root: Path, frames: range = range(6, 9)) -> dict:
    written: dict = {}
    for cam, suffix in (("left", "L"), ("right", "R")):
        seq = Path("TRAIN") / "A" / "0000"
        for n in frames:
            written[("img", cam, n)] = write_image(root / "frames_cleanpass" / seq / cam / f"{n:04d}.png")
            for direction, word in (("into_future", "Future"), ("into_past", "Past")):
                f = random_flow()
                written[(direction, cam, n)] = f
                pfm = np.dstack([f, np.zeros((H, W), np.float32)])
                write_pfm(
                    root
                    / "optical_flow"
                    / seq
                    / direction
                    / cam
                    / f"OpticalFlowInto{word}_{n:04d}_{suffix}.pfm",
                    pfm,
                )
    return written


def test_flying_things_directions_and_cameras(tmp_path: Path) -> None:
    written = make_things(tmp_path)
    forward = FlyingThings3D(tmp_path, pass_name="clean", split="train", camera="left", direction="forward")
    assert len(forward) == 2
    s = forward[0]
    check_contract(s)
    assert s["name"] == "clean/TRAIN/A/0000/left/0006-0007"
    assert s["sequence"] == "clean/TRAIN/A/0000/left"
    np.testing.assert_array_equal(as_hwc(s["image1"]), written[("img", "left", 6)])
    np.testing.assert_array_equal(as_hwc(s["image2"]), written[("img", "left", 7)])
    np.testing.assert_allclose(as_hwc(s["flow"]), written[("into_future", "left", 6)])

    backward = FlyingThings3D(tmp_path, camera="right", direction="backward")
    s = backward[1]
    assert s["name"] == "clean/TRAIN/A/0000/right/0008-0007"
    np.testing.assert_array_equal(as_hwc(s["image1"]), written[("img", "right", 8)])
    np.testing.assert_array_equal(as_hwc(s["image2"]), written[("img", "right", 7)])
    np.testing.assert_allclose(as_hwc(s["flow"]), written[("into_past", "right", 8)])

    both = FlyingThings3D(
        tmp_path, camera="both", direction="both", exclude=["clean/TRAIN/A/0000/left/0006-0007"]
    )
    assert len(both) == 7
    assert "camera=left+right" in both.describe()


def test_flying_things_errors(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"FlyingThings3D: expected .*frames_cleanpass/TRAIN/A/0000/left/0006\.png"
    ):
        FlyingThings3D(tmp_path)
    make_things(tmp_path)
    with pytest.raises(DatasetError, match="frames_finalpass"):
        FlyingThings3D(tmp_path, pass_name="final")
    (tmp_path / "optical_flow/TRAIN/A/0000/into_future/left/OpticalFlowIntoFuture_0007_L.pfm").unlink()
    with pytest.raises(DatasetError, match=r"1 flow files are missing: .*OpticalFlowIntoFuture_0007_L\.pfm"):
        FlyingThings3D(tmp_path)
    with pytest.raises(ValueError, match="camera"):
        FlyingThings3D(tmp_path, camera="center")


# -------------------------------------------------------------------------------------------- MPI-Sintel


def make_sintel(root: Path) -> dict:
    written: dict = {}
    for scene, count in (("alley_1", 3), ("bamboo_2", 2)):
        for n in range(1, count + 1):
            for pss in ("clean", "final"):
                written[(pss, scene, n)] = write_image(root / "training" / pss / scene / f"frame_{n:04d}.png")
                write_image(root / "test" / pss / scene / f"frame_{n:04d}.png")
            if n < count:
                f = random_flow()
                write_flo(root / "training" / "flow" / scene / f"frame_{n:04d}.flo", f)
                occ = _rng.random((H, W)) < 0.2
                write_mask(root / "training" / "occlusions" / scene / f"frame_{n:04d}.png", occ)
                written[("flow", scene, n)] = f
                written[("occ", scene, n)] = occ
    invalid = np.zeros((H, W), bool)
    invalid[0, :5] = True
    write_mask(root / "training" / "invalid" / "alley_1" / "frame_0002.png", invalid)
    return written


def test_sintel_training_and_test(tmp_path: Path) -> None:
    written = make_sintel(tmp_path)
    ds = MpiSintel(tmp_path, split="training", pass_name="final")
    assert len(ds) == 3
    assert [r.name for r in ds.records] == ["alley_1/frame_0001", "alley_1/frame_0002", "bamboo_2/frame_0001"]
    s = ds[1]
    check_contract(s)
    assert s["sequence"] == "alley_1"
    np.testing.assert_array_equal(as_hwc(s["image1"]), written[("final", "alley_1", 2)])
    np.testing.assert_array_equal(as_hwc(s["image2"]), written[("final", "alley_1", 3)])
    np.testing.assert_array_equal(s["occlusion"].numpy(), written[("occ", "alley_1", 2)])
    assert s["occlusion"].dtype == torch.bool
    assert not bool(s["valid"][0, :5].any()) and bool(s["valid"][1:].all())
    assert float(s["flow"][:, 0, :5].abs().sum()) == 0.0
    np.testing.assert_array_equal(as_hwc(s["flow"])[1:], written[("flow", "alley_1", 2)][1:])
    assert bool(ds[0]["valid"].all())

    both = MpiSintel(tmp_path, pass_name="both")
    assert len(both) == 6 and both.records[0].name == "clean/alley_1/frame_0001"
    test = MpiSintel(tmp_path, split="test", pass_name="clean", scenes=["bamboo_2"])
    assert len(test) == 1
    check_contract(test[0], with_flow=False)
    assert "occlusion" not in test[0]
    assert "without ground truth" in test.describe()


def test_sintel_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"MPI-Sintel: expected .*training/clean/<scene>/frame_0001\.png"):
        MpiSintel(tmp_path)
    make_sintel(tmp_path)
    (tmp_path / "training/flow/bamboo_2/frame_0001.flo").unlink()
    with pytest.raises(DatasetError, match=r"bamboo_2/frame_0001\.flo"):
        MpiSintel(tmp_path)
    assert len(MpiSintel(tmp_path, split="test")) == 3  # the test split needs no flow


# ------------------------------------------------------------------------------------------------- KITTI


def make_kitti(root: Path, image_dir: str) -> dict:
    written: dict = {}
    for i in range(2):
        for split in ("training", "testing"):
            written[(split, i, 10)] = write_image(root / split / image_dir / f"{i:06d}_10.png")
            write_image(root / split / image_dir / f"{i:06d}_11.png")
        f = np.round(random_flow() * 64) / 64
        valid = _rng.random((H, W)) < 0.4
        for kind in ("occ", "noc"):
            path = root / "training" / f"flow_{kind}" / f"{i:06d}_10.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_kitti_flow(path, f, valid if kind == "occ" else valid & (_rng.random((H, W)) < 0.5))
        written[("flow", i)] = (f, valid)
    return written


@pytest.mark.parametrize(("year", "image_dir"), [(2012, "colored_0"), (2015, "image_2")])
def test_kitti_sparse(tmp_path: Path, year: int, image_dir: str) -> None:
    written = make_kitti(tmp_path, image_dir)
    ds = KittiFlow(tmp_path)  # the year is detected
    assert ds.label == f"KITTI{year}" and len(ds) == 2
    s = ds[1]
    check_contract(s)
    f, valid = written[("flow", 1)]
    assert s["name"] == "000001"
    np.testing.assert_array_equal(s["valid"].numpy(), valid)
    np.testing.assert_array_equal(as_hwc(s["flow"])[valid], f[valid])
    assert float(s["flow"][:, ~torch.from_numpy(valid)].abs().sum()) == 0.0
    noc = KittiFlow(tmp_path, year=year, flow_type="noc")
    assert int(noc[1]["valid"].sum()) <= int(valid.sum())
    test = KittiFlow(tmp_path, year=year, split="testing")
    check_contract(test[0], with_flow=False)
    np.testing.assert_array_equal(as_hwc(test[0]["image1"]), written[("testing", 0, 10)])


def test_kitti_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot tell the year"):
        KittiFlow(tmp_path)
    with pytest.raises(DatasetError, match=r"KITTI2012: expected .*colored_0/000000_10\.png"):
        Kitti2012(tmp_path)
    make_kitti(tmp_path, "colored_0")
    (tmp_path / "training" / "colored_0" / "000001_11.png").unlink()
    with pytest.raises(DatasetError, match=r"000001_11\.png"):
        Kitti2012(tmp_path)


# ------------------------------------------------------------------------------------------ FlowFolder


def test_flow_folder_naming_and_list(tmp_path: Path) -> None:
    f = random_flow()
    write_image(tmp_path / "a_img1.png")
    write_image(tmp_path / "a_img2.png")
    write_flo(tmp_path / "a_flow.flo", f)
    write_image(tmp_path / "sub" / "b_img1.jpg")
    write_image(tmp_path / "sub" / "b_img2.jpg")
    write_pfm(tmp_path / "sub" / "b_flow.pfm", np.dstack([f, np.zeros((H, W), np.float32)]))
    write_mask(tmp_path / "sub" / "b_occ.png", np.eye(H, W, dtype=bool))
    ds = FlowFolder(tmp_path)
    assert [(r.name, r.sequence) for r in ds.records] == [("a", "."), ("sub/b", "sub")]
    check_contract(ds[0])
    np.testing.assert_array_equal(as_hwc(ds[1]["flow"]), f)
    assert bool(ds[1]["occlusion"][2, 2]) and not bool(ds[1]["occlusion"][2, 3])

    (tmp_path / "pairs.txt").write_text("# img1 img2 flow\na_img1.png sub/b_img2.jpg a_flow.flo\n\n")
    listed = FlowFolder(tmp_path, list_file="pairs.txt")
    assert len(listed) == 1 and listed[0]["name"] == "a_img1"

    write_image(tmp_path / "c_img1.png")
    write_image(tmp_path / "c_img2.png")
    with pytest.raises(DatasetError, match="no flow file"):
        FlowFolder(tmp_path)


def test_flow_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"X_img1\.png, X_img2\.png"):
        FlowFolder(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        FlowFolder(tmp_path / "nope")
    write_image(tmp_path / "a_img1.png")
    with pytest.raises(DatasetError, match=r"a_img2\.png"):
        FlowFolder(tmp_path)
    (tmp_path / "list.txt").write_text("a_img1.png missing.png\n")
    with pytest.raises(DatasetError, match=r"missing\.png"):
        FlowFolder(tmp_path, list_file="list.txt")
    with pytest.raises(DatasetError, match="unknown flow format"):
        read_flow_file(tmp_path / "x.bin")


def test_size_mismatch_and_collate(tmp_path: Path) -> None:
    write_image(tmp_path / "a_img1.png")
    write_image(tmp_path / "a_img2.png")
    write_flo(tmp_path / "a_flow.flo", random_flow())
    write_image(tmp_path / "b_img1.png")
    write_image(tmp_path / "b_img2.png")
    write_flo(tmp_path / "b_flow.flo", np.zeros((H + 1, W, 2), np.float32))
    ds = FlowFolder(tmp_path, transform=lambda s: {**s, "tag": 1})
    assert ds[0]["tag"] == 1
    with pytest.raises(DatasetError, match=r"b_flow\.flo is 16x13 but image .* is 16x12"):
        ds[1]
    write_flo(tmp_path / "b_flow.flo", random_flow())
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image1"].shape == (2, 3, H, W) and batch["valid"].shape == (2, H, W)
    assert batch["name"] == ["a", "b"]
