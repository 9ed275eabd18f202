"""`vsod-train train`: the student's supervised training from the command line (the trainer: distill.train)."""

from __future__ import annotations

import argparse
import math

from distill.finetune import add_init_argument, keep_source_architecture
from distill.runs import CONFIG_FLAGS, TrainConfig, add_run_arguments, run_training
from distill.train import Trainer

# The flags that define a `train` run beyond every command's (saved in the checkpoint, checked on --resume).
TRAIN_FLAGS = (*CONFIG_FLAGS, "init_from", "soft_frames", "soft_temporal", "motion_channels", "motion_radius",
               "refiner_channels")


def add_train_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="supervised training of the student on clips of consecutive frames",
        description="Train the STKD student (BCE + IoU, deep supervision) on video clips. Checkpoints go to "
        "RUN_DIR/last.pt (atomic writes), a JSON-lines log to RUN_DIR/train_log.jsonl; --resume continues "
        "a run exactly where it stopped. Runs under torchrun (DDP) unchanged. Export to the model store with "
        "`vsod-train export`.",
    )
    add_run_arguments(parser, {})
    add_init_argument(parser)
    parser.add_argument("--soft-temporal", type=float, default=None, metavar="WEIGHT",
                        help="temporal KD from teacher-labelled clips (`labelled:` roots): the student's change "
                        "between adjacent frames mimics the teacher's maps' change, L1 at stride 4 (default 0: off)")
    parser.add_argument("--motion-channels", type=int, default=None, metavar="N",
                        help="give the student a motion branch: each frame's stride-4 grey image matched against a "
                        "moving average of the earlier ones, which the state carries (64 more state channels), "
                        "its costs compared by N channels (e.g. 8; default 0: no branch, or with --init-from the "
                        "source's). With --init-from a model without one, the branch starts at zero, so the run "
                        "starts from that model exactly")
    parser.add_argument("--motion-radius", type=int, default=None, metavar="R",
                        help="the motion branch matches shifts of up to R stride-4 cells each way ((2R+1)^2 shifts; "
                        "default 3, or with --init-from the source's). A smaller R than the source's keeps the "
                        "source's comparison of the shifts both have")
    parser.add_argument("--refiner-channels", type=int, default=None, metavar="N",
                        help="give the student a detail refiner: N channels (e.g. 8) at stride 2 that see the frame "
                        "and correct the decoder's stride-4 map (default 0: none, or with --init-from the source's). "
                        "From a model without one it starts at zero, so the run starts from that model exactly")
    parser.add_argument("--no-soft-frames", dest="soft_frames", action="store_const", const=False, default=None,
                        help="teacher-labelled clips give no per-frame target, only the --soft-temporal term "
                        "(the ablation's temporal-KD-only row)")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.soft_temporal is not None and (not math.isfinite(args.soft_temporal) or args.soft_temporal < 0):
        raise ValueError("--soft-temporal must be a number >= 0")
    if args.soft_frames is False and not args.soft_temporal and not args.resume:
        raise ValueError("--no-soft-frames needs --soft-temporal WEIGHT > 0: the teacher-labelled clips would teach nothing")
    if args.motion_channels is not None and args.motion_channels < 0:
        raise ValueError("--motion-channels must be 0 or more")
    if args.motion_radius is not None and args.motion_radius < 1:
        raise ValueError("--motion-radius must be at least 1")
    if args.refiner_channels is not None and args.refiner_channels < 0:
        raise ValueError("--refiner-channels must be 0 or more")
    keep_source_architecture(args)
    return run_training(args, Trainer, TrainConfig, TRAIN_FLAGS)
