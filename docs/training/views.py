"""Random re-framings of photos, for the teacher to label afresh (docs/training/views.sh).

    python docs/training/views.py OUT_DIR --per-image 10 --seed 0 PHOTO...

Each view is a crop of one photo: a random share of its area (VIEW_AREA), aspect ratio (VIEW_ASPECT,
as a log-ratio) and position, written losslessly as OUT_DIR/<photo stem>-vNN.png. Training's own
augmentation crops the teacher's map together with the frame, so a crop that cuts the object or leaves
it out keeps the full frame's idea of what is salient; labelling each view with the teacher gives it
the teacher's judgement of that framing instead. A view depends only on (seed, photo stem, N), and a
file already written is kept: reruns are no-ops.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

VIEW_AREA = (0.3, 0.9)
VIEW_ASPECT = (-0.35, 0.35)


def crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of one random view of a height x width photo."""
    area, aspect = rng.uniform(*VIEW_AREA), np.exp(rng.uniform(*VIEW_ASPECT))
    crop_height = min(height, int(round(height * np.sqrt(area / aspect))))
    crop_width = min(width, int(round(width * np.sqrt(area * aspect))))
    top = int(rng.integers(0, height - crop_height + 1))
    left = int(rng.integers(0, width - crop_width + 1))
    return top, left, crop_height, crop_width


def write_views(photo: Path, out: Path, per_image: int, seed: int) -> int:
    """Write the photo's missing views; returns how many were written."""
    if not photo.is_file():
        raise ValueError(f"{photo.name}: no such file")
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{photo.name}: not an image OpenCV can read")
    written = 0
    for number in range(1, per_image + 1):
        path = out / f"{photo.stem}-v{number:02d}.png"
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, zlib.crc32(photo.stem.encode()), number])
        top, left, crop_height, crop_width = crop_box(image.shape[0], image.shape[1], rng)
        view = image[top : top + crop_height, left : left + crop_width]
        temporary = path.with_suffix(".tmp.png")
        if not cv2.imwrite(str(temporary), view):
            raise OSError(f"could not write {path.name}")
        temporary.replace(path)
        written += 1
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write random crops of photos for the teacher to label.")
    parser.add_argument("out", type=Path, help="folder for the views (created)")
    parser.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    parser.add_argument("--per-image", type=int, default=10, help="views per photo (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.per_image < 1:
        print("views.py: --per-image must be at least 1", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        written = sum(write_views(photo, args.out, args.per_image, args.seed) for photo in args.photos)
    except (OSError, ValueError) as error:
        print(f"views.py: {error}", file=sys.stderr)
        return 1
    print(f"{written} new views of {len(args.photos)} photos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
