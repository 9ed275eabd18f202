"""docs/training/views.py: random crops of photos for the teacher to label, the same on every rerun, and
the same crops of the photos' maps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run_views(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "docs/training/views.py"), *args],
                          capture_output=True, text=True, timeout=60)


def read(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def make_photo(path: Path, height: int = 90, width: int = 120) -> np.ndarray:
    """A photo whose every pixel is unique, so a view's position in it can be found again."""
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    image = np.stack([index % 256, index // 256, np.full_like(index, 7)], axis=-1).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def test_views_are_crops_of_the_photo_within_the_area_range_and_reruns_keep_them(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "shelf.png")
    out = tmp_path / "views"
    done = run_views("crops", str(out), str(tmp_path / "shelf.png"), "--per-image", "4", "--seed", "3")
    assert done.returncode == 0, done.stderr
    views = sorted(out.glob("*.png"))
    assert [view.name for view in views] == [f"shelf-v0{n}.png" for n in range(1, 5)]
    boxes = set()
    for view_path in views:
        view = read(view_path)
        top, left = np.argwhere((photo == view[0, 0]).all(axis=-1))[0]
        height, width = view.shape[:2]
        assert np.array_equal(view, photo[top : top + height, left : left + width])
        assert 0.25 <= height * width / photo[..., 0].size <= 0.95  # VIEW_AREA, with rounding
        boxes.add((top, left, height, width))
    assert len(boxes) == 4  # four different framings

    first = {view.name: view.read_bytes() for view in views}
    (out / "shelf-v02.png").unlink()
    assert run_views("crops", str(out), str(tmp_path / "shelf.png"), "--per-image", "4", "--seed", "3").returncode == 0
    assert {view.name: view.read_bytes() for view in sorted(out.glob("*.png"))} == first  # same seed, same views
    assert sorted(path.name for path in out.iterdir()) == sorted(first)  # no temporary file left behind


def test_a_missing_photo_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    done = run_views("crops", str(tmp_path / "views"), str(tmp_path / "absent.jpg"))
    assert done.returncode == 1 and done.stderr.strip() == "views.py: absent.jpg: no such file"
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    done = run_views("crops", str(tmp_path / "views"), str(tmp_path / "broken.jpg"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not an image" in done.stderr


def write_labelled(root: Path, frames: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A root as `vsod-train label` writes it: one-frame sequences, a frame and its map each."""
    lines = []
    for name, (frame, saliency) in frames.items():
        for folder, image, suffix in (("JPEGImages", frame, "jpg"), ("Annotations", saliency, "png")):
            (root / folder / "480p" / name).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / folder / "480p" / name / f"00000.{suffix}"), image)
        lines.append(f"/JPEGImages/480p/{name}/00000.jpg /Annotations/480p/{name}/00000.png")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "train.txt").write_text("".join(f"{line}\n" for line in lines))
    (root / "labels.json").write_text(json.dumps({"format": "vsod-labels/1", "sequences": {}}))


def test_cropped_maps_cut_each_views_map_from_its_photos_map_by_the_views_box(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "shelf.png")
    assert run_views("crops", str(tmp_path / "src"), str(tmp_path / "shelf.png"), "--per-image", "2").returncode == 0
    photo_map = (np.arange(photo.shape[0] * photo.shape[1]) % 251).reshape(photo.shape[:2]).astype(np.uint8)
    write_labelled(tmp_path / "photos", {"shelf": (photo, photo_map)})
    views = {path.stem: (read(path), np.zeros(read(path).shape[:2], np.uint8))
             for path in sorted((tmp_path / "src").glob("*.png"))}
    write_labelled(tmp_path / "views", {"shelf": (photo, np.zeros_like(photo_map)), **views})

    done = run_views("cropped-maps", str(tmp_path / "views"), str(tmp_path / "photos"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert (out / "ImageSets/480p/train.txt").read_text() == (tmp_path / "views/ImageSets/480p/train.txt").read_text()
    assert (out / "labels.json").is_file()
    assert np.array_equal(read(out / "Annotations/480p/shelf/00000.png", cv2.IMREAD_GRAYSCALE), photo_map)  # the photo's own
    for name, (view, _) in views.items():
        top, left = np.argwhere((photo == view[0, 0]).all(axis=-1))[0]
        height, width = view.shape[:2]
        cropped = read(out / "Annotations/480p" / name / "00000.png", cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(cropped, photo_map[top : top + height, left : left + width])
        assert (out / "JPEGImages/480p" / name / "00000.jpg").read_bytes() == \
            (tmp_path / "views/JPEGImages/480p" / name / "00000.jpg").read_bytes()

    # Another seed's boxes do not fit these views: one line and exit 1, not maps cut from the wrong place.
    done = run_views("cropped-maps", str(tmp_path / "views"), str(tmp_path / "photos"), str(tmp_path / "wrong"), "--seed", "1")
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "differ in size" in done.stderr
