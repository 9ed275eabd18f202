"""Supervised training of the STKD student on clips of consecutive frames.

    vsod-train train --data davis:data/synth --out runs/s0 --steps 2000 --max-minutes 60 --threads 2

One `Trainer` owns the model, optimiser, schedule, data stream and checkpoints; `train_step` is
the unit a distributed launcher would wrap (the model in DDP, the sampler sharded by rank), so the
distillation issue can add torchrun without restructuring. Everything a run depends on is in its
checkpoint (`RUN_DIR/last.pt`): `--resume` continues from there with the same data order, RNG
states and learning-rate schedule, so an interrupted run ends where an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from distill.losses import saliency_loss
from service.model import STKDStudent, stkd_student

CHECKPOINT_FORMAT = "vsod-train-checkpoint/1"
LAST = "last.pt"
LOG = "train_log.jsonl"
# ClipDataset length in its sampled mode: far more samples than any run draws, so none repeats.
VIRTUAL_SAMPLES = 10**12
# Steps timed before a wall-clock budget is turned into a step count (the first steps are slow).
CALIBRATION_STEPS = 8


@dataclass
class TrainConfig:
    """What defines a run's result; saved in every checkpoint and restored by --resume."""

    data: list[tuple[str, str]] = field(default_factory=list)  # (dataset, root)
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
    pretrained_encoder: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.data = [(str(d), str(r)) for d, r in config.data]
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


class SampleStream(Sampler[int]):
    """An endless, resumable stream of `ClipDataset` indices: every sequence once per round, shuffled.

    The dataset runs in its `samples_per_epoch` mode, where item i shows sequence i mod N at a
    random start with augmentation drawn from (seed, i). Round r yields the indices r*N .. r*N+N-1
    in a seeded random order, so each round visits every sequence once, no index ever repeats (fresh
    augmentation every time), and sample n of the run is always the same clip: resuming at step s
    only means starting at sample s * batch; no sampler state has to be saved.
    """

    def __init__(self, sequences: int, seed: int, start: int = 0) -> None:
        self.sequences, self.seed, self.start = sequences, seed, start

    def __iter__(self) -> Iterator[int]:
        round_, offset = divmod(self.start, self.sequences)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_)
            order = torch.randperm(self.sequences, generator=generator).tolist()
            yield from (round_ * self.sequences + k for k in order[offset:])
            round_, offset = round_ + 1, 0


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


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # Our own file, and it carries numpy RNG state, which the weights-only unpickler refuses.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a torn or foreign file: one clear line, not a pickle traceback
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vsod-train checkpoint")
    return state


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


def build_model(config: TrainConfig, pretrained: bool = True) -> STKDStudent:
    return stkd_student(width_mult=config.width_mult,
                        pretrained_encoder=config.pretrained_encoder if pretrained else None)


