"""The real-image teacher (ISNet) at smaller input sizes: seconds per frame and agreement with 1024.

    VSOD_TEACHER_CACHE=/work/cache/teachers python bench/teacher_sizes.py            # 1024, 768, 512
    python bench/teacher_sizes.py --sizes 1024 512 --images a.jpg b.png --threads 2

The graph as exported runs at 1024 only; `distill.teachers.isnet.any_size_graph` opens it to any
multiple of 64. For each image (by default: frames of opencv-doc's vtest.avi and Megamind.avi and
some of its photos, all training or validation sources already), every size runs in turn (the order
rotates per image, so the machine's drift hits all alike). Agreement is measured on the maps at the
image's own size against the 1024 map: mean absolute difference, and IoU of the maps cut at 0.5.
Prints a table, then one JSON line. Needs the fetched teacher (`vsod-train fetch-teacher isnet`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_avg, machine, run

from distill.teachers.isnet import INPUT_SIZE, load_isnet
from service.video import open_media, read_image

DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def default_images() -> list[tuple[str, np.ndarray]]:
    images: list[tuple[str, np.ndarray]] = []
    for video, index in (("vtest.avi", 100), ("Megamind.avi", 60)):
        with open_media(DATA / video) as media:
            for position, (_, frame) in enumerate(media.frames()):
                if position == index:
                    images.append((f"{video}#{index}", frame))
                    break
    for name in ("messi5.jpg", "fruits.jpg", "butterfly.jpg", "orange.jpg"):
        images.append((name, read_image(DATA / name)))
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 768, 512])
    parser.add_argument("--images", type=Path, nargs="*", help="images to label (default: opencv-doc samples)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [INPUT_SIZE, *[s for s in args.sizes if s != INPUT_SIZE]]
    images = [(p.name, read_image(p)) for p in args.images] if args.images else default_images()
    teachers = {size: load_isnet(threads=args.threads, input_size=size) for size in sizes}
    seconds: dict[int, list[float]] = {size: [] for size in sizes}
    mad: dict[int, list[float]] = {size: [] for size in sizes[1:]}
    iou: dict[int, list[float]] = {size: [] for size in sizes[1:]}
    for turn, (_, image) in enumerate(images):
        maps: dict[int, np.ndarray] = {}
        order = sizes[turn % len(sizes):] + sizes[:turn % len(sizes)]
        for size in order:
            began = time.perf_counter()
            maps[size] = teachers[size].predict(image)
            seconds[size].append(time.perf_counter() - began)
        for size in sizes[1:]:
            mad[size].append(float(np.abs(maps[size] - maps[INPUT_SIZE]).mean()))
            a, b = maps[size] > 0.5, maps[INPUT_SIZE] > 0.5
            iou[size].append(float((a & b).sum() / max(1, (a | b).sum())))
    reference = statistics.median(seconds[INPUT_SIZE])
    summary = {}
    print(f"{'size':>5} {'s/frame':>8} {'speed-up':>9} {'MAD vs 1024':>12} {'IoU@0.5 vs 1024 (min)':>22}")
    for size in sizes:
        row = {"s_per_frame": round(statistics.median(seconds[size]), 3),
               "speedup_vs_1024": round(reference / statistics.median(seconds[size]), 2)}
        if size != INPUT_SIZE:
            row.update(mad_mean=round(statistics.mean(mad[size]), 4), iou_mean=round(statistics.mean(iou[size]), 4),
                       iou_min=round(min(iou[size]), 4))
        summary[size] = row
        agreement = (f"{row['mad_mean']:>12.4f} {row['iou_mean']:>14.4f} ({row['iou_min']:.4f})"
                     if size != INPUT_SIZE else f"{'-':>12} {'-':>22}")
        print(f"{size:>5} {row['s_per_frame']:>8.2f} {row['speedup_vs_1024']:>9.2f} {agreement}")
    print(json.dumps({"bench": "teacher_sizes", "images": [name for name, _ in images], "threads": args.threads,
                      "sizes": summary, "machine": machine(), "load_avg": load_avg()}))
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(run(main))
