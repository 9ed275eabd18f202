"""Motion evidence: how well a per-cell change score tells a moving object from its background on
motion-only clips (`vsod-train synth --camouflage 1`: the object is cut from the scenery it moves over),
as ROC AUC over all cells of all scored frames (0.5: chance, 1: perfect).

    python bench/motion_evidence.py --root /work/data/motion --split val --model vsod-student

Why: the motion branch (service/model/motion.py) compares the current frame's stride-8 features with
the previous frame's, and trained on these clips it did not learn to find the object (the model
report). This measures what that comparison and a few alternatives could tell a network at all:
- `features8`: |stride-8 encoder features(t) - features(t-1)|, what the branch compares;
- `match4 gap G`: local matching of the stride-4 grey image against frame t-G: per cell, how much
  better the best of (2R+1)^2 shifts fits it than the camera's shift (the one that fits the frame
  best), computed by the branch itself (`MotionEncoder.evidence`, its first channel);
- `match4 ema A`: the same against a moving average of the earlier grey images (weight A on the
  newest), which is one frame of state: what the branch matches against, at A = its weight.
No flow is estimated: each score is a cost and a minimum over a few shifts.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import run, summary

from distill.data.loaders import load_sequences
from distill.data.sequences import read_mask
from service.model import ModelStore
from service.model.motion import MotionEncoder
from service.model.processing import frames_to_tensor
from service.video import read_image

# Reference for a frame t: (the grey stride-4 images of the clip, t) -> the image it is compared with.
Reference = Callable[[Tensor, int], Tensor]


def previous(gap: int) -> Reference:
    return lambda grey, t: grey[t - gap]


def moving_average(weight: float) -> Reference:
    encoder = MotionEncoder(1, weight=weight)

    def reference(grey: Tensor, t: int) -> Tensor:
        average = grey[0]
        for earlier in grey[1:t]:
            average = encoder.averaged(average, earlier)
        return average

    return reference


def auc(labels: list[np.ndarray], scores: list[np.ndarray]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


@torch.inference_mode()
def measure(args: argparse.Namespace) -> dict[str, float]:
    model, manifest = ModelStore(args.store).load(args.model) if args.store else ModelStore().load(args.model)
    model.eval()
    size = tuple(args.size) if args.size else manifest.input_size
    matcher = MotionEncoder(1, radius=args.radius)
    references: dict[str, tuple[Reference, int]] = {
        **{f"match4 gap {gap}": (previous(gap), gap) for gap in args.gaps},
        **{f"match4 ema {weight:g}": (moving_average(weight), 1) for weight in args.ema},
    }
    labels: dict[str, list[np.ndarray]] = {}
    scores: dict[str, list[np.ndarray]] = {}

    def add(name: str, score: Tensor, mask: np.ndarray) -> None:
        cells = torch.from_numpy(mask.astype(np.float32))[None, None]
        inside = F.adaptive_avg_pool2d(cells, (score.shape[-2], score.shape[-1]))[0, 0].numpy() > 0.5
        if inside.any() and not inside.all():
            labels.setdefault(name, []).append(inside.ravel())
            scores.setdefault(name, []).append(score.numpy().ravel())

    for sequence in load_sequences("davis", args.root, args.split, args.max_sequences):
        frames = frames_to_tensor([read_image(path) for path in sequence.frames], size)
        features8 = model.encoder(model.normalise(frames))[1]
        grey = MotionEncoder.grey(frames)
        for t in range(1, len(frames)):
            if t not in sequence.masks:
                continue
            mask = read_mask(sequence.masks[t])
            add("features8", (features8[t] - features8[t - 1]).norm(dim=0), mask)
            for name, (reference, first) in references.items():
                if t >= first:
                    add(name, matcher.evidence(grey[t : t + 1], reference(grey, t)[None])[0, 0], mask)
    return {name: round(auc(labels[name], scores[name]), 3) for name in labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="DAVIS-layout root of motion-only clips")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--model", default="vsod-student", help="whose stride-8 encoder features are compared")
    parser.add_argument("--store", default=None, help="model store folder (default $VSOD_MODEL_STORE or ./model_store)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="input size (default: the model's)")
    parser.add_argument("--radius", type=int, default=3, help="shifts of up to R stride-4 cells each way")
    parser.add_argument("--gaps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--ema", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(args)
    for name, value in results.items():
        print(f"{name:<16} AUC {value:.3f}")
    print(summary("motion_evidence", args, {"auc": results, "root": str(Path(args.root).resolve()),
                                            "model": args.model, "radius": args.radius}, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