class Trainer:
    def __init__(self, config: TrainConfig, runtime: Runtime, checkpoint: dict[str, Any] | None = None) -> None:
        self.config, self.runtime = config, runtime
        self.out = Path(runtime.out)
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        _seed_everything(config.seed)
        # A resumed run gets its weights from the checkpoint; the encoder file need not exist any more.
        self.device = torch.device(runtime.device)
        self.model = build_model(config, pretrained=checkpoint is None).to(self.device)
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, config.weight_decay), lr=config.lr)
        self.step = 0
        self.total_steps: int | None = config.steps
        self.training_seconds = 0.0
        self.last_terms: dict[str, float] = {}
        self.lineage: dict[str, Any] = {}
        self.sequences, self.dataset = self._build_data()
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            self.lineage = {
                "data": list(self._counts),
                "seed": config.seed,
                "commands": [command_line()],
                "git": git_revision(),
                "started": _now(),
            }

    # -- data ---------------------------------------------------------------------------------
    def _build_data(self) -> tuple[list[Any], Any]:
        from distill.data.clips import ClipDataset
        from distill.evaluate import load_sequences

        if not self.config.data:
            raise ValueError("no training data: give --data [NAME:]ROOT at least once")
        sequences = []
        self._counts: list[dict[str, Any]] = []
        for dataset, root in self.config.data:
            found = load_sequences(dataset, root, self.config.split)
            self._counts.append({
                "dataset": dataset,
                "root": str(Path(root).resolve()),
                "split": self.config.split,
                "sequences": len(found),
                "frames": sum(len(s.frames) for s in found),
                "annotated_frames": sum(len(s.masks) for s in found),
            })
            sequences.extend(found)
        clips = ClipDataset(
            sequences,
            clip_len=self.config.clip_len,
            input_size=self.config.input_size,
            augment=self.config.augment,
            seed=self.config.seed,
            samples_per_epoch=VIRTUAL_SAMPLES,
        )
        return sequences, clips

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the current step on; the same step always sees the same samples."""
        sampler = SampleStream(len(self.dataset.sequences), self.config.seed, start=self.step * self.config.batch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.config.batch,
            sampler=sampler,
            num_workers=self.runtime.workers,
            drop_last=True,
            # Worker RNGs derive from this generator: seeding it by step keeps resumption exact.
            generator=torch.Generator().manual_seed(self.config.seed * 7919 + self.step),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)

    # -- optimisation -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on a batch of clips; returns the logged loss terms."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step, self.total_steps)
        frames, masks, valid = (batch[k].to(self.device, non_blocking=True) for k in ("frames", "masks", "valid"))
        output = self.model.forward_clip(frames)
        loss, terms = saliency_loss(output, masks, valid)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        terms["grad_norm"] = float(norm)
        terms["lr"] = self.optimizer.param_groups[0]["lr"]
        self.last_terms = terms
        return terms

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "model_config": self.model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "training_seconds": self.training_seconds,
            "last_terms": self.last_terms,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "lineage": self.lineage,
            "saved": _now(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.total_steps = state["total_steps"] if self.config.steps is None else self.config.steps
        self.training_seconds = float(state["training_seconds"])
        self.last_terms = dict(state.get("last_terms") or {})
        self.lineage = dict(state["lineage"])
        self.lineage["commands"] = [*self.lineage.get("commands", []), command_line()]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    def save(self) -> Path:
        path = self.out / LAST
        save_checkpoint(self.state_dict(), path)
        return path

    def log(self, record: dict[str, Any]) -> None:
        with (self.out / LOG).open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    # -- the loop -------------------------------------------------------------------------------
    def budget_left(self) -> float:
        """Seconds of the wall-clock budget left (resumptions included); inf without a budget."""
        if self.config.max_minutes is None:
            return math.inf
        return self.config.max_minutes * 60 - self.training_seconds

    def run(self) -> dict[str, Any]:
        """Train until the step count or the wall-clock budget is reached; checkpoint on the way and at the end."""
        config, runtime = self.config, self.runtime
        if config.steps is None and config.max_minutes is None:
            raise ValueError("give --steps N and/or --max-minutes M")
        self.out.mkdir(parents=True, exist_ok=True)
        self.log({"event": "resume" if self.step else "start", "step": self.step, "time": _now(),
                  "command": command_line(), "config": asdict(config), "data": self.lineage["data"]})
        session_start, base_seconds = time.perf_counter(), self.training_seconds
        step_times: list[float] = []
        window: list[tuple[float, float]] = []  # (loss, seconds) since the last log line
        reason = "steps"
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not runtime.progress, dynamic_ncols=True)
        batches = self.batches()
        try:
            while self.total_steps is None or self.step < self.total_steps:
                if runtime.stop_at is not None and self.step >= runtime.stop_at:
                    reason = "stop-at"
                    break
                # Stop when the next step would likely overrun the budget.
                if self.budget_left() < (float(np.mean(step_times[-20:])) if step_times else 0.0):
                    reason = "time budget"
                    break
                started = time.perf_counter()
                terms = self.train_step(next(batches))
                step_times.append(time.perf_counter() - started)
                self.training_seconds = base_seconds + time.perf_counter() - session_start
                if self.total_steps is None and len(step_times) == CALIBRATION_STEPS:
                    self._fit_schedule_to_budget(step_times)
                    bar.total = self.total_steps
                window.append((terms["loss"], step_times[-1]))
                bar.set_postfix(loss=f"{terms['loss']:.4f}", clips_s=f"{config.batch / np.mean(step_times[-10:]):.2f}",
                                refresh=False)
                bar.update(1)
                if self.step % runtime.log_every == 0 or self.step == self.total_steps:
                    seconds = sum(t for _, t in window)
                    self.log({"step": self.step, **{k: round(v, 6) for k, v in terms.items()},
                              "loss_mean": round(float(np.mean([loss for loss, _ in window])), 6),
                              "clips_per_s": round(config.batch * len(window) / seconds, 3),
                              "seconds_per_step": round(seconds / len(window), 4),
                              "elapsed_s": round(self.training_seconds, 1)})
                    window = []
                if self.step % runtime.save_every == 0:
                    self.save()
        finally:
            bar.close()
        self.training_seconds = base_seconds + time.perf_counter() - session_start
        per_step = float(np.mean(step_times)) if step_times else None
        summary = {
            "event": "stop", "reason": reason, "step": self.step, "total_steps": self.total_steps,
            "training_seconds": round(self.training_seconds, 1),
            "seconds_per_step": round(per_step, 4) if per_step else None,
            "clips_per_s": round(config.batch / per_step, 3) if per_step else None,
            "checkpoint": str(self.save()), "time": _now(),
        }
        self.log(summary)
        return summary

    def _fit_schedule_to_budget(self, step_times: list[float]) -> None:
        """Turn the wall-clock budget into a step count, so the cosine schedule ends on time.

        The first two steps (allocator and thread-pool warm-up) are left out of the estimate.
        """
        per_step = float(np.mean(step_times[2:]))
        self.total_steps = self.step + max(1, int(self.budget_left() / per_step))
        self.log({"event": "schedule", "step": self.step, "total_steps": self.total_steps,
                  "seconds_per_step": round(per_step, 4)})


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (standard AdamW practice)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- command line --------------------------------------------------------------------------------


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


# CLI flags that define the run (None = not given; on --resume they must match the checkpoint).
_CONFIG_FLAGS = ("split", "width_mult", "input_size", "clip_len", "batch", "lr", "weight_decay", "warmup", "seed",
                 "pretrained_encoder")


def add_train_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="supervised training of the student on clips of consecutive frames",
        description="Train the STKD student (BCE + IoU, deep supervision) on video clips. Checkpoints go to "
        "RUN_DIR/last.pt (atomic writes), a JSON-lines log to RUN_DIR/train_log.jsonl; --resume continues "
        "a run exactly where it stopped. Export to the model store with `vsod-train export`.",
    )
    parser.add_argument("--data", action="append", default=[], metavar="[NAME:]ROOT",
                        help="training data root, repeatable; NAME is davis, davsod, segtrack, fbms or duts "
                        "(default davis, the layout `vsod-train synth` writes), e.g. --data davsod:/data/DAVSOD")
    parser.add_argument("--split", default=None, help="split of every root (default train)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: checkpoints and log")
    parser.add_argument("--width-mult", type=float, default=None, help="encoder width multiplier (default 0.5)")
    parser.add_argument("--input-size", default=None, help="training input N or HxW, multiples of 32 (default 256)")
    parser.add_argument("--clip-len", type=int, default=None, help="consecutive frames per clip (default 3)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (the schedule's length)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-clock budget over the whole run, resumptions included; without --steps the "
                        "schedule is fitted to it after a few timed steps; stops cleanly and saves")
    parser.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-4)")
    parser.add_argument("--warmup", type=int, default=None, help="linear warm-up steps before cosine decay (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="seed of model init, data order and augmentation (default 0)")
    parser.add_argument("--pretrained-encoder", default=None, metavar="PATH",
                        help="local torchvision-style MobileNetV2 weights for the encoder (nothing is downloaded)")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (torch.set_num_threads); on a CPU shared with other jobs also set "
                        "OMP_WAIT_POLICY=passive, or use 1 thread: spinning OpenMP threads were measured 2-5x slower there")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0: load in this process)")
    parser.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (default 200)")
    parser.add_argument("--log-every", type=int, default=10, help="log line every N steps (default 10)")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="pause at this step and save, without shortening the schedule (continue with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt (config comes from the checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig(data=[parse_data(value) for value in args.data], steps=args.steps, max_minutes=args.max_minutes,
                         augment=not args.no_augment)
    for name in _CONFIG_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if name == "input_size":
                value = parse_size(value)
            elif name == "pretrained_encoder":
                value = str(Path(value).resolve())
            setattr(config, name, value)
    return config


def _resume_config(args: argparse.Namespace, saved: TrainConfig) -> TrainConfig:
    """The checkpoint's config; a flag given again must agree with it, budgets may be extended."""
    given = config_from_args(args)
    for name in _CONFIG_FLAGS:
        if getattr(args, name) is not None and getattr(given, name) != getattr(saved, name):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)} differs from the checkpoint's "
                             f"{getattr(saved, name)}: --resume continues the saved run unchanged")
    if args.data and [tuple(d) for d in given.data] != [tuple(d) for d in saved.data]:
        raise ValueError("--data differs from the checkpoint's: --resume continues the saved run unchanged")
    if args.steps is not None:
        saved.steps = args.steps
    if args.max_minutes is not None:
        saved.max_minutes = args.max_minutes
    return saved


