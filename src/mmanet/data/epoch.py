"""Per-sample augmentation randomness for lazy datasets: the epoch in shared memory, one generator per draw.

A dataset with random augmentation mixes in :class:`EpochSeeded` and draws the randomness of
sample ``i`` from :meth:`EpochSeeded.generator` — seeded by ``(seed, epoch, i)`` — never from
the global RNG, so augmentation does not depend on the number of DataLoader workers or the
order samples are fetched. :meth:`EpochSeeded.set_epoch` writes to a shared-memory tensor,
so DataLoader workers that persist across epochs see the new epoch too.
"""

from __future__ import annotations

import torch

from mmanet.data.transforms import sample_generator


class EpochSeeded:
    """Mixin: ``seed``, ``epoch`` / ``set_epoch`` (shared memory) and per-sample generators.

    Call :meth:`init_epoch` from ``__init__``.
    """

    seed: int
    _epoch: torch.Tensor

    def init_epoch(self, seed: int) -> None:
        """Start at epoch 0 with augmentation seed ``seed``."""
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating each training epoch)."""
        self._epoch.fill_(int(epoch))

    def generator(self, index: int) -> torch.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return sample_generator(self.seed, self.epoch, index)
