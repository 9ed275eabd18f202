"""Fine-tuning: `--init-from MODEL` starts a student from stored weights instead of fresh ones.

Shared by `vsod-train train` and `vsod-train distill`; the run's lineage records the start (path and
the weights' sha256), so a fine-tuned model names the model it came from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from distill.runs import load_checkpoint
from service.model import ModelStore
from service.model.motion import RADIUS, MotionEncoder
from service.model.store import MANIFEST, WEIGHTS, sha256_of

COMPARE_WEIGHT = "motion.compare.0.weight"  # the motion branch's first convolution: one input channel per cost


def read_source(path: Path, with_weights: bool = True) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config and weights of an --init-from source: a model-store folder (`model_store/<name>`) or
    a student training checkpoint (`RUN_DIR/last.pt`). Without `with_weights`, the weights come back
    empty and are not read: a model folder's config is in its manifest, and a checkpoint is mapped."""
    if (path / MANIFEST).is_file():
        if not with_weights:
            return dict(json.loads((path / MANIFEST).read_text()).get("config") or {}), {}
        model, manifest = ModelStore(path.parent).load(path.name)
        return dict(manifest.config), model.state_dict()
    if path.is_file():
        checkpoint = load_checkpoint(path, mmap=not with_weights)
        if checkpoint.get("kind", "student") != "student":
            raise ValueError(f"--init-from {path}: a {checkpoint.get('kind')} checkpoint, not a student's")
        return dict(checkpoint.get("model_config") or {}), checkpoint["model"] if with_weights else {}
    raise ValueError(f"--init-from {path}: neither a model-store folder (with manifest.json) nor a checkpoint file")


def initial_weights(path: Path, width_mult: float, motion_radius: int = RADIUS) -> dict[str, Tensor]:
    """A student's weights to fine-tune from (see `read_source`); its width must be the run's. A motion
    branch of a smaller radius than the source's keeps the source's comparison of the shifts it shares."""
    config, weights = read_source(path)
    if config.get("width_mult") != width_mult:
        raise ValueError(f"--init-from {path}: width {config.get('width_mult')}, the run's --width-mult is {width_mult}")
    source_radius = config.get("motion_radius", RADIUS)
    if COMPARE_WEIGHT in weights and motion_radius != source_radius:
        try:
            channels = MotionEncoder.evidence_channels(source_radius, motion_radius)
        except ValueError as error:
            raise ValueError(f"--init-from {path}: {error} (--motion-radius)") from None
        weights = {**weights, COMPARE_WEIGHT: weights[COMPARE_WEIGHT][:, channels]}
    return weights


def keep_source_architecture(args: argparse.Namespace) -> None:
    """A new run from a model with a motion branch or a detail refiner keeps them, and the branch's
    radius, unless --motion-channels, --motion-radius or --refiner-channels says otherwise:
    fine-tuning the default model needs no flag that restates its architecture."""
    if args.resume or not args.init_from:
        return
    unset = [key for key in ("motion_channels", "motion_radius", "refiner_channels") if getattr(args, key, None) is None]
    if not unset:
        return
    config, _ = read_source(Path(args.init_from), with_weights=False)
    if "motion_channels" in unset:
        args.motion_channels = config.get("motion_channels") or None
    if "motion_radius" in unset and config.get("motion_channels"):
        args.motion_radius = config.get("motion_radius", RADIUS)
    if "refiner_channels" in unset:
        args.refiner_channels = config.get("refiner_channels") or None


def load_initial_weights(model: nn.Module, weights: dict[str, Tensor], source: str | Path) -> None:
    """Load strictly, except that a student gaining a motion branch or a detail refiner starts it fresh
    (the branch's cue and the refiner's correction start at zero, so the fine-tuned model starts
    exactly as the source)."""
    hint = "--width-mult, --motion-channels, --motion-radius and --refiner-channels must allow them"
    own = model.state_dict()
    reshaped = [key for key, value in weights.items() if key in own and own[key].shape != value.shape]
    if reshaped:
        raise ValueError(f"--init-from {source}: its weights do not fit this student ({reshaped[0]} "
                         f"{tuple(weights[reshaped[0]].shape)}, here {tuple(own[reshaped[0]].shape)}): {hint}")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    strange = [key for key in missing if not key.startswith(("motion.", "refiner."))] + list(unexpected)
    if strange:
        raise ValueError(f"--init-from {source}: its weights do not fit this student (e.g. {strange[0]}): {hint}")


def init_lineage(path: Path) -> dict[str, str]:
    """Where a fine-tuned student started: the path and the sha256 of its weights."""
    return {"path": str(path), "sha256": sha256_of(path / WEIGHTS if path.is_dir() else path)}


def add_init_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="fine-tune: start the student from a model-store folder (model_store/<name>) or a "
                        "student checkpoint (RUN_DIR/last.pt) instead of fresh weights")
