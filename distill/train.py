"""Supervised training of the STKD student on clips of consecutive frames.

    vsod-train train --data davis:data/synth --out runs/s0 --steps 2000 --max-minutes 60 --threads 2
    torchrun --standalone --nproc_per_node 2 -m distill.cli train ...   # the same run over 2 processes

One `Trainer` owns the model, optimiser, schedule, data stream and checkpoints. The teacher and
distillation commands subclass it and change only what differs: the network (`build_model`), what
trains beside it (`trainable_module`, e.g. KD adapters), the forward pass (`forward_module`) and the
loss (`compute_loss`). Everything a run depends on is in its checkpoint (`RUN_DIR/last.pt`):
`--resume` continues from there with the same data order, RNG states and learning-rate schedule, so
an interrupted run ends where an uninterrupted one would. Under torchrun the model runs in DDP and
the sample stream is sharded by rank (see `distill.ddp`); only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from distill.data.clips import ClipDataset
from distill.data.loaders import load_sequences
from distill.data.provenance import root_provenance
from distill.data.sampling import SampleStream, WeightedSampleStream
from distill.ddp import ShardedStream, autocast, grad_scaler
from distill.finetune import init_lineage, initial_weights, load_initial_weights
from distill.losses import adjacent_change_loss, saliency_loss
from distill.runs import (
    CHECKPOINT_FORMAT,
    LAST,
    LOG,
    Runtime,
    TrainConfig,
    command_line,
    git_revision,
    learning_rate,
    now,
    save_checkpoint,
)
from service.model import STKDStudent, stkd_student
from service.model.network import ClipNetwork

# ClipDataset length in its sampled mode: far more samples than any run draws, so none repeats.
VIRTUAL_SAMPLES = 10**12
# Steps timed before a wall-clock budget is turned into a step count (the first steps are slow).
CALIBRATION_STEPS = 8


def build_model(config: TrainConfig, pretrained: bool = True) -> STKDStudent:
    model = stkd_student(width_mult=config.width_mult, motion_channels=config.motion_channels,
                         motion_radius=config.motion_radius, refiner_channels=config.refiner_channels,
                         pretrained_encoder=config.pretrained_encoder if pretrained else None)
    if pretrained and config.init_from:
        weights = initial_weights(Path(config.init_from), config.width_mult, config.motion_radius)
        load_initial_weights(model, weights, config.init_from)
    return model


class ClipForward(nn.Module):
    """`forward(clip) = model.forward_clip(clip)`: DDP hooks only a module's `forward`."""

    def __init__(self, model: ClipNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: Tensor) -> Any:
        return self.model.forward_clip(clip)


