"""What every training command shares: run config, schedule, checkpoints, lineage and the CLI flags.

`vsod-train train`, `teacher` and `distill` all write `RUN_DIR/last.pt` (atomically) and a JSON-lines
log `RUN_DIR/train_log.jsonl`, record where their result came from (data, seed, commands, code
commit) and accept the same run flags; only the network and the loss differ. A checkpoint names the
command that made it (`"command"`) and the network it holds (`"kind"`), so `--resume` and export
refuse a checkpoint of another kind with one clear line instead of a key-mismatch traceback.
`run_training` is the body all three commands share (flags checked, run opened or resumed, torchrun's
process group joined, trainer run, summary printed by rank 0).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from distill.ddp import DistContext, init_distributed, resolve_amp
from service.model.motion import RADIUS

CHECKPOINT_FORMAT = "vsod-train-checkpoint/1"
LAST = "last.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainConfig:
    """What defines a run's result; saved in every checkpoint and restored by --resume."""

    data: list[tuple[str, str]] = field(default_factory=list)  # (dataset, root)
    # Per root (--data ROOT@WEIGHT): its share of the samples; None: every sequence equally often.
    data_weights: list[float] | None = None
    split: str | None = "train"
    width_mult: float = 0.5
    input_size: tuple[int, int] = (256, 256)
    clip_len: int = 3
    batch: int = 8
    steps: int | None = None
    max_minutes: float | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0
    seed: int = 0
    augment: bool = True
    degrade: float = 0.0  # share of clips filmed by a worse camera (distill.data.degrade)
    pretrained_encoder: str | None = None
    init_from: str | None = None  # students: start from these weights (a checkpoint or a model-store folder)
    # Teacher-labelled clips (`labelled:` roots), `vsod-train train` only: their maps as per-frame
    # targets (map-level spatial KD), and the weight of temporal KD from their adjacent frames.
    soft_frames: bool = True
    soft_temporal: float = 0.0
    # Students: channels that compare the motion branch's matching costs (service.model.motion); 0: none.
    motion_channels: int = 0
    motion_radius: int = RADIUS  # students: the motion branch's shifts, in stride-4 cells each way
    refiner_channels: int = 0  # students: channels of the stride-2 detail refiner (service.model.refiner); 0: none

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.data = [(str(d), str(r)) for d, r in config.data]
        if config.data_weights is not None:
            config.data_weights = [float(w) for w in config.data_weights]
        config.input_size = (int(config.input_size[0]), int(config.input_size[1]))
        return config


@dataclass
class Runtime:
    """How this process runs; may differ between a run and its resumption without changing results."""

    out: Path
    threads: int | None = None
    workers: int = 0
    save_every: int = 200
    log_every: int = 10
    progress: bool = True
    stop_at: int | None = None  # pause the run at this step (schedule unchanged); --resume continues
    device: str = "cpu"
    amp: str = "off"  # "off", "bf16" or "fp16" (resolved by distill.ddp.resolve_amp)
    dist: DistContext = field(default_factory=DistContext)


