"""`vsod-train distill`: train the student with frozen teachers (spatial and/or temporal KD).

    vsod-train distill --data data/synth --out runs/skd-tkd --steps 1800 \
        --spatial-teacher runs/teacher-s/last.pt --temporal-teacher runs/teacher-t/last.pt \
        --teacher-cache runs/teacher-cache

Loss = gt * (the student's supervised loss) + SKD + TKD (`distill.kd`); leave a teacher out and its
terms go with it, so "+SKD only" and "+TKD only" are this same command. Everything else is the
student's `vsod-train train`: same initialisation, data stream, schedule, checkpoints, --resume,
torchrun and AMP, so an ablation against `train` with the same flags changes only the KD terms.

The checkpoint's "model" holds exactly the student's weights (`vsod-train export` takes it as is);
the 1x1 adapters live beside it under "adapters", for --resume only. Teachers are frozen (eval mode,
no gradients) and run on the same clip as the student; their targets are rounded to float16 whether
or not `--teacher-cache` keeps them on disk, so a cached run equals an uncached one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from distill.finetune import add_init_argument, keep_source_architecture
from distill.kd import KDAdapters, KDWeights, TeacherTargets, distillation_loss
from distill.losses import saliency_loss
from distill.runs import CONFIG_FLAGS, TrainConfig, add_run_arguments, run_training
from distill.teacher_cache import TeacherCache, fingerprint
from distill.teachers import LoadedTeacher, SpatialTeacher, TemporalTeacher, load_teacher
from distill.train import VIRTUAL_SAMPLES, Trainer
from service.model import STKDStudent, StudentOutput

DISTILL_FLAGS = (*CONFIG_FLAGS, "init_from", "spatial_teacher", "temporal_teacher", "gt_weight", "skd_feature", "skd_map",
                 "tkd_feature", "tkd_map", "kd_coarse", "kd_temperature", "motion_channels",
                 "motion_radius", "refiner_channels")


@dataclass
class DistillConfig(TrainConfig):
    spatial_teacher: str | None = None  # checkpoint path (resolved)
    temporal_teacher: str | None = None
    gt_weight: float = 1.0
    skd_feature: float = 1.0
    skd_map: float = 1.0
    tkd_feature: float = 1.0
    tkd_map: float = 1.0
    kd_coarse: float = 0.5
    kd_temperature: float = 1.0

    def weights(self) -> KDWeights:
        return KDWeights(self.gt_weight, self.skd_feature, self.skd_map, self.tkd_feature, self.tkd_map,
                         self.kd_coarse, self.kd_temperature)


class IndexedClips(Dataset):
    """The clip dataset with each item's index added: the teacher cache's key."""

    def __init__(self, clips: Any) -> None:
        self.clips = clips
        self.sequences = clips.sequences

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.clips[index], "index": index}


class StudentWithAdapters(nn.Module):
    """The student's clip forward plus its adapted features: one module, so DDP syncs both."""

    def __init__(self, student: STKDStudent, adapters: KDAdapters) -> None:
        super().__init__()
        self.student, self.adapters = student, adapters

    def forward(self, clip: Tensor) -> tuple[StudentOutput, dict[str, Tensor]]:
        output = self.student.forward_clip(clip)
        return output, self.adapters(output)


