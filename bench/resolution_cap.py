"""Resolution cap: the best score a map decided on a stride-s grid of the input can reach.

Each annotation of a labelled root (the teacher's soft maps, or exact masks) is resized to the model's
input, pooled to stride s (area averaging) and upsampled again (bilinear), as the student's final map
is, then scored against itself with the evaluation's protocol and metrics (`distill.evaluate`). What
it loses is what the grid alone costs: a student that decides at stride 4 can do no better, and a
detail refiner (`--refiner-channels`, service/model/refiner.py) exists to move this cap to stride 2.

    python bench/resolution_cap.py --root /work/data/real/val --size 288 --strides 4 2

Prints a table of S-measure and max F per sequence and stride, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run, summary

from distill.data.loaders import load_sequences
from distill.data.sequences import read_soft_mask
from distill.evaluate import SequenceScorer, scored_frames
from service.model.processing import probability_to_mask, resize_image


def decided_at(mask: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """`mask` (float in [0, 1], the frame's size) as a map decided on the stride grid of a `size` input,
    brought back to the frame's size as uint8 the way the service brings its maps back."""
    height, width = size
    grid = cv2.resize(resize_image(mask, size), (width // stride, height // stride), interpolation=cv2.INTER_AREA)
    upsampled = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    return probability_to_mask(upsampled, mask.shape)


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """{stride: {sequence or "mean": {"s_measure", "max_f"}}}."""
    size = (args.size, args.size)
    sequences = load_sequences(args.dataset, args.root, args.split)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for stride in args.strides:
        per_sequence = {}
        for sequence in sequences:
            scorer = SequenceScorer()
            for index in scored_frames(sequence):
                mask = read_soft_mask(sequence.masks[index])
                scorer.step(decided_at(mask, size, stride), probability_to_mask(mask, mask.shape))
            if scorer.frames:
                scores = scorer.results()
                per_sequence[sequence.name] = {"s_measure": round(scores["s_measure"], 4), "max_f": round(scores["max_f"], 4)}
        if not per_sequence:
            raise SystemExit(f"resolution_cap: no scored frame (ground truth, neither first nor last) under {args.root}")
        per_sequence["mean"] = {key: round(float(np.mean([v[key] for v in per_sequence.values()])), 4)
                                for key in ("s_measure", "max_f")}
        results[str(stride)] = per_sequence
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root with annotations (e.g. a `vsod-train label` root)")
    parser.add_argument("--dataset", default="davis", help="layout of --root (default davis)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, default=288, help="the model's square input size (default 288)")
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 2], help="grid strides to compare (default 4 2)")
    args = parser.parse_args(argv)
    results = measure(args)
    for stride, per_sequence in results.items():
        for name, scores in per_sequence.items():
            print(f"stride {stride:>2}  {name:<16} S {scores['s_measure']:.3f}  max F {scores['max_f']:.3f}")
    print(summary("resolution_cap", args, {"size": args.size, "root": str(Path(args.root).resolve()),
                                          "results": results}, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