def warmup_steps(config: TrainConfig, total: int | None) -> int:
    """The warm-up actually used: at most a fifth of a short run."""
    return max(1, min(config.warmup, total // 5)) if total else max(1, config.warmup)


def learning_rate(config: TrainConfig, step: int, total: int | None) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak at `total` steps."""
    warmup = warmup_steps(config, total)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if not total:
        return config.lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over `path`.

    A kill at any moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A vsod-train checkpoint. With `mmap`, its tensors are mapped rather than read, so a caller that
    needs only the config and flags pays for those alone."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # Our own file, and it carries numpy RNG state, which the weights-only unpickler refuses.
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - a torn or foreign file: one clear line, not a pickle traceback
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vsod-train checkpoint")
    return state


def checkpoint_kind(state: dict[str, Any]) -> str:
    """The network a checkpoint holds; checkpoints from before teachers existed hold the student."""
    return str(state.get("kind", "student"))


def checkpoint_command(state: dict[str, Any]) -> str:
    """The `vsod-train` command that made (and can resume) a checkpoint."""
    return str(state.get("command", "train"))


def git_revision() -> dict[str, Any]:
    """The code's commit and whether tracked files differ from it (None outside a git checkout)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=False)
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
            timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def command_line() -> str:
    """The command as a user would retype it."""
    return shlex.join(["vsod-train", *sys.argv[1:]])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def split_weight(value: str) -> tuple[str, float | None]:
    """`[NAME:]ROOT@WEIGHT` -> (`[NAME:]ROOT`, WEIGHT); without a numeric `@` suffix, (value, None)."""
    head, sep, tail = value.rpartition("@")
    if not sep:
        return value, None
    try:
        weight = float(tail)
    except ValueError:
        return value, None  # an '@' inside the path, not a weight
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"--data {value}: the weight after '@' must be a positive number")
    return head, weight


def parse_data_weights(values: list[str]) -> tuple[list[tuple[str, str]], list[float] | None]:
    """The --data values as (dataset, root) pairs and their weights (None when no root has one)."""
    specs = [split_weight(value) for value in values]
    weights = [weight for _, weight in specs]
    given = [weight is not None for weight in weights]
    if any(given) and not all(given):
        raise ValueError("give every --data root a weight (ROOT@WEIGHT) or none")
    given_weights = [weight for weight in weights if weight is not None]
    return [parse_data(value) for value, _ in specs], (given_weights if all(given) and weights else None)


def parse_data(value: str) -> tuple[str, str]:
    """`NAME:ROOT` or plain `ROOT` (DAVIS layout, which the synthetic generator writes)."""
    from distill.data.loaders import ALIASES, DATASETS

    name, sep, root = value.partition(":")
    key = ALIASES.get(name.lower(), name.lower())
    if sep and key in DATASETS:
        return key, str(Path(root).resolve())
    if sep and "/" not in name and "\\" not in name and len(name) > 1:
        raise ValueError(f"unknown dataset {name!r} in --data {value} (known: {', '.join(sorted(DATASETS))})")
    return "davis", str(Path(value).resolve())


def parse_size(value: str) -> tuple[int, int]:
    """`256` (square) or `HxW`; both multiples of 32, the student's total stride."""
    parts = value.lower().split("x")
    try:
        size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else None
    except ValueError:
        size = None
    if size is None or min(size) < 32 or size[0] % 32 or size[1] % 32:
        raise ValueError(f"--input-size {value!r}: give N or HxW, multiples of 32 (e.g. 256 or 256x320)")
    return size


# -- command line shared by train, teacher and distill --------------------------------------------

# Flags that define a run (None = not given; on --resume they must match the checkpoint).
CONFIG_FLAGS = ("split", "width_mult", "input_size", "clip_len", "batch", "lr", "weight_decay", "warmup", "seed",
                "pretrained_encoder", "degrade")
# Flags whose value is a file path: stored resolved, so a run can be resumed from another folder.
PATH_FLAGS = {"pretrained_encoder", "init_from", "spatial_teacher", "temporal_teacher"}


def add_run_arguments(parser: argparse.ArgumentParser, defaults: dict[str, str]) -> None:
    """The flags every training command takes; `defaults` fills the help texts (the config's defaults)."""
    parser.add_argument("--data", action="append", default=[], metavar="[NAME:]ROOT[@WEIGHT]",
                        help="training data root, repeatable; NAME is davis, davsod, segtrack, fbms, duts or labelled "
                        "(a `vsod-train label` root, its teacher maps used as soft targets; default davis, the layout "
                        "`vsod-train synth` writes), e.g. --data davsod:/data/DAVSOD. WEIGHT: the root's share of the "
                        "samples (give every root one, e.g. data/synth@2 labelled:data/real@1); without weights every "
                        "sequence is shown equally often")
    parser.add_argument("--split", default=None, help="split of every root (default train)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: checkpoints and log")
    parser.add_argument("--width-mult", type=float, default=None,
                        help=f"encoder width multiplier (default {defaults.get('width_mult', '0.5')})")
    parser.add_argument("--input-size", default=None, help="training input N or HxW, multiples of 32 (default 256)")
    parser.add_argument("--clip-len", type=int, default=None,
                        help=f"consecutive frames per clip (default {defaults.get('clip_len', '3')})")
    parser.add_argument("--batch", type=int, default=None,
                        help="clips per step over all processes (default 8); under torchrun each of N processes "
                        "takes batch/N")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (the schedule's length)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock budget over the whole run, resumptions included; without --steps the "
                        "schedule is fitted to it after a few timed steps; stops cleanly and saves")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak AdamW learning rate (default {defaults.get('lr', '2e-3')})")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--warmup", type=int, default=None, help="linear warm-up steps before cosine decay (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="seed of model init, data order and augmentation (default 0)")
    parser.add_argument("--pretrained-encoder", default=None, metavar="PATH",
                        help="local torchvision-style MobileNetV2 weights for the encoder (nothing is downloaded)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--degrade", type=float, default=None, metavar="P",
                        help="share of training clips filmed by a worse camera: two of blur, lower resolution, JPEG, "
                        "sensor noise and a white-balance shift, the same for all of a clip's frames (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads); on a CPU shared with other jobs also set "
                        "OMP_WAIT_POLICY=passive, or use 1 thread: spinning OpenMP threads were measured 2-5x slower there")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, else cpu; under torchrun cuda:LOCAL_RANK)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                        help="mixed precision (autocast): auto = bf16 (fp16 where unsupported) on CUDA, off on CPU")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0: load in this process)")
    parser.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (default 200)")
    parser.add_argument("--log-every", type=int, default=10, help="log line every N steps (default 10)")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="pause at this step and save, without shortening the schedule (continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt (config comes from the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_run_arguments(args: argparse.Namespace) -> None:
    for name in ("steps", "batch", "clip_len", "save_every", "log_every", "stop_at"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise ValueError("--workers must be 0 or more")
    if args.degrade is not None and not 0.0 <= args.degrade <= 1.0:  # also refuses nan
        raise ValueError("--degrade must be a share between 0 and 1")
    if args.degrade and args.no_augment:
        raise ValueError("--degrade is part of augmentation: it does nothing with --no-augment")
    if not args.resume and args.steps is None and args.max_minutes is None:
        raise ValueError("give --steps N and/or --max-minutes M")


def config_from_args(args: argparse.Namespace, cls: type[TrainConfig], flags: tuple[str, ...] = CONFIG_FLAGS) -> Any:
    """A config dataclass of type `cls` from the flags; flags left out keep the dataclass defaults."""
    data, weights = parse_data_weights(args.data)
    config = cls(data=data, steps=args.steps, max_minutes=args.max_minutes, augment=not args.no_augment)
    known = {f.name for f in fields(cls)}
    if weights is not None:
        config.data_weights = weights
    for name in flags:
        value = getattr(args, name)
        if value is not None and name in known:
            if name == "input_size":
                value = parse_size(value)
            elif name in PATH_FLAGS:
                value = str(Path(value).resolve())
            setattr(config, name, value)
    return config


def resume_config(args: argparse.Namespace, saved: Any, flags: tuple[str, ...] = CONFIG_FLAGS) -> Any:
    """The checkpoint's config; a flag given again must agree with it, budgets may be extended."""
    given = config_from_args(args, type(saved), flags)
    for name in flags:
        if getattr(args, name) is not None and getattr(given, name) != getattr(saved, name):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} differs from the checkpoint's "
                             f"{getattr(saved, name)}: --resume continues the saved run unchanged")
    if args.data and ([tuple(d) for d in given.data] != [tuple(d) for d in saved.data]
                      or given.data_weights != saved.data_weights):
        raise ValueError("--data differs from the checkpoint's: --resume continues the saved run unchanged")
    if args.steps is not None:
        saved.steps = args.steps
    if args.max_minutes is not None:
        saved.max_minutes = args.max_minutes
    return saved


