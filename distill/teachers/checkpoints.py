"""Teachers from training checkpoints: build by kind, load frozen, describe for lineage.

Teachers never go to the model store: `vsod-train teacher` writes an ordinary run checkpoint
(`RUN_DIR/last.pt`, "kind" spatial-teacher or temporal-teacher) and the distillation step loads it
from there, frozen. The file's sha256 goes into the student's lineage and keys the teacher cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from distill.runs import checkpoint_kind, load_checkpoint
from service.model.store import sha256_of

from .spatial import SpatialTeacher, SpatialTeacherConfig
from .temporal import TemporalTeacher, TemporalTeacherConfig

KINDS = {"spatial": SpatialTeacher.kind, "temporal": TemporalTeacher.kind}


def build_teacher(kind: str, config: dict[str, Any]) -> SpatialTeacher | TemporalTeacher:
    """A teacher network of `kind` ("spatial-teacher"/"temporal-teacher") from its model config."""
    if kind == SpatialTeacher.kind:
        return SpatialTeacher(SpatialTeacherConfig(**config))
    if kind == TemporalTeacher.kind:
        return TemporalTeacher(TemporalTeacherConfig(**config))
    raise ValueError(f"not a teacher: {kind!r}")



@dataclass
class LoadedTeacher:
    model: SpatialTeacher | TemporalTeacher
    kind: str
    info: dict[str, Any]  # path, sha256, step, config: what the lineage records


def load_teacher(path: str | Path, expected: str | None = None) -> LoadedTeacher:
    """A frozen teacher (eval mode, no gradients) from a `vsod-train teacher` checkpoint.

    `expected` ("spatial-teacher" or "temporal-teacher") refuses a checkpoint of the other kind, so
    `--spatial-teacher` cannot silently receive the temporal one (or a student).
    """
    path = Path(path).resolve()
    checkpoint = load_checkpoint(path)
    kind = checkpoint_kind(checkpoint)
    if kind not in KINDS.values():
        raise ValueError(f"{path} holds a {kind}, not a teacher (train one with `vsod-train teacher`)")
    if expected is not None and kind != expected:
        raise ValueError(f"{path} holds a {kind}, expected a {expected}")
    model = build_teacher(kind, checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    freeze(model)
    info = {"path": str(path), "sha256": sha256_of(path), "kind": kind, "step": checkpoint["step"],
            "model_config": checkpoint["model_config"], "training_seconds": round(checkpoint["training_seconds"], 1),
            "input_size": checkpoint["config"]["input_size"], "clip_len": checkpoint["config"]["clip_len"]}
    return LoadedTeacher(model, kind, info)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (batch norm uses its running statistics) and no gradients, for good."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
