"""A shuffling sampler whose order depends only on (seed, epoch), never on the global RNG."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Random permutation of ``range(n)`` drawn from ``seed + epoch``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from a
    checkpoint visits the samples in exactly the order of an uninterrupted run.
    """

    def __init__(self, num_samples: int, seed: int = 0, on_epoch: Callable[[int], None] | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0
        #: also told the epoch (a dataset's ``set_epoch``: its augmentation draws are seeded by it)
        self.on_epoch = on_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
