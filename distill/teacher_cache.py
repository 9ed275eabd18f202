"""Teacher outputs on disk, keyed by sample: the frozen teachers run once per sample, not once per run.

Sample n of a run's stream is always the same clip (same sequence, frames and augmentation, see
`SampleStream`), so a teacher's targets for it depend only on the teacher file and on what defines
the samples: data, split, input size, clip length, augmentation (`--degrade` too) and seed. Those form
the cache's fingerprint (a folder name): runs that share them share the cache, e.g. "+SKD" and "+SKD+TKD" of an
ablation, or a run and its resumption; anything else gets a fresh folder, never stale targets.

Each sample is one file (`<index>.pt`, float16, written atomically), so torchrun ranks, which take
different samples, never write the same file. Size: the spatial teacher's stride-4 features dominate,
channels x (H/4) x (W/4) x clip_len x 2 bytes per sample (64 ch, 256x256, 3 frames: 1.5 MiB).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.kd import TeacherTargets

CACHE_FORMAT = "vsod-teacher-cache/1"


def fingerprint(teacher_sha256: str, samples: dict[str, Any]) -> str:
    """Folder name for one teacher's targets on one sample stream."""
    text = json.dumps({"format": CACHE_FORMAT, "teacher": teacher_sha256, "samples": samples}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class TeacherCache:
    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, index: int) -> Path:
        return self.folder / f"{index}.pt"

    def get(self, indices: list[int]) -> TeacherTargets | None:
        """The targets of all `indices` (rows in order), or None if any sample is missing."""
        parts = []
        for index in indices:
            path = self._path(index)
            if not path.is_file():
                self.misses += 1
                return None
            try:
                parts.append(torch.load(path, map_location="cpu", weights_only=True))
            except Exception:  # noqa: BLE001 - a torn file (killed mid-write elsewhere): recompute it
                self.misses += 1
                return None
        self.hits += 1
        return TeacherTargets(*(torch.cat([p[k] for p in parts]) for k in ("features", "final", "coarse")))

    def put(self, indices: list[int], targets: TeacherTargets) -> None:
        """Store float16 targets; rows are split evenly over the samples (clip_len rows each)."""
        rows = targets.features.shape[0] // len(indices)
        for k, index in enumerate(indices):
            part = {name: _row_slice(getattr(targets, name), k, rows) for name in ("features", "final", "coarse")}
            path = self._path(index)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            torch.save(part, tmp)
            os.replace(tmp, path)


def _row_slice(tensor: Tensor, k: int, rows: int) -> Tensor:
    # clone: a view would save the whole batch's storage into every file
    return tensor[k * rows : (k + 1) * rows].detach().to("cpu", torch.float16).clone()
