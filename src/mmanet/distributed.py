"""Sums across the processes of a distributed run (DDP), for the statistics methods gather over an epoch."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def all_reduce_sum(*tensors: Tensor) -> list[Tensor]:
    """Each tensor summed over every process (one collective for all of them); as they are when the run is
    not distributed. The tensors keep their dtype; the sum is taken in float64."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(tensors)
    packed = torch.cat([t.flatten().double() for t in tensors])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    out, offset = [], 0
    for t in tensors:
        out.append(packed[offset : offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out
