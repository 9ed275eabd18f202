"""`vsod-train teacher --kind spatial|temporal`: train a teacher with the student's trainer and loss.

    vsod-train teacher --kind spatial  --data data/synth --out runs/teacher-s --clip-len 1 --batch 24 --steps 3000
    vsod-train teacher --kind temporal --data data/synth --out runs/teacher-t --clip-len 3 --steps 2000 \
        --init-from runs/teacher-s/last.pt

Same data stream, schedule, checkpoints, --resume, torchrun and AMP as `vsod-train train`; only the
network differs, and the loss is the student's (deep-supervised BCE + IoU on final, side and coarse
maps). The temporal teacher trains on clips of `--clip-len` >= 3 frames, its window; `--init-from`
starts its spatial part from a trained spatial teacher (width and channels then come from there).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.runs import CONFIG_FLAGS, TrainConfig, add_run_arguments, load_checkpoint, run_training
from distill.train import Trainer
from service.model.network import ClipNetwork
from service.model.store import sha256_of

from .checkpoints import KINDS, load_teacher
from .spatial import SpatialTeacher, SpatialTeacherConfig
from .temporal import TemporalTeacher, TemporalTeacherConfig

TEACHER_FLAGS = (*CONFIG_FLAGS, "kind", "channels", "hidden", "bidirectional", "init_from")
MIN_WINDOW = 3


@dataclass
class TeacherConfig(TrainConfig):
    kind: str = "spatial"  # "spatial" or "temporal"
    width_mult: float = 1.4
    channels: int = 64
    hidden: int = 128
    bidirectional: bool = True
    init_from: str | None = None  # a spatial teacher checkpoint (temporal teachers only)


class TeacherTrainer(Trainer):
    command = "teacher"

    def __init__(self, config: TeacherConfig, *args: Any, **kwargs: Any) -> None:
        if config.kind not in KINDS:
            raise ValueError(f"--kind {config.kind!r}: choose spatial or temporal")
        if config.kind == "temporal" and config.clip_len < MIN_WINDOW:
            raise ValueError(f"the temporal teacher needs --clip-len >= {MIN_WINDOW} (its window), got {config.clip_len}")
        if config.kind == "spatial" and config.init_from:
            raise ValueError("--init-from is for temporal teachers (it loads a spatial teacher)")
        self.kind = KINDS[config.kind]
        super().__init__(config, *args, **kwargs)

    def build_model(self, pretrained: bool) -> ClipNetwork:
        config: TeacherConfig = self.config  # type: ignore[assignment]
        model: SpatialTeacher | TemporalTeacher
        if config.kind == "spatial":
            model = spatial = SpatialTeacher(SpatialTeacherConfig(config.width_mult, config.channels))
        else:
            model = TemporalTeacher(TemporalTeacherConfig(config.width_mult, config.channels, config.hidden,
                                                          config.bidirectional, window=config.clip_len))
            spatial = model.spatial
        if pretrained and config.init_from:  # temporal teachers only (checked in __init__)
            spatial.load_state_dict(load_teacher(config.init_from, SpatialTeacher.kind).model.state_dict())
        elif pretrained and config.pretrained_encoder:
            spatial.encoder.load_pretrained(config.pretrained_encoder)
        return model

    def extra_lineage(self) -> dict[str, Any]:
        config: TeacherConfig = self.config  # type: ignore[assignment]
        teacher: dict[str, Any] = {"kind": self.kind, "model_config": self.model.config.to_dict()}
        if config.init_from:
            path = Path(config.init_from)
            teacher["init_from"] = {"path": str(path), "sha256": sha256_of(path)}
        return {"teacher": teacher}


def add_teacher_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "teacher",
        help="train a spatial or temporal teacher for distillation",
        description="Train a teacher: --kind spatial (MobileNetV2 x1.4 + heavy guided decoder, per frame) or "
        "--kind temporal (the same network + a bidirectional ConvGRU at stride 8 over each clip of --clip-len >= 3 frames). "
        "Same flags, checkpoints, --resume and torchrun support as `vsod-train train`; the checkpoint "
        "(RUN_DIR/last.pt) is what `vsod-train distill --spatial-teacher/--temporal-teacher` loads.",
    )
    parser.add_argument("--kind", choices=tuple(KINDS), default=None, help="spatial or temporal (required for a new run)")
    add_run_arguments(parser, {"width_mult": "1.4"})
    parser.add_argument("--channels", type=int, default=None, help="decoder and context channels (default 64)")
    parser.add_argument("--hidden", type=int, default=None, help="ConvGRU channels per direction (temporal; default 128)")
    parser.add_argument("--unidirectional", dest="bidirectional", action="store_const", const=False, default=None,
                        help="forward ConvGRU only (temporal; default bidirectional)")
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="temporal: start the spatial part from this spatial teacher checkpoint")
    parser.set_defaults(func=run_teacher)


def run_teacher(args: argparse.Namespace) -> int:
    if not args.resume and args.kind is None:
        raise ValueError("give --kind spatial or --kind temporal")
    if args.init_from and not args.resume:
        # The spatial part's shape comes from the checkpoint it starts from; a differing flag is an error.
        saved = load_checkpoint(Path(args.init_from), mmap=True)["model_config"]
        for flag in ("width_mult", "channels"):
            given = getattr(args, flag)
            if given is not None and given != saved.get(flag):
                raise ValueError(f"--{flag.replace('_', '-')} {given} differs from the --init-from teacher's {saved.get(flag)}")
            setattr(args, flag, saved.get(flag))
    for flag in ("channels", "hidden"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1")
    return run_training(args, TeacherTrainer, TeacherConfig, TEACHER_FLAGS)
