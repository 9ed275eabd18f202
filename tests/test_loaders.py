"""Dataset loaders against small fixture trees in each benchmark's real on-disk layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from distill.data import DATASETS, DatasetError, load_dataset, read_mask, read_rgb
from distill.data.loaders import load_davis, load_davsod, load_duts, load_fbms, load_segtrack_v2, match_masks

H, W = 24, 32
# The first entries of the DAVIS palette: label 1 is dark red, which a grey threshold would lose.
DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 - 4) * 3


def square(offset: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[4 + offset : 12 + offset, 6 + offset : 16 + offset] = True
    return mask


def write_frame(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask.astype(np.uint8) * 255)


def write_palette(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE)
    image.save(path)


def davis_2016(root: Path) -> None:
    for split, name in (("val", "bear"), ("train", "car")):
        lines = []
        for t in range(4):
            write_frame(root / f"JPEGImages/480p/{name}/{t:05d}.jpg", t)
            write_mask(root / f"Annotations/480p/{name}/{t:05d}.png", square(t))
            lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png")
        (root / "ImageSets/480p").mkdir(parents=True, exist_ok=True)
        (root / f"ImageSets/480p/{split}.txt").write_text("\n".join(lines) + "\n")


def test_davis_2016(tmp_path: Path) -> None:
    davis_2016(tmp_path)
    (val,) = load_davis(tmp_path, "val")
    assert val.name == "bear" and [p.name for p in val.frames] == [f"{t:05d}.jpg" for t in range(4)]
    assert sorted(val.masks) == [0, 1, 2, 3]
    assert np.array_equal(read_mask(val.masks[2]), square(2))
    assert read_rgb(val.frames[0]).shape == (H, W, 3)
    assert [s.name for s in load_davis(tmp_path, "train")] == ["car"]
    assert [s.name for s in load_davis(tmp_path, None)] == ["bear", "car"]
    with pytest.raises(DatasetError, match=r"no split 'test'.*train, val"):
        load_davis(tmp_path, "test")


def test_davis_2017_palette_masks(tmp_path: Path) -> None:
    for name in ("dogs-jump", "bike-packing"):
        for t in range(3):
            write_frame(tmp_path / f"JPEGImages/480p/{name}/{t:05d}.jpg", t)
            labels = np.zeros((H, W), np.uint8)
            labels[2:8, 2:8] = 1
            labels[14:20, 20:30] = 2
            write_palette(tmp_path / f"Annotations/480p/{name}/{t:05d}.png", labels)
    for year, names in (("2017", "dogs-jump\nbike-packing\n"), ("2016", "bike-packing\n")):
        (tmp_path / f"ImageSets/{year}").mkdir(parents=True)
        (tmp_path / f"ImageSets/{year}/val.txt").write_text(names)
        (tmp_path / f"ImageSets/{year}/trainval.txt").write_text(names)
    (tmp_path / "ImageSets/2017/val.txt").unlink()
    assert [s.name for s in load_davis(tmp_path, "val")] == ["bike-packing"]  # the 2016 subset list
    (tmp_path / "ImageSets/2017/val.txt").write_text("dogs-jump\nbike-packing\n")
    sequences = load_dataset("davis", tmp_path, "val")
    assert [s.name for s in sequences] == ["dogs-jump", "bike-packing"]
    mask = read_mask(sequences[0].masks[1])
    assert mask.dtype == bool and mask.sum() == 36 + 60  # both objects, dark-red label 1 included
    assert mask[3, 3] and mask[15, 25] and not mask[10, 10]


def test_davis_without_image_sets_takes_every_folder(tmp_path: Path) -> None:
    davis_2016(tmp_path)
    for list_file in (tmp_path / "ImageSets/480p").iterdir():
        list_file.unlink()
    assert [s.name for s in load_davis(tmp_path)] == ["bear", "car"]


def test_davsod_jpg_and_png_frames_with_split(tmp_path: Path) -> None:
    for name, ext in (("select_0001", "jpg"), ("select_0002", "png")):
        for t in range(5):
            write_frame(tmp_path / f"Validation Set/{name}/Imgs/{name}_{t:04d}.{ext}", t)
            write_mask(tmp_path / f"Validation Set/{name}/GT_object_level/{name}_{t:04d}.png", square(t % 3))
    write_frame(tmp_path / "Training Set/select_0100/Imgs/0001.jpg", 0)
    write_mask(tmp_path / "Training Set/select_0100/GT_object_level/0001.png", square(0))
    sequences = load_davsod(tmp_path, "Validation Set")
    assert [s.name for s in sequences] == ["select_0001", "select_0002"]
    assert all(len(s.frames) == 5 and sorted(s.masks) == list(range(5)) for s in sequences)
    assert sequences[1].frames[0].suffix == ".png"
    assert np.array_equal(read_mask(sequences[0].masks[4]), square(1))
    everything = load_dataset("davsod", tmp_path)
    assert [s.name for s in everything] == [
        "Training Set/select_0100", "Validation Set/select_0001", "Validation Set/select_0002"]
    with pytest.raises(DatasetError, match="no split folder 'Test'"):
        load_davsod(tmp_path, "Test")


def test_segtrack_v2_ground_truth_folder_sparse_and_unpadded(tmp_path: Path) -> None:
    for t in range(1, 12):
        write_frame(tmp_path / f"bird_of_paradise/Imgs/frame{t}.png", t)
    for t in (1, 5, 10):
        write_mask(tmp_path / f"bird_of_paradise/ground-truth/frame{t}.png", square(t % 4))
    write_frame(tmp_path / "cheetah/Imgs/00001.bmp", 0)
    write_mask(tmp_path / "cheetah/GT_object_level/00001.png", square(0))
    sequences = load_dataset("segtrack", tmp_path)
    bird = sequences[0]
    assert bird.name == "bird_of_paradise"
    assert [p.stem for p in bird.frames] == [f"frame{t}" for t in range(1, 12)]  # natural order: 2 before 10
    assert sorted(bird.masks) == [0, 4, 9] and bird.masks[9].name == "frame10.png"
    assert [s.name for s in sequences] == ["bird_of_paradise", "cheetah"]
    assert load_segtrack_v2(tmp_path / "cheetah")[0].name == "cheetah"  # a root that is one sequence


def test_fbms_sparse_ground_truth(tmp_path: Path) -> None:
    for t in range(1, 41):
        write_frame(tmp_path / f"test/cars1/Imgs/cars1_{t:02d}.jpg", t)
    for t in (1, 20, 40):
        write_mask(tmp_path / f"test/cars1/GT_object_level/cars1_{t:02d}.png", square(1))
    (sequence,) = load_fbms(tmp_path, "test")
    assert len(sequence.frames) == 40 and sorted(sequence.masks) == [0, 19, 39]
    assert load_dataset("fbms", tmp_path, "test")[0].name == "cars1"


def test_masks_match_by_number_when_stems_differ() -> None:
    frames = [Path(f"f_{t:05d}.jpg") for t in range(3)]
    assert match_masks(frames, [Path("f_1.png"), Path("x.png")]) == {1: Path("f_1.png")}
    assert match_masks(frames, [Path("f_00002.png")]) == {2: Path("f_00002.png")}


def test_duts_one_frame_sequences(tmp_path: Path) -> None:
    for stem in ("ILSVRC2012_test_00000004", "sun_aaaa", "no_mask"):
        write_frame(tmp_path / f"DUTS-TR/DUTS-TR-Image/{stem}.jpg", len(stem))
    for stem in ("ILSVRC2012_test_00000004", "sun_aaaa"):
        write_mask(tmp_path / f"DUTS-TR/DUTS-TR-Mask/{stem}.png", square(2))
    for root in (tmp_path, tmp_path / "DUTS-TR"):
        sequences = load_duts(root)
        assert [s.name for s in sequences] == ["ILSVRC2012_test_00000004", "sun_aaaa"]
        assert all(len(s.frames) == 1 and list(s.masks) == [0] for s in sequences)
    assert len(load_dataset("DUTS-TR", tmp_path)) == 2


def test_clear_errors(tmp_path: Path) -> None:
    assert set(DATASETS) == {"davis", "davsod", "segtrack", "fbms", "duts", "labelled"}
    with pytest.raises(ValueError, match=r"unknown dataset 'kitti'.*davis"):
        load_dataset("kitti", tmp_path)
    missing = tmp_path / "nowhere"
    for name in DATASETS:
        with pytest.raises(ValueError, match="does not exist") as caught:
            load_dataset(name, missing)
        assert isinstance(caught.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no davsod sequences"):
        load_dataset("davsod", tmp_path / "empty")
    with pytest.raises(ValueError, match="JPEGImages/480p"):
        load_dataset("davis", tmp_path / "empty")
    with pytest.raises(ValueError, match="has no splits"):
        load_dataset("segtrack", tmp_path / "empty", "val")


def test_mask_and_frame_formats(tmp_path: Path) -> None:
    zero_one = square(0).astype(np.uint8)  # a 0/1 mask, as some repackagings ship
    cv2.imwrite(str(tmp_path / "01.png"), zero_one)
    assert np.array_equal(read_mask(tmp_path / "01.png"), square(0))
    rgb = np.repeat(square(1)[..., None] * 255, 3, axis=2).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), square(1))
    grey = square(2).astype(np.uint8) * 200 + 20  # soft GT: only > 127 is foreground
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert np.array_equal(read_mask(tmp_path / "grey.png"), square(2))
    deep = square(3).astype(np.uint16) * 65535
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert np.array_equal(read_mask(tmp_path / "deep.png"), square(3))

    cv2.imwrite(str(tmp_path / "grey.jpg"), np.full((H, W), 90, np.uint8))
    assert read_rgb(tmp_path / "grey.jpg").shape == (H, W, 3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        read_rgb(broken)
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        read_mask(broken)
    with pytest.raises(ValueError, match=r"absent\.png"):
        read_rgb(tmp_path / "absent.png")
