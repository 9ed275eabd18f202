"""The order in which a run draws its training clips: endless, seeded and resumable by position.

Both streams yield `ClipDataset` indices for its sampled mode (item i shows sequence i mod N with
augmentation drawn from i). Sample n of a run is a function of (seed, n) only, so `--resume` at step s
starts the stream at s * batch and saves no sampler state; `distill.ddp.ShardedStream` splits either
between processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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


class WeightedSampleStream(Sampler[int]):
    """`SampleStream` for a mix whose roots get set shares of the samples (`--data ROOT@WEIGHT`).

    Root j owns the dataset's sequences offsets[j] .. offsets[j] + sizes[j] - 1. A round of R samples
    gives root j its quota (R * share, largest remainder), taken from an endless stream of shuffled
    passes over that root's sequences, so within a root every sequence is shown equally often; the
    round is then shuffled. Sample n of sequence k is dataset index n * N + k: the dataset shows
    sequence k (i mod N) with augmentation drawn from that index, which no other sample shares.
    Everything is a function of (seed, n), so resuming at step s again only means starting at s * batch.
    """

    def __init__(self, sizes: list[int], weights: list[float], seed: int, start: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes or min(sizes) < 1 or min(weights) <= 0:
            raise ValueError("need one positive weight per data root, each root with at least one sequence")
        self.sizes, self.seed, self.start = list(sizes), seed, start
        self.offsets = [sum(sizes[:j]) for j in range(len(sizes))]
        self.total = sum(sizes)
        self.round = max(self.total, 100)
        shares = [w / sum(weights) for w in weights]
        quota = [math.floor(share * self.round) for share in shares]
        by_remainder = sorted(range(len(shares)), key=lambda j: quota[j] - shares[j] * self.round)
        for j in by_remainder[: self.round - sum(quota)]:
            quota[j] += 1
        self.quota = quota

    def _root_sequences(self, root: int, first: int, count: int) -> list[int]:
        """Positions first .. first+count-1 of root `root`'s endless stream of shuffled passes."""
        size, picked = self.sizes[root], list[int]()
        for position in range(first, first + count):
            epoch, offset = divmod(position, size)
            if offset == 0 or not picked:
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + root) * 7919 + epoch)
                order = torch.randperm(size, generator=generator).tolist()
            picked.append(self.offsets[root] + order[offset])
        return picked

    def __iter__(self) -> Iterator[int]:
        round_, offset = divmod(self.start, self.round)
        while True:
            picks = [k for j, quota in enumerate(self.quota) for k in self._root_sequences(j, round_ * quota, quota)]
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_ + 500_009)
            order = torch.randperm(self.round, generator=generator).tolist()
            for m in range(offset, self.round):
                yield (round_ * self.round + m) * self.total + picks[order[m]]
            round_, offset = round_ + 1, 0
