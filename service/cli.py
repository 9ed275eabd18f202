"""`vsod`: predict masks for videos, folders of frames and images; list the model store; serve.

    vsod predict clip.mp4 --out masks/                  one PNG per frame: masks/00000.png ...
    vsod predict clip.mp4 --out out/ --format mp4       out/clip_mask.mp4
    vsod predict frames/ --out out/ --format overlay    out/frames_overlay.mp4
    vsod models --verbose                               the store, with measured params and GFLOPs
    vsod serve --port 8000                              the web service (service.server)

Problems are one line on stderr: exit 2 for a wrong command line, 1 for anything else.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from service.formats import IMAGE_SUFFIXES, SUPPORTED_IMAGES, SUPPORTED_VIDEOS, VIDEO_SUFFIXES
from service.messages import UsageError, first_line, run_command
from service.process import EarlyAnswers, apply_thread_policy, listen

DEFAULT_MODEL = "vsod-student"
FORMATS = ("png", "mp4", "overlay")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors in one line, as every other vsod error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_model() -> str:
    return os.environ.get("VSOD_MODEL") or DEFAULT_MODEL


def store_root(given: str | None) -> Path:
    from service.paths import default_store_root

    return Path(given) if given else default_store_root()


# ---------------------------------------------------------------- predict


def run_predict(args: argparse.Namespace) -> int:
    # Imports here, not at module top, so `vsod --help` answers at once; torch comes after the
    # input is checked, so a mistyped path is reported without waiting for it.
    from tqdm import tqdm

    apply_thread_policy()  # before torch loads (service.process says why)

    from service.video import (
        encode_png,
        open_media,
        write_atomic,
    )
    from service.video_writers import MaskVideoWriter, OverlayVideoWriter, overlay

    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError("--max-frames must be at least 1")
    if args.chunk < 1:
        raise UsageError("--chunk must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")

    def warn(message: str) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    # Input and model are checked before anything is written; sizes from headers, before decoding.
    check_input(Path(args.input), frame_side_limit())
    source = open_media(args.input, warn=warn)
    with source:
        info = source.info
        if info.kind == "image" and args.format == "mp4":
            raise UsageError("--format mp4 needs a video or a folder of frames; use png or overlay for one image")
        import torch

        from service.model.predictor import Predictor
        from service.model.store import ModelStore

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available to this torch build")
        predictor = Predictor.from_store(args.model or default_model(), ModelStore(store_root(args.store)), args.device)
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; it must be a folder")
        if args.format == "png" and _overwrites_input(info.kind, info.path, out):
            raise UsageError(f"--out {out} would overwrite the input frames with their masks; choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        fps = info.fps or args.fps

        frames = source.frames()
        if args.max_frames is not None:
            frames = itertools.islice(frames, args.max_frames)
        total = info.frame_count if args.max_frames is None else min(info.frame_count or args.max_frames, args.max_frames)
        # predict_clip pulls frames lazily (a chunk at a time); the queue pairs each mask that comes
        # out with its frame's name (and the frame itself, for overlays) without holding the clip.
        pending: deque[tuple[str, np.ndarray]] = deque()

        def feed() -> Iterator[np.ndarray]:
            for name, frame in frames:
                pending.append((name, frame))
                yield frame

        writer: MaskVideoWriter | OverlayVideoWriter | None = None
        if args.format == "mp4":
            destination = out / f"{info.stem}_mask.mp4"
            writer = MaskVideoWriter(destination, fps)
        elif args.format == "overlay" and info.kind != "image":
            destination = out / f"{info.stem}_overlay.mp4"
            writer = OverlayVideoWriter(destination, fps)
        elif args.format == "overlay":
            destination = out / f"{info.stem}_overlay.png"
        else:
            destination = out

        count = 0
        start = time.perf_counter()
        bar = tqdm(total=total, unit="frame", desc=info.stem, disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
        try:
            for mask in predictor.predict_clip(feed(), chunk=args.chunk):
                name, frame = pending.popleft()
                if isinstance(writer, MaskVideoWriter):
                    writer.write(mask)
                elif isinstance(writer, OverlayVideoWriter):
                    writer.write(frame, mask)
                elif args.format == "overlay":
                    write_atomic(destination, encode_png(overlay(frame, mask)))
                else:
                    write_atomic(out / f"{name}.png", encode_png(mask))
                count += 1
                bar.update(1)
        except BaseException:
            if writer is not None:
                writer.abort()  # no truncated video; PNGs already written are complete and stay
            raise
        finally:
            bar.close()
        if writer is not None:
            writer.close()
        if info.kind == "video" and total is not None and count < total:  # a truncated file; OpenCV's tree.avi is one
            warn(f"{info.path.name}'s container announces {total} frames but holds {count}; "
                 f"all {count} were processed (a truncated file?)")
    elapsed = time.perf_counter() - start
    rate = count / elapsed if elapsed > 0 else float("inf")
    print(f"{count} frame{'' if count == 1 else 's'} in {elapsed:.1f} s ({rate:.1f} fps end to end), "
          f"model {predictor.model_id} on {predictor.device} -> {destination}")
    return 0


HEADER_BYTES = 1 << 20  # a folder's frames are checked from their first MiB (JPEG EXIF segments come first)


def frame_side_limit() -> int:
    """The server's limit on a frame's width or height (VSOD_MAX_FRAME_SIDE), so both refuse the same images."""
    from pydantic import ValidationError

    from service.settings import Settings, describe_invalid

    try:
        return Settings().max_frame_side
    except ValidationError as error:
        raise ValueError(f"invalid settings: {describe_invalid(error)}") from None


def check_input(path: Path, max_side: int) -> None:
    """Refuse an image, a folder's frame or a video whose header claims frames over `max_side` a side,
    as the server does (service.limits), before a decoder allocates them; one line, exit 1."""
    from service.limits import LimitExceeded, check_image, check_video, video_header
    from service.video import VideoError

    def over(name: str, error: LimitExceeded) -> LimitExceeded:
        return LimitExceeded(f"{name}: {error} (VSOD_MAX_FRAME_SIDE sets the limit)")

    if path.is_dir():
        for frame in sorted(path.iterdir()):
            if frame.suffix.lower() in IMAGE_SUFFIXES and frame.is_file():
                with frame.open("rb") as handle:
                    head = handle.read(HEADER_BYTES)
                try:
                    check_image(head, max_side)
                except LimitExceeded as error:
                    raise over(f"{path.name}/{frame.name}", error) from None
                except VideoError:
                    pass  # unreadable frames are skipped with a warning when the folder is read
        return
    suffix = path.suffix.lower()
    try:
        if path.is_file() and suffix in IMAGE_SUFFIXES:
            check_image(path.read_bytes(), max_side)
        elif path.is_file() and suffix in VIDEO_SUFFIXES:  # the frame size only: offline clips may be any length
            check_video(video_header(path), max_side, max_frames=sys.maxsize, max_seconds=math.inf)
    except LimitExceeded as error:
        raise over(path.name, error) from None
    except VideoError as error:  # not an image (or video) by its header, as the server would refuse it
        raise VideoError(f"{path.name}: {error}") from None


def _overwrites_input(kind: str, source: Path, out: Path) -> bool:
    """PNG masks are named after the frames: written beside PNG frames, they would replace them."""
    if kind == "folder":
        return out.resolve() == source.resolve()
    if kind == "image":
        return (out / f"{source.stem}.png").resolve() == source.resolve()
    return False


# ---------------------------------------------------------------- models


def summarize_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    """A short summary of a manifest's metrics: the first group's headline numbers first."""
    preferred = ("s_measure", "max_f", "mean_e", "mae")
    leaves: list[tuple[str, str, float]] = []  # (group, key, value) in the manifest's order

    def walk(group: str, value: Any) -> None:
        for key, item in value.items():
            if isinstance(item, dict):
                if key != "per_sequence":  # detail for reports, not for a one-line summary
                    walk(f"{group}/{key}" if group else str(key), item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                leaves.append((group, str(key), float(item)))

    walk("", metrics)
    groups = list(dict.fromkeys(group for group, _, _ in leaves))
    rank = {key: index for index, key in enumerate(preferred)}
    leaves.sort(key=lambda leaf: (groups.index(leaf[0]), rank.get(leaf[1], len(preferred))))
    parts: list[str] = []
    for index, (group, key, value) in enumerate(leaves[:limit]):
        label = f"{group}: " if group and (index == 0 or leaves[index - 1][0] != group) else ""
        parts.append(f"{label}{key}={value:.3f}" if abs(value) < 1000 else f"{label}{key}={value:.0f}")
    return (" ".join(parts) + (" …" if len(leaves) > limit else "")) or "-"


def run_models(args: argparse.Namespace) -> int:
    apply_thread_policy()  # before torch loads (service.process says why)
    from service.model.store import ModelStore, ModelStoreError

    store = ModelStore(store_root(args.store))
    if not store.root.is_dir():
        raise FileNotFoundError(f"model store not found: {store.root}")
    names = store.names()
    if not names:
        print(f"no models in {store.root}")
        return 0
    header = ["NAME", "INPUT", "VERSION", "STEP GRAPH"]  # onnx: VSOD_BACKEND=onnxruntime (auto's choice on a CPU) can serve it
    if args.verbose:
        header += ["PARAMS", "GFLOPs@352x352", "GFLOPs@input", "STATE@input"]
    rows = [[*header, "METRICS"]]
    for name in names:
        try:
            manifest = store.manifest(name)
            row = [name, f"{manifest.input_size[0]}x{manifest.input_size[1]}", manifest.version,
                   "onnx" if manifest.step_graph else "-"]
            if args.verbose:
                row += _measured(store, name, manifest.input_size)
            rows.append([*row, summarize_metrics(manifest.metrics)])
        except ModelStoreError as error:  # one broken entry must not hide the others
            rows.append([name, "error:", first_line(error)])
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(header))]
    print(f"model store: {store.root}")
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)).rstrip())
    return 0


def _measured(store: Any, name: str, input_size: tuple[int, int]) -> list[str]:
    from service.model.complexity import count_flops, count_parameters

    model, _ = store.load(name)
    state_bytes = 4 * math.prod(model.state_shape(input_size))  # float32: what a live session carries per frame
    return [
        f"{count_parameters(model) / 1e6:.3f}M",
        f"{count_flops(model, (352, 352)) / 1e9:.3f}",
        f"{count_flops(model, input_size) / 1e9:.3f}",
        f"{state_bytes / 1024:.1f}KiB",
    ]


# ---------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    # In this order: settings and the socket need no torch, so a bad setting or a busy port is
    # reported at once; the OpenMP policy must be in the environment before torch loads; only then
    # the server module, which imports the app (and torch). The model loads while it answers.
    from pydantic import ValidationError

    from service.settings import Settings, describe_invalid

    flags = {"host": "--host", "port": "--port", "model": "--model", "model_store": "--store", "redis_url": "--redis-url"}
    given = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in flags.items()}
    given = {field: value for field, value in given.items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as error:  # pydantic's message spans lines: every problem on one line
        raise ValueError(f"invalid settings: {describe_invalid(error, {f: flags[f] for f in given})}") from None
    sock = listen(settings.host, settings.port)
    apply_thread_policy(settings.threads)
    with EarlyAnswers(sock):  # /healthz 200 while torch and the app are imported
        from service.server import serve
    serve(settings, sock)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vsod", description="Fast video salient object detection.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    predict = commands.add_parser(
        "predict", help="saliency masks for a video, a folder of frames or one image",
        description="Write one 8-bit mask per frame (png), a mask video (mp4) or the input with the mask "
        "tinted over it (overlay: an mp4 for a video or a folder, a PNG for one image).",
    )
    predict.add_argument("input", help=f"video file ({SUPPORTED_VIDEOS}), folder of frames or one image ({SUPPORTED_IMAGES})")
    predict.add_argument("--out", required=True, help="output folder (created if missing)")
    predict.add_argument("--model", help=f"model name in the store (default: $VSOD_MODEL or {DEFAULT_MODEL})")
    predict.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    predict.add_argument("--format", choices=FORMATS, default="png",
                         help="png: DIR/<frame>.png; mp4: DIR/<input>_mask.mp4; "
                         "overlay: DIR/<input>_overlay.mp4 (.png for one image)")
    predict.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    predict.add_argument("--threads", type=int,
                         help="CPU threads for the network (default: torch's, one per core; on a busy machine 1 is often faster)")
    predict.add_argument("--max-frames", type=int, help="stop after this many frames")
    predict.add_argument("--fps", type=float, default=25.0, help="frame rate of videos made from a folder of frames")
    predict.add_argument("--chunk", type=int, default=8, help=argparse.SUPPRESS)  # frames per forward pass
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=run_predict)

    models = commands.add_parser("models", help="list the models in the store")
    models.add_argument("--store", help="model store folder (default: $VSOD_MODEL_STORE or ./model_store)")
    models.add_argument("--verbose", "-v", action="store_true", help="also load each model: parameters and GFLOPs per frame")
    models.set_defaults(func=run_models)

    serve = commands.add_parser("serve", help="run the web service (settings also from VSOD_* variables)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model")
    serve.add_argument("--store", help="model store folder")
    serve.add_argument("--redis-url", help="e.g. redis://127.0.0.1:6379/0 (default: in-memory state)")
    serve.set_defaults(func=run_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"vsod {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
