"""Evaluation: MAE, S-measure, max F-measure and mean E-measure under the DAVSOD protocol, and flicker.

Metrics come from pysodmetrics (`py_sod_metrics`), the library the VSOD literature's toolboxes
are checked against; nothing here re-implements them. The protocol (Fan et al., DAVSOD, CVPR
2019): each sequence is predicted in full (the model needs its temporal context), then scored on
the frames that have ground truth except the first and the last; metrics are computed per
sequence (max F and mean E from the sequence's mean curves) and the sequence scores averaged.
Temporal stability (`distill.flicker`) is measured on the same scored frames: the mask's mean change
between consecutive frames whose ground truth barely changes, pooled over the still pairs.

    `vsod-train eval --dataset davis --root ROOT --split val --model NAME --baseline framediff`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from py_sod_metrics import MAE, Emeasure, FmeasureHandler, FmeasureV2, Smeasure
from tqdm import tqdm

from distill.data.loaders import load_sequences
from distill.data.sequences import VideoSequence, read_mask, read_rgb
from distill.flicker import FlickerMeter, pooled

PredictClip = Callable[[Iterable[np.ndarray]], Iterable[np.ndarray]]

METRICS = ("mae", "s_measure", "max_f", "mean_e")
METRIC_TITLES = {"mae": "MAE", "s_measure": "S-measure", "max_f": "max F (b2=0.3)", "mean_e": "mean E"}


class BorderSafeSmeasure(Smeasure):
    """pysodmetrics' S-measure, except that an empty quadrant contributes 0 instead of NaN.

    The region term splits the frame at the object's centroid plus one (as the MATLAB original does).
    When the object lies on the last row or column, one side of the split is empty: its weight is 0,
    but pysodmetrics 1.6 scores it NaN, and 0 * NaN made the frame's and the whole sequence's S NaN
    (an object leaving the frame at its bottom or right edge). Every other frame scores as before.
    """

    def ssim(self, pred: np.ndarray, gt: np.ndarray) -> float:
        if pred.size == 0:
            return 0.0
        return float(super().ssim(pred, gt))


class SequenceScorer:
    """The four metrics over the scored frames of one sequence."""

    def __init__(self) -> None:
        self.mae = MAE()
        self.smeasure = BorderSafeSmeasure()
        # FmeasureV2 with a dynamic-threshold handler gives the 256-threshold F curve; the older
        # `Fmeasure` class computes the same curve but is deprecated by the library.
        self.fmeasure = FmeasureV2({"fm": FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)})
        self.emeasure = Emeasure()
        self.frames = 0

    def step(self, prediction: np.ndarray, gt: np.ndarray) -> None:
        """prediction: uint8 0..255; gt: bool or uint8, any size (the prediction is resized to it)."""
        gt_u8 = gt.astype(np.uint8) * 255 if gt.dtype == bool else gt
        if prediction.shape != gt_u8.shape:
            prediction = cv2.resize(prediction, (gt_u8.shape[1], gt_u8.shape[0]), interpolation=cv2.INTER_LINEAR)
        for metric in (self.mae, self.smeasure, self.fmeasure, self.emeasure):
            metric.step(pred=prediction, gt=gt_u8)
        self.frames += 1

    def results(self) -> dict[str, float]:
        return {
            "mae": float(self.mae.get_results()["mae"]),
            "s_measure": float(self.smeasure.get_results()["sm"]),
            "max_f": float(self.fmeasure.get_results()["fm"]["dynamic"].max()),
            "mean_e": float(self.emeasure.get_results()["em"]["curve"].mean()),
        }


def scored_frames(sequence: VideoSequence) -> list[int]:
    """Frame indices the protocol scores: those with ground truth, minus the first and last frames. A
    one-frame sequence is an image (a photo set, DUTS): its frame is scored, or none would be."""
    if len(sequence.frames) == 1:
        return sorted(sequence.masks)
    last = len(sequence.frames) - 1
    return sorted(i for i in sequence.masks if 0 < i < last)


class _Timer:
    """Frames read lazily with their decode time recorded, so model time can be told apart."""

    def __init__(self) -> None:
        self.read_seconds = 0.0

    def frames(self, paths: Sequence[Path]) -> Iterator[np.ndarray]:
        for path in paths:
            start = time.perf_counter()
            frame = read_rgb(path)
            self.read_seconds += time.perf_counter() - start
            yield frame


def evaluate_sequences(
    predict_clip: PredictClip, sequences: Sequence[VideoSequence], progress: bool = True, desc: str = "eval"
) -> dict[str, Any]:
    """Run `predict_clip` (frames in order -> uint8 masks in order) over each sequence and score it.

    Returns the sequence-averaged metrics, counts, per-sequence scores and speed:
    `fps_model` counts time inside `predict_clip` (pre-processing, network, post-processing);
    `fps_end_to_end` adds decoding the frames from disk. Metric computation is timed by neither.
    """
    per_sequence: dict[str, dict[str, Any]] = {}
    meters: list[FlickerMeter] = []
    skipped: list[str] = []
    frames_predicted = 0
    model_seconds = read_seconds = 0.0
    for sequence in tqdm(sequences, desc=desc, unit="seq", disable=not progress, leave=False):
        wanted = set(scored_frames(sequence))
        if not wanted:
            skipped.append(sequence.name)
            continue
        timer = _Timer()
        kept: dict[int, np.ndarray] = {}
        start = time.perf_counter()
        count = 0
        for index, mask in enumerate(predict_clip(timer.frames(sequence.frames))):
            if index in wanted:
                kept[index] = mask
            count += 1
        elapsed = time.perf_counter() - start
        if count != len(sequence.frames):
            raise RuntimeError(f"{sequence.name}: predictor returned {count} masks for {len(sequence.frames)} frames")
        frames_predicted += count
        model_seconds += elapsed - timer.read_seconds
        read_seconds += timer.read_seconds
        scorer, meter = SequenceScorer(), FlickerMeter()
        for index in sorted(wanted):
            gt = read_mask(sequence.masks[index])
            scorer.step(kept[index], gt)
            meter.step(index, kept[index], gt)
        meters.append(meter)
        per_sequence[sequence.name] = {**scorer.results(), **pooled([meter]), "frames": scorer.frames}
    if not per_sequence:
        raise ValueError("no sequence has ground truth on a frame other than its first and last: nothing to score")
    summary: dict[str, Any] = {
        metric: float(np.mean([scores[metric] for scores in per_sequence.values()])) for metric in METRICS
    }
    summary.update(pooled(meters))
    summary.update(
        sequences=len(per_sequence),
        frames_scored=int(sum(scores["frames"] for scores in per_sequence.values())),
        frames_predicted=frames_predicted,
        fps_model=frames_predicted / model_seconds if model_seconds > 0 else None,
        fps_end_to_end=frames_predicted / (model_seconds + read_seconds) if model_seconds + read_seconds > 0 else None,
        skipped_sequences=skipped,
        per_sequence=per_sequence,
    )
    return summary


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per method: the four metrics, flicker, sequence/frame counts and both frame rates."""
    header = ["method", *(METRIC_TITLES[m] for m in METRICS), "flicker", "seqs", "frames", "fps model", "fps e2e"]
    rows = [header]
    for method, result in results.items():
        rows.append([
            method,
            *(f"{result[m]:.4f}" for m in METRICS),
            "-" if result.get("flicker") is None else f"{result['flicker']:.4f}",
            str(result["sequences"]),
            str(result["frames_scored"]),
            _fps(result["fps_model"]),
            _fps(result["fps_end_to_end"]),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _fps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def teacher_method_name(path: str | Path) -> str:
    """How a teacher checkpoint is named in tables: `<run folder>` (the file is usually last.pt)."""
    path = Path(path)
    return path.parent.name if path.name == "last.pt" else path.stem


def _teacher_predictor(path: str, threads: int | None, device: str | None) -> PredictClip:
    import torch

    from distill.teachers import load_teacher, teacher_predict_clip

    if threads:
        torch.set_num_threads(threads)
    teacher = load_teacher(path)
    input_size = (int(teacher.info["input_size"][0]), int(teacher.info["input_size"][1]))
    return teacher_predict_clip(teacher.model, input_size, device or ("cuda" if torch.cuda.is_available() else "cpu"))


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="score a model, teacher and/or baseline on a dataset: MAE, S, max F, mean E, flicker, fps",
        description="Score a model from the store, teacher checkpoints and/or a classic baseline on a video SOD dataset "
        "under the DAVSOD protocol (per sequence, first and last frames skipped, sequence means averaged), plus "
        "flicker: the mask's mean change between consecutive frames whose ground truth changes by at most 0.5% "
        "of the pixels.",
    )
    parser.add_argument("--dataset", default="davis",
                        help="dataset layout: davis, davsod, segtrack, fbms, duts, labelled (default davis)")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument("--split", default=None, help="split to evaluate (e.g. val); default: the layout's default")
    parser.add_argument("--model", default=os.environ.get("VSOD_MODEL"), help="model name in the store (default $VSOD_MODEL)")
    parser.add_argument("--store", default=None, help="model store folder (default $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME",
                        help="also score a baseline: framediff (repeatable)")
    parser.add_argument("--teacher", action="append", default=[], metavar="CHECKPOINT",
                        help="also score a teacher checkpoint from `vsod-train teacher` at its training input size (repeatable)")
    parser.add_argument("--max-sequences", type=int, default=None, help="score only the first N sequences")
    parser.add_argument("--json", default=None, metavar="OUT|-", help="write the results as JSON to OUT, or stdout with '-'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default=None, help="torch device for the model (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from distill.baselines import BASELINES

    unknown = [name for name in args.baseline if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r} (known: {', '.join(BASELINES)})")
    if not args.model and not args.baseline and not args.teacher:
        raise ValueError("nothing to evaluate: give --model NAME (or set VSOD_MODEL), --teacher CHECKPOINT and/or "
                         "--baseline framediff")
    if args.max_sequences is not None and args.max_sequences < 1:
        raise ValueError("--max-sequences must be at least 1")
    sequences = load_sequences(args.dataset, args.root, args.split, args.max_sequences)
    methods: dict[str, PredictClip] = {}
    if args.model:
        import torch

        from service.model import ModelStore, Predictor

        if args.threads:
            torch.set_num_threads(args.threads)
        predictor = Predictor.from_store(args.model, ModelStore(args.store), device=args.device)
        methods[args.model] = predictor.predict_clip
    for path in args.teacher:
        methods[teacher_method_name(path)] = _teacher_predictor(path, args.threads, args.device)
    for name in args.baseline:
        methods[name] = BASELINES[name]

    results = {
        name: evaluate_sequences(predict, sequences, progress=not args.no_progress, desc=name)
        for name, predict in methods.items()
    }
    table = format_table(results)
    # With JSON on stdout, the table goes to stderr so stdout stays machine-readable.
    screen = sys.stderr if args.json == "-" else sys.stdout
    print(f"{args.dataset} {args.split or ''} at {args.root}: {len(sequences)} sequences".replace("  ", " "), file=screen)
    print(table, file=screen)
    if args.json:
        payload = {
            "dataset": args.dataset,
            "root": str(args.root),
            "split": args.split,
            "protocol": "DAVSOD: per sequence, frames with GT except first and last; sequence means averaged",
            "results": results,
        }
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    return 0
