"""Make docs/samples.png: the default model's masks on the real videos that Debian's opencv-doc ships.

    python docs/make_samples.py            # needs opencv-doc (apt-get install opencv-doc)

These videos have no ground truth: the picture shows what the model does on real footage after
training on synthetic clips only; the scores come from synthetic validation clips (model report).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from service.model import Predictor
from service.video import open_media

DOC = Path("/usr/share/doc/opencv-doc")
VIDEOS = [
    DOC / "examples/data/vtest.avi",
    DOC / "examples/data/Megamind.avi",
    DOC / "opencv4/html/cup.mp4.gz",
    DOC / "opencv4/html/box.mp4.gz",
]
FRAME = 40  # a frame far enough in for the temporal context to matter
TILE = (240, 320)  # height, width of each tile


def frames_of(path: Path, scratch: Path, count: int) -> list[np.ndarray]:
    if path.suffix == ".gz":
        plain = scratch / path.stem
        with gzip.open(path) as packed, plain.open("wb") as out:
            shutil.copyfileobj(packed, out)
        path = plain
    with open_media(path) as media:
        return [frame for _, frame in zip(range(count), (f for _, f in media.frames()))]


def main() -> None:
    predictor = Predictor.from_store("vsod-student", device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in VIDEOS:
            frames = frames_of(path, Path(scratch), FRAME + 1)
            mask = list(predictor.predict_clip(frames))[FRAME]
            frame = cv2.resize(frames[FRAME], TILE[::-1], interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, TILE[::-1], interpolation=cv2.INTER_AREA)
            tint = frame.copy()
            tint[..., 0] = np.maximum(tint[..., 0], mask)
            rows.append(np.hstack([frame, np.dstack([mask] * 3), tint]))
    out = Path(__file__).with_name("samples.png")
    cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
