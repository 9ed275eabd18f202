"""`vsod-train`: one sub-command per job; each module adds its own arguments."""

from __future__ import annotations

import argparse
import os
import sys

from service.messages import run_command  # vsod's exit policy; standard library only, so torch is not loaded yet

# OpenMP threads that busy-wait between ops made training 2-5x slower on a shared 2-core machine
# (measured: 3.8-9.9 s/step vs 2.0 s/step at batch 8, 256 px). It must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at module top, so `vsod-train --help` stays fast and a broken optional
    # dependency only breaks the command that needs it.
    from distill import distillation, evaluate, export, train_command
    from distill.data import synthetic
    from distill.teachers import labelling
    from distill.teachers import training as teachers
    from service.cli import OneLineParser  # bad flags in one line, as every vsod and vsod-train error is

    parser = OneLineParser(prog="vsod-train", description="Train, distil and evaluate vsod models.")
    commands = parser.add_subparsers(dest="command", required=True)
    synthetic.add_synth_command(commands)
    train_command.add_train_command(commands)
    teachers.add_teacher_command(commands)
    labelling.add_label_commands(commands)
    distillation.add_distill_command(commands)
    evaluate.add_eval_command(commands)
    export.add_export_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"vsod-train {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