class DistillTrainer(Trainer):
    command = "distill"
    model: STKDStudent  # the student `Trainer.build_model` builds

    def __init__(self, config: DistillConfig, runtime: Any, checkpoint: dict[str, Any] | None = None,
                 cache_root: Path | None = None) -> None:
        if not config.spatial_teacher and not config.temporal_teacher:
            raise ValueError("give --spatial-teacher and/or --temporal-teacher (without teachers use `vsod-train train`)")
        weights = config.weights()
        if min(weights.gt, weights.spatial_feature, weights.spatial_map, weights.temporal_feature,
               weights.temporal_map, weights.coarse) < 0 or weights.temperature <= 0:
            raise ValueError("loss weights must be >= 0 and --kd-temperature > 0")
        self.weights = weights
        # Loaded before the trainer seeds the RNG, so the student starts exactly as in `vsod-train train`.
        self.teachers: dict[str, LoadedTeacher] = {}
        if config.spatial_teacher:
            self.teachers["spatial"] = load_teacher(config.spatial_teacher, SpatialTeacher.kind)
        if config.temporal_teacher:
            teacher = load_teacher(config.temporal_teacher, TemporalTeacher.kind)
            assert isinstance(teacher.model, TemporalTeacher)  # load_teacher checked the kind
            window = teacher.model.config.window
            if config.clip_len != window:
                raise ValueError(f"--clip-len {config.clip_len} must equal the temporal teacher's window ({window} "
                                 "frames): it sees each training clip as one window")
            self.teachers["temporal"] = teacher
        if checkpoint is not None:
            _check_same_teachers(checkpoint, self.teachers)
        super().__init__(config, runtime, checkpoint)
        for teacher in self.teachers.values():
            teacher.model.to(self.device)
        samples = {"data": self._counts, "input_size": list(config.input_size), "clip_len": config.clip_len,
                   "augment": config.augment, "degrade": config.degrade, "seed": config.seed, "virtual_samples": VIRTUAL_SAMPLES}
        self.caches = {role: TeacherCache(cache_root, fingerprint(t.info["sha256"], samples))
                       for role, t in self.teachers.items()} if cache_root else {}

    # -- the Trainer hooks ------------------------------------------------------------------------
    def _build_data(self) -> tuple[list[Any], Any]:
        sequences, clips = super()._build_data()
        return sequences, IndexedClips(clips)

    def trainable_module(self) -> nn.Module:
        student = self.model.config
        spatial, temporal = self.teachers.get("spatial"), self.teachers.get("temporal")
        self.adapters = KDAdapters(
            (student.decoder_channels, spatial.model.feature_channels) if spatial else None,
            (student.temporal_channels, temporal.model.feature_channels) if temporal else None,
        )
        return nn.ModuleDict({"student": self.model, "adapters": self.adapters})

    def forward_module(self) -> nn.Module:
        return StudentWithAdapters(self.model, self.adapters)

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        frames, masks, valid = self.inputs(batch)
        output, adapted = self.network(frames)
        supervised, gt_terms = saliency_loss(output, masks, valid)
        indices = [int(i) for i in batch["index"]]
        targets = {role: self.teacher_targets(role, frames, indices) for role in self.teachers}
        kd, kd_terms = distillation_loss(output, adapted, targets.get("spatial"), targets.get("temporal"), self.weights)
        total = self.weights.gt * supervised + kd
        terms = {"loss": float(total.detach()), "gt": gt_terms["loss"], "bce": gt_terms["bce"], "iou": gt_terms["iou"],
                 "valid_frames": gt_terms["valid_frames"], **kd_terms}
        return total, terms

    @torch.no_grad()
    def teacher_targets(self, role: str, frames: Tensor, indices: list[int]) -> TeacherTargets:
        """One teacher's targets for the batch: from the cache, or computed (and cached)."""
        cache = self.caches.get(role)
        cached = cache.get(indices) if cache else None
        if cached is not None:
            return _on(cached, self.device)
        output = self.teachers[role].model.forward_clip(frames)
        if role == "spatial":
            features = output.spatial_features
        else:  # stride-8 ConvGRU features, averaged onto the student's stride-32 temporal grid
            assert output.temporal_features is not None  # a temporal teacher's output always has them
            height, width = output.coarse_logits.shape[-2:]
            features = F.adaptive_avg_pool2d(output.temporal_features, (height, width))
        targets = TeacherTargets(features, output.side_logits[-1], output.coarse_logits).half()
        if cache:
            cache.put(indices, targets)
        return _on(targets, self.device)

    def extra_lineage(self) -> dict[str, Any]:
        return {"distillation": {"teachers": {role: t.info for role, t in self.teachers.items()},
                                 "weights": self.weights.to_dict()}}

    def extra_state(self) -> dict[str, Any]:
        return {"adapters": {k: v.detach().cpu() for k, v in self.adapters.state_dict().items()}}

    def restore_extra(self, state: dict[str, Any]) -> None:
        self.adapters.load_state_dict(state["adapters"])

    def run(self) -> dict[str, Any]:
        summary = super().run()
        if self.caches:
            hits = {role: {"hits": c.hits, "misses": c.misses, "folder": str(c.folder)} for role, c in self.caches.items()}
            self.log({"event": "teacher-cache", **hits})
        return summary


