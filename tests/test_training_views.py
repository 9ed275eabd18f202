"""docs/training/views.py: random crops of photos for the teacher to label, the same on every rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def run_views(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "docs/training/views.py"), str(out), *args],
                          capture_output=True, text=True, timeout=60)


def make_photo(path: Path, height: int = 90, width: int = 120) -> np.ndarray:
    """A photo whose every pixel is unique, so a view's position in it can be found again."""
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    image = np.stack([index % 256, index // 256, np.full_like(index, 7)], axis=-1).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def test_views_are_crops_of_the_photo_within_the_area_range_and_reruns_keep_them(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "shelf.png")
    out = tmp_path / "views"
    done = run_views(out, str(tmp_path / "shelf.png"), "--per-image", "4", "--seed", "3")
    assert done.returncode == 0, done.stderr
    views = sorted(out.glob("*.png"))
    assert [view.name for view in views] == [f"shelf-v0{n}.png" for n in range(1, 5)]
    boxes = set()
    for view_path in views:
        view = cv2.imread(str(view_path))
        assert view is not None
        top, left = np.argwhere((photo == view[0, 0]).all(axis=-1))[0]
        height, width = view.shape[:2]
        assert np.array_equal(view, photo[top : top + height, left : left + width])
        assert 0.25 <= height * width / photo[..., 0].size <= 0.95  # VIEW_AREA, with rounding
        boxes.add((top, left, height, width))
    assert len(boxes) == 4  # four different framings

    first = {view.name: view.read_bytes() for view in views}
    (out / "shelf-v02.png").unlink()
    assert run_views(out, str(tmp_path / "shelf.png"), "--per-image", "4", "--seed", "3").returncode == 0
    assert {view.name: view.read_bytes() for view in sorted(out.glob("*.png"))} == first  # same seed, same views
    assert not list(out.glob("*.tmp.png"))


def test_a_missing_photo_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    done = run_views(tmp_path / "views", str(tmp_path / "absent.jpg"))
    assert done.returncode == 1 and done.stderr.strip() == "views.py: absent.jpg: no such file"
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    done = run_views(tmp_path / "views", str(tmp_path / "broken.jpg"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not an image" in done.stderr
