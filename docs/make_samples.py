"""Make docs/samples.png: the default model's masks on the real videos that Debian's opencv-doc ships.

    python docs/make_samples.py            # needs opencv-doc (apt-get install opencv-doc)
    python docs/make_samples.py --threads 2

It runs the eager model on one torch thread by default: beside a training job, two threads were
many times slower than one (bench/README.md, "Threads and OpenMP"); on an idle machine both take
well under a minute for the four videos.

One row per video: at PICKS frames spread evenly over the whole clip (not chosen by how they look),
the frame with its mask tinted red, then the mask. The model runs over every frame in order, so
each mask has the temporal context a stream would have. These videos have no hand-made ground
truth: the picture shows what the model does on real footage; the scores are in the model's report
(cup.mp4 and box.mp4 are kept out of training and tuning: pictures only).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from service.model import Predictor
from service.video import open_media

DOC = Path("/usr/share/doc/opencv-doc")
VIDEOS = [
    DOC / "examples/data/vtest.avi",
    DOC / "examples/data/Megamind.avi",
    DOC / "opencv4/html/cup.mp4.gz",
    DOC / "opencv4/html/box.mp4.gz",
]
PICKS = 3  # frames shown per video
TILE = (150, 200)  # height, width of each tile


def spread(count: int, picks: int) -> list[int]:
    """`picks` frame indices at the middles of equal parts of a `count`-frame clip."""
    return sorted({min(count - 1, int((index + 0.5) * count / picks)) for index in range(picks)})


def unpacked(path: Path, scratch: Path) -> Path:
    if path.suffix != ".gz":
        return path
    plain = scratch / path.stem
    with gzip.open(path) as packed, plain.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return plain


def frame_count(path: Path) -> int:
    """Frames actually decoded (a container's own count can be approximate)."""
    with open_media(path) as media:
        return sum(1 for _ in media.frames())


def masks_at(predictor: Predictor, path: Path, picks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, mask) at each pick, the model run over the whole clip in order, holding only the picks."""
    kept: dict[int, np.ndarray] = {}
    with open_media(path) as media:

        def frames() -> Iterator[np.ndarray]:
            for index, (_, frame) in enumerate(media.frames()):
                if index in picks:
                    kept[index] = frame
                yield frame

        return [(kept[index], mask) for index, mask in enumerate(predictor.predict_clip(frames())) if index in picks]


def tile(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, TILE[::-1], interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_store("vsod-student", device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for source in VIDEOS:
            path = unpacked(source, Path(scratch))
            count = frame_count(path)
            picks = spread(count, PICKS)
            row = []
            for frame, mask in masks_at(predictor, path, picks):
                frame, mask = tile(frame), tile(mask)
                tint = frame.copy()
                tint[..., 0] = np.maximum(tint[..., 0], mask)
                row += [tint, np.dstack([mask] * 3)]
            rows.append(np.hstack(row))
            print(f"{source.name}: frames {picks} of {count}")
    out = Path(__file__).with_name("samples.png")
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