def _on(targets: TeacherTargets, device: torch.device) -> TeacherTargets:
    return TeacherTargets(*(t.to(device).float() for t in (targets.features, targets.final, targets.coarse)))


def _check_same_teachers(checkpoint: dict[str, Any], teachers: dict[str, LoadedTeacher]) -> None:
    """A resumed run must distil from the very files it started with (same sha256)."""
    saved = checkpoint.get("lineage", {}).get("distillation", {}).get("teachers", {})
    for role, teacher in teachers.items():
        if role in saved and saved[role]["sha256"] != teacher.info["sha256"]:
            raise ValueError(f"the {role} teacher {teacher.info['path']} changed since this run started: "
                             "--resume needs the same teacher file")


def add_distill_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "distill",
        help="train the student with frozen spatial and/or temporal teachers (SKD, TKD)",
        description="Spatiotemporal knowledge distillation: the supervised loss of `vsod-train train` plus spatial KD "
        "(the student's stride-4 guided features through a 1x1 adapter and its final and coarse maps mimic the spatial "
        "teacher's) and temporal KD (its inter-frame encoded features and maps mimic the temporal teacher's on the same "
        "clip). Either teacher may be left out. The checkpoint holds the student alone (adapters apart), ready for "
        "`vsod-train export`. Runs under torchrun (DDP) unchanged.",
    )
    add_run_arguments(parser, {})
    parser.add_argument("--spatial-teacher", default=None, metavar="CHECKPOINT", help="spatial teacher (vsod-train teacher)")
    parser.add_argument("--temporal-teacher", default=None, metavar="CHECKPOINT",
                        help="temporal teacher; its window must equal --clip-len")
    parser.add_argument("--gt-weight", type=float, default=None, help="weight of the supervised loss (default 1)")
    parser.add_argument("--skd-feature", type=float, default=None, help="spatial feature-mimic weight (default 1)")
    parser.add_argument("--skd-map", type=float, default=None, help="spatial soft-map (KL) weight (default 1)")
    parser.add_argument("--tkd-feature", type=float, default=None, help="temporal feature-mimic weight (default 1)")
    parser.add_argument("--tkd-map", type=float, default=None, help="temporal soft-map (KL) weight (default 1)")
    parser.add_argument("--kd-coarse", type=float, default=None,
                        help="coarse map's weight relative to the final map in the map terms (default 0.5)")
    parser.add_argument("--kd-temperature", type=float, default=None, help="soft-map temperature (default 1)")
    parser.add_argument("--teacher-cache", default=None, metavar="DIR",
                        help="keep teacher outputs on disk, keyed by teacher file and sample stream; runs with the "
                        "same data, size, clip length, augmentation and seed reuse them")
    add_init_argument(parser)
    # No flags for the motion branch or the refiner: --init-from's, if it has them.
    parser.set_defaults(func=run_distill, motion_channels=None, motion_radius=None, refiner_channels=None)


def run_distill(args: argparse.Namespace) -> int:
    cache = Path(args.teacher_cache).resolve() if args.teacher_cache else None
    keep_source_architecture(args)
    return run_training(args, DistillTrainer, DistillConfig, DISTILL_FLAGS, cache_root=cache)
