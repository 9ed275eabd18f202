"""Scale-out for the training commands: torch.distributed (torchrun, DDP) and mixed precision.

    torchrun --standalone --nproc_per_node 4 -m distill.cli distill --data ... --batch 32 ...

The same command runs alone or under torchrun. Under torchrun (WORLD_SIZE > 1) each process joins a
process group (NCCL on CUDA, gloo on CPU), takes every N-th sample of the run's sample stream (the
`DistributedSampler` idea applied to the endless, resumable stream: sample n of the run stays the
same clip whatever N is) and `--batch / N` clips per step, so `--batch` is the global batch and the
schedule does not depend on N. Gradients are averaged by DDP; only rank 0 writes checkpoints, logs
and the progress bar; decisions that must agree (stop on the time budget, the fitted step count)
are taken by rank 0 and broadcast, so no rank waits for a collective the others skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass
class DistContext:
    """This process's place in the job; world_size 1 (no process group) when run alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """The module under DDP when distributed (gradients averaged over ranks), else as is."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        # Depthwise kernels (C,1,3,3) get gradients whose size-1 dimension has another (meaningless)
        # stride than the bucket's: the reducer warns on every rank although the layout is identical.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module, device_ids=device_ids)

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Average logged numbers over ranks (each rank saw a different part of the batch)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}

    def broadcast(self, value: float, device: torch.device) -> float:
        """Rank 0's value on every rank."""
        if not self.enabled:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | None) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group when launched by it; (context, this process's device).

    Without torchrun (or with one process) nothing is initialised and `device` defaults to CUDA when
    available. Under torchrun on CUDA each process takes the GPU of its LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if world_size <= 1:
        return DistContext(), torch.device(device or ("cuda" if wants_cuda else "cpu"))
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: run without torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device} but CUDA is not available")
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), "nccl"
    else:
        chosen, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, backend), chosen


class ShardedStream(Sampler[int]):
    """Every `world_size`-th index of `stream` from position `rank`: one rank's share of a global batch.

    With a per-rank batch of B/N, global step s covers stream positions s*B .. s*B+B-1 over all ranks,
    exactly the samples one process would take with batch B.
    """

    def __init__(self, stream: Sampler[int], rank: int, world_size: int) -> None:
        self.stream, self.rank, self.world_size = stream, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.stream), self.rank, None, self.world_size)


def resolve_amp(amp: str, device: torch.device) -> str:
    """"off", "bf16" or "fp16" for `--amp` on this device (auto: bf16 on CUDA where supported, else fp16)."""
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA (its loss scaling is CUDA-only); use bf16 or off on the CPU")
    return amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast for the forward pass and the losses; a no-op when `amp` is "off"."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(amp: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (its small exponent range underflows gradients); disabled otherwise."""
    return torch.amp.GradScaler("cuda", enabled=amp == "fp16")
