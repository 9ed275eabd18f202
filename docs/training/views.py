"""Random re-framings of photos, for the teacher to label afresh (docs/training/views.sh).

    python docs/training/views.py crops OUT_DIR --per-image 10 --seed 0 PHOTO...
    python docs/training/views.py cropped-maps VIEWS_ROOT PHOTOS_ROOT OUT_ROOT --seed 0

`crops`: each view is a crop of one photo, a random share of its area (VIEW_AREA), aspect ratio
(VIEW_ASPECT, as a log-ratio) and position, written losslessly as OUT_DIR/<photo stem>-vNN.png. A view
depends only on (seed, photo stem, N), and a file already written is kept: reruns are no-ops.

Training's own augmentation crops the teacher's map together with the frame, so a crop that cuts the
object or leaves it out keeps the full frame's idea of what is salient; labelling each view with the
teacher (`vsod-train label`) gives it the teacher's judgement of that framing instead.

`cropped-maps` builds the comparison that tells the two apart: VIEWS_ROOT's frames (the labelled views
and photos) with, instead of the teacher's map of each view, the same crop of its photo's map in
PHOTOS_ROOT (the labelled photos), in OUT_ROOT. Same frames, same boxes; only the labels differ.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from distill.teachers.labelling import RESOLUTION
from service.video import write_atomic

VIEW_AREA = (0.3, 0.9)
VIEW_ASPECT = (-0.35, 0.35)
VIEW_NAME = re.compile(r"(?P<stem>.+)-v(?P<number>\d{2})$")


def crop_box(height: int, width: int, seed: int, stem: str, number: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of view `number` of the height x width photo `stem`."""
    rng = np.random.default_rng([seed, zlib.crc32(stem.encode()), number])
    area, aspect = rng.uniform(*VIEW_AREA), np.exp(rng.uniform(*VIEW_ASPECT))
    crop_height = min(height, int(round(height * np.sqrt(area / aspect))))
    crop_width = min(width, int(round(width * np.sqrt(area * aspect))))
    top = int(rng.integers(0, height - crop_height + 1))
    left = int(rng.integers(0, width - crop_width + 1))
    return top, left, crop_height, crop_width


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write atomically: a file that exists is complete."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path.name}")
    write_atomic(path, data.tobytes())


def _read(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path.name}: no such file")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"{path.name}: not an image OpenCV can read")
    return image


def write_views(photo: Path, out: Path, per_image: int, seed: int) -> int:
    """Write the photo's missing views; returns how many were written."""
    image = _read(photo, cv2.IMREAD_COLOR)
    written = 0
    for number in range(1, per_image + 1):
        path = out / f"{photo.stem}-v{number:02d}.png"
        if path.is_file():
            continue
        top, left, crop_height, crop_width = crop_box(image.shape[0], image.shape[1], seed, photo.stem, number)
        _write_png(path, image[top : top + crop_height, left : left + crop_width])
        written += 1
    return written


def write_cropped_maps(views_root: Path, photos_root: Path, out_root: Path, seed: int) -> int:
    """OUT_ROOT: VIEWS_ROOT's frames, each with its photo's map cropped as the view was; returns the
    number of sequences. A photo itself keeps its map as it is."""
    list_name = Path("ImageSets") / RESOLUTION / "train.txt"
    lines = (views_root / list_name).read_text().splitlines() if (views_root / list_name).is_file() else []
    if not lines:
        raise ValueError(f"{views_root.name} has no train list: label the views first")
    for line in lines:
        image_entry, mask_entry = line.split()
        name = Path(image_entry).parent.name
        view = VIEW_NAME.match(name)
        stem = view["stem"] if view else name
        photo_map = _read(photos_root / "Annotations" / RESOLUTION / stem / "00000.png", cv2.IMREAD_GRAYSCALE)
        if view:
            top, left, crop_height, crop_width = crop_box(photo_map.shape[0], photo_map.shape[1], seed, stem, int(view["number"]))
            photo_map = photo_map[top : top + crop_height, left : left + crop_width]
        frame = views_root / image_entry.lstrip("/")
        if _read(frame, cv2.IMREAD_COLOR).shape[:2] != photo_map.shape:
            raise ValueError(f"{name}: the view and its cropped map differ in size (another seed?)")
        for entry in (image_entry, mask_entry):
            (out_root / entry.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(frame, out_root / image_entry.lstrip("/"))
        _write_png(out_root / mask_entry.lstrip("/"), photo_map)
    (out_root / list_name).parent.mkdir(parents=True, exist_ok=True)
    (out_root / list_name).write_text("".join(f"{line}\n" for line in lines))
    shutil.copyfile(views_root / "labels.json", out_root / "labels.json")  # the same teacher's maps, cropped
    return len(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Random crops of photos for the teacher to label, and their "
                                     "photos' maps cropped the same way.")
    commands = parser.add_subparsers(dest="command", required=True)
    crops = commands.add_parser("crops", help="write random crops of photos")
    crops.add_argument("out", type=Path, help="folder for the views (created)")
    crops.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    crops.add_argument("--per-image", type=int, default=10, help="views per photo (default 10)")
    crops.add_argument("--seed", type=int, default=0)
    maps = commands.add_parser("cropped-maps", help="the labelled views with their photos' maps, cropped")
    maps.add_argument("views_root", type=Path, help="the labelled views (vsod-train label)")
    maps.add_argument("photos_root", type=Path, help="the labelled photos the views were cut from")
    maps.add_argument("out_root", type=Path, help="the root to write (created)")
    maps.add_argument("--seed", type=int, default=0, help="the seed the views were cut with")
    args = parser.parse_args(argv)
    try:
        if args.command == "crops":
            if args.per_image < 1:
                raise ValueError("--per-image must be at least 1")
            args.out.mkdir(parents=True, exist_ok=True)
            written = sum(write_views(photo, args.out, args.per_image, args.seed) for photo in args.photos)
            print(f"{written} new views of {len(args.photos)} photos in {args.out}")
        else:
            count = write_cropped_maps(args.views_root, args.photos_root, args.out_root, args.seed)
            print(f"{count} frames with their photos' maps cropped in {args.out_root}")
    except (OSError, ValueError) as error:
        print(f"views.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