class Trainer:
    kind = "student"  # the network in the checkpoint (export takes only students)
    command = "train"  # the vsod-train command that resumes it
    model: ClipNetwork  # what `build_model` builds

    def __init__(self, config: TrainConfig, runtime: Runtime, checkpoint: dict[str, Any] | None = None) -> None:
        self.config, self.runtime = config, runtime
        self.out = Path(runtime.out)
        self.dist = runtime.dist
        if config.batch % self.dist.world_size:
            raise ValueError(f"--batch {config.batch} is not divisible by the {self.dist.world_size} processes")
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        _seed_everything(config.seed)
        self.device = torch.device(runtime.device)
        # A resumed run gets its weights from the checkpoint; the encoder file need not exist any more.
        self.model = self.build_model(pretrained=checkpoint is None).to(self.device)
        self.trainable = self.trainable_module().to(self.device)
        self.network = self.dist.wrap(self.forward_module(), self.device)
        self.optimizer = torch.optim.AdamW(_param_groups(self.trainable, config.weight_decay), lr=config.lr)
        self.scaler = grad_scaler(runtime.amp)
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
                "started": now(),
                **({"init_from": init_lineage(Path(config.init_from))} if config.init_from else {}),
                **self.extra_lineage(),
            }

    # -- what subclasses change -----------------------------------------------------------------
    def build_model(self, pretrained: bool) -> ClipNetwork:
        """The network whose weights the checkpoint's "model" holds."""
        return build_model(self.config, pretrained)

    def trainable_module(self) -> nn.Module:
        """Every parameter the optimiser updates (the model plus any training-only modules)."""
        return self.model

    def forward_module(self) -> nn.Module:
        """What `compute_loss` calls on a clip; wrapped in DDP under torchrun."""
        return ClipForward(self.model)

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        frames, masks, valid = self.inputs(batch)
        output = self.network(frames)
        soft = batch["soft"].to(self.device)
        per_frame = valid if self.config.soft_frames else valid & ~soft[:, None]
        loss, terms = saliency_loss(output, masks, per_frame)
        if self.config.soft_temporal:
            change, change_terms = adjacent_change_loss(output, masks, valid, soft)
            loss = loss + self.config.soft_temporal * change
            terms = {**terms, **change_terms, "loss": float(loss.detach())}
        return loss, terms

    def extra_lineage(self) -> dict[str, Any]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        """Load what `extra_state` saved."""

    # -- data ---------------------------------------------------------------------------------
    def _build_data(self) -> tuple[list[Any], Any]:
        if not self.config.data:
            raise ValueError("no training data: give --data [NAME:]ROOT at least once")
        sequences = []
        self._counts: list[dict[str, Any]] = []
        self._root_sizes: list[int] = []  # sequences each root adds to the dataset (it drops those without GT)
        for dataset, root in self.config.data:
            found = load_sequences(dataset, root, self.config.split)
            self._root_sizes.append(sum(1 for s in found if s.frames and s.masks))
            self._counts.append({
                "dataset": dataset,
                "root": str(Path(root).resolve()),
                "split": self.config.split,
                "sequences": len(found),
                "frames": sum(len(s.frames) for s in found),
                "annotated_frames": sum(len(s.masks) for s in found),
                **root_provenance(root),  # a labelled root's teacher and sources, a composite root's cut-outs
            })
            sequences.extend(found)
        weights = self.config.data_weights
        if weights is not None:
            if len(weights) != len(self.config.data):
                raise ValueError(f"{len(weights)} data weights for {len(self.config.data)} data roots")
            for count, weight in zip(self._counts, weights, strict=True):
                count["weight"] = weight
                count["share"] = round(weight / sum(weights), 6)
        clips = ClipDataset(
            sequences,
            clip_len=self.config.clip_len,
            input_size=self.config.input_size,
            augment=self.config.augment,
            seed=self.config.seed,
            samples_per_epoch=VIRTUAL_SAMPLES,
            degrade=self.config.degrade,
        )
        return sequences, clips

    def sampler(self) -> Sampler[int]:
        """This process's share of the run's sample stream, from the current step on."""
        start = self.step * self.config.batch
        if self.config.data_weights is not None:
            stream: Sampler[int] = WeightedSampleStream(self._root_sizes, self.config.data_weights, self.config.seed, start)
        else:
            stream = SampleStream(len(self.dataset.sequences), self.config.seed, start=start)
        if self.dist.world_size == 1:
            return stream
        return ShardedStream(stream, self.dist.rank, self.dist.world_size)

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the current step on; the same step always sees the same samples."""
        loader = DataLoader(
            self.dataset,
            batch_size=self.config.batch // self.dist.world_size,
            sampler=self.sampler(),
            num_workers=self.runtime.workers,
            drop_last=True,
            # Worker RNGs derive from this generator: seeding it by step keeps resumption exact.
            generator=torch.Generator().manual_seed(self.config.seed * 7919 + self.step + 1_000_003 * self.dist.rank),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)

    def inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        frames, masks, valid = (batch[k].to(self.device, non_blocking=True) for k in ("frames", "masks", "valid"))
        return frames, masks, valid

    # -- optimisation -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on a batch of clips; returns the logged loss terms (averaged over ranks)."""
        self.trainable.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step, self.total_steps)
        with autocast(self.device, self.runtime.amp):
            loss, terms = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        terms = self.dist.mean(terms, self.device)
        terms["grad_norm"] = float(norm)
        terms["lr"] = self.optimizer.param_groups[0]["lr"]
        self.last_terms = terms
        return terms

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "command": self.command,
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
            "saved": now(),
            **self.extra_state(),
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.restore_extra(state)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
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
        """Write the checkpoint (rank 0 only: every rank holds the same weights)."""
        path = self.out / LAST
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), path)
        return path

    def log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with (self.out / LOG).open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- the loop -------------------------------------------------------------------------------
    def budget_left(self) -> float:
        """Seconds of the wall-clock budget left (resumptions included); inf without a budget."""
        if self.config.max_minutes is None:
            return math.inf
        return self.config.max_minutes * 60 - self.training_seconds

    def _out_of_time(self, step_times: list[float]) -> bool:
        """Whether the next step would likely overrun the budget; rank 0 decides for all ranks."""
        if self.config.max_minutes is None:
            return False
        late = self.budget_left() < (float(np.mean(step_times[-20:])) if step_times else 0.0)
        return bool(self.dist.broadcast(float(late), self.device))

    def run(self) -> dict[str, Any]:
        """Train until the step count or the wall-clock budget is reached; checkpoint on the way and at the end."""
        config, runtime = self.config, self.runtime
        if config.steps is None and config.max_minutes is None:
            raise ValueError("give --steps N and/or --max-minutes M")
        self.out.mkdir(parents=True, exist_ok=True)
        self.log({"event": "resume" if self.step else "start", "step": self.step, "time": now(),
                  "command": command_line(), "config": asdict(config), "data": self.lineage["data"],
                  "world_size": self.dist.world_size, "device": str(self.device), "amp": runtime.amp})
        session_start, base_seconds = time.perf_counter(), self.training_seconds
        step_times: list[float] = []
        window: list[tuple[float, float]] = []  # (loss, seconds) since the last log line
        reason = "steps"
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.command, unit="step",
                   disable=not (runtime.progress and self.dist.is_main), dynamic_ncols=True)
        batches = self.batches()
        try:
            while self.total_steps is None or self.step < self.total_steps:
                if runtime.stop_at is not None and self.step >= runtime.stop_at:
                    reason = "stop-at"
                    break
                if self._out_of_time(step_times):
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
            "checkpoint": str(self.save()), "time": now(),
        }
        self.log(summary)
        self.dist.barrier()  # the checkpoint exists before any rank reports success
        return summary

    def _fit_schedule_to_budget(self, step_times: list[float]) -> None:
        """Turn the wall-clock budget into a step count, so the cosine schedule ends on time.

        The first two steps (allocator and thread-pool warm-up) are left out of the estimate; under
        torchrun rank 0's estimate holds for all.
        """
        per_step = float(np.mean(step_times[2:]))
        total = self.step + max(1, int(self.budget_left() / per_step))
        self.total_steps = int(self.dist.broadcast(total, self.device))
        self.log({"event": "schedule", "step": self.step, "total_steps": self.total_steps,
                  "seconds_per_step": round(per_step, 4)})


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and normalisation parameters (standard AdamW practice)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
