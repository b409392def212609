"""Learning-rate schedules of ``train``: linear warm-up, then cosine, multi-step or constant (per epoch).

The MMANet authors' classification schedule is SGD (Nesterov) at lr 1e-3 with a 5-epoch linear
warm-up and ×0.1 at epochs 16, 33 and 50 of 100 (``train.warmup_epochs: 5``, ``train.scheduler:
multistep``, ``train.milestones: [16, 33, 50]``). Their warm-up sets lr·e/5 in epoch e and skips
training in epoch 0, so the epochs that train see lr·(e+1)/N — what :func:`lr_factor` gives.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LearningRateFactor:
    """The multiplier of ``train.lr`` in epoch ``e`` (a picklable callable for ``LambdaLR``).

    * warm-up, ``e < warmup_epochs``: ``(e + 1) / warmup_epochs``;
    * then ``cosine``: ``(1 + cos(π·e / max_epochs)) / 2`` (as ``CosineAnnealingLR`` with ``T_max =
      max_epochs``, ``η_min = 0``); ``multistep``: ``gamma^k`` with k the milestones ≤ e; ``none``: 1.
    """

    scheduler: str
    max_epochs: int
    warmup_epochs: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        if self.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, self.max_epochs)))
        if self.scheduler == "multistep":
            return self.gamma ** bisect.bisect_right(self.milestones, epoch)
        return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, factor: LearningRateFactor):
    """``CosineAnnealingLR`` for the plain cosine schedule (the runs reported before the other schedules
    existed used it, and its recursive update differs from the closed form in the last bits), else
    ``LambdaLR`` over :class:`LearningRateFactor`."""
    if factor.scheduler == "cosine" and factor.warmup_epochs == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(factor.max_epochs)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