def run_train(args: argparse.Namespace) -> int:
    for name in ("steps", "batch", "clip_len", "save_every", "log_every", "stop_at"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise ValueError("--workers must be 0 or more")
    if not args.resume and args.steps is None and args.max_minutes is None:
        raise ValueError("give --steps N and/or --max-minutes M")
    runtime = Runtime(Path(args.out), args.threads, args.workers, args.save_every, args.log_every, not args.no_progress,
                      args.stop_at, args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    last = runtime.out / LAST
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(last)
        config = _resume_config(args, TrainConfig.from_dict(checkpoint["config"]))
    else:
        if last.exists():
            raise ValueError(f"{last} exists: pass --resume to continue that run, or choose another --out")
        config = config_from_args(args)
        for _, root in config.data:
            if not Path(root).is_dir():
                raise FileNotFoundError(f"training data root not found: {root}")
    trainer = Trainer(config, runtime, checkpoint)
    summary = trainer.run()
    per_step = summary["seconds_per_step"]
    print(
        f"stopped at step {summary['step']} ({summary['reason']}) after {summary['training_seconds']:.0f} s"
        + (f", {per_step:.3f} s/step, {summary['clips_per_s']:.2f} clips/s" if per_step else "")
        + f"; checkpoint {summary['checkpoint']}"
    )
    return 0