def open_run(args: argparse.Namespace, cls: type[TrainConfig], command: str,
             flags: tuple[str, ...] = CONFIG_FLAGS) -> tuple[Any, dict[str, Any] | None]:
    """(config, checkpoint or None) for a new run or a resumed one, refusing mismatched run folders."""
    last = Path(args.out) / LAST
    if args.resume:
        checkpoint = load_checkpoint(last)
        if checkpoint_command(checkpoint) != command:
            raise ValueError(f"{last} was made by `vsod-train {checkpoint_command(checkpoint)}`: resume it with that command")
        return resume_config(args, cls.from_dict(checkpoint["config"]), flags), checkpoint
    if last.exists():
        raise ValueError(f"{last} exists: pass --resume to continue that run, or choose another --out")
    config = config_from_args(args, cls, flags)
    for _, root in config.data:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"training data root not found: {root}")
    return config, None


def print_summary(summary: dict[str, Any]) -> None:
    per_step = summary["seconds_per_step"]
    print(
        f"stopped at step {summary['step']} ({summary['reason']}) after {summary['training_seconds']:.0f} s"
        + (f", {per_step:.3f} s/step, {summary['clips_per_s']:.2f} clips/s" if per_step else "")
        + f"; checkpoint {summary['checkpoint']}"
    )


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    """Join torchrun's process group if launched by it, and describe how this process runs."""
    context, device = init_distributed(args.device)
    return Runtime(Path(args.out), args.threads, args.workers, args.save_every, args.log_every, not args.no_progress,
                   args.stop_at, str(device), resolve_amp(args.amp, device), context)


class TrainingRun(Protocol):
    """A trainer, built: `run()` trains to the end of its schedule or budget and returns the summary."""

    def run(self) -> dict[str, Any]: ...


class TrainerClass(Protocol):
    """A trainer class (`distill.train.Trainer` and its subclasses): the command that resumes its runs,
    and a constructor, called as `(config, runtime, checkpoint or None, **options)`. Declared loosely:
    each trainer takes its own config class and options."""

    command: str

    def __call__(self, *args: Any, **kwargs: Any) -> TrainingRun: ...


def run_training(args: argparse.Namespace, trainer_cls: TrainerClass, config_cls: type,
                 flags: tuple[str, ...] = CONFIG_FLAGS, **trainer_options: Any) -> int:
    """The body of every training command: check flags, open or resume the run, train, report."""
    check_run_arguments(args)
    config, checkpoint = open_run(args, config_cls, trainer_cls.command, flags)
    runtime = runtime_from_args(args)
    try:
        summary = trainer_cls(config, runtime, checkpoint, **trainer_options).run()
    finally:
        runtime.dist.shutdown()
    if runtime.dist.is_main:
        print_summary(summary)
    return 0
